"""The memory benchmark keeps working: a tiny run decodes each upload and bursts the service."""

from __future__ import annotations

from pathlib import Path

import pytest

from imgmatch.bench import memory

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path("/proc/self/clear_refs").exists(),
        reason="the memory benchmark reads and resets peak RSS through Linux's /proc",
    ),
]


def test_a_tiny_memory_run_prints_every_figure(capsys: pytest.CaptureFixture[str]) -> None:
    formats = ("png-rgba", "tiff-float", "jpeg")
    argv = ["--formats", ",".join(formats), "--pixels", "120000", "--uploads", "2"]
    assert memory.main([*argv, "--settle", "0.2"]) == 0
    out = capsys.readouterr().out
    decode_rows = out.split("one decode per upload")[1].split("service (")[0]
    burst_rows = out.split("service (")[1]
    for name in formats:
        # One decode: the working size (not reduced at this size), then its memory figures.
        assert f"{name} " in decode_rows and "400x300" in decode_rows
        burst = next(line for line in burst_rows.splitlines() if line.strip().startswith(name))
        assert burst.rstrip().endswith("ok 2")
    assert "highest peak" in out and "retained at the end" in out
