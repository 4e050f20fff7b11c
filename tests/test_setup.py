"""What a fresh clone's set-up does: `make run` and `make test`, the build, what git ignores."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parent.parent


def make_commands(target: str, venv: Path) -> list[str]:
    """The commands `make TARGET` would run on a machine without a virtualenv yet."""
    if shutil.which("make") is None:
        pytest.skip("no make on this machine")
    result = subprocess.run(
        ["make", "--dry-run", "--always-make", target, f"VENV={venv}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.splitlines()


def pip_installs(commands: list[str]) -> list[str]:
    return [c for c in commands if "pip install" in c and "--upgrade pip" not in c]


def test_make_run_installs_the_runtime_dependencies_only(tmp_path: Path) -> None:
    installs = pip_installs(make_commands("run", tmp_path / "venv"))
    assert installs, "make run installs nothing"
    assert not any("[dev]" in command for command in installs), installs


def test_make_test_adds_the_developer_tools(tmp_path: Path) -> None:
    installs = pip_installs(make_commands("test", tmp_path / "venv"))
    assert any("'.[dev]'" in command for command in installs), installs


def test_the_build_backend_reads_the_licence_field() -> None:
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in Python 3.11+")
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert isinstance(project["project"]["license"], str)
    (setuptools,) = [
        Requirement(r)
        for r in project["build-system"]["requires"]
        if Requirement(r).name == "setuptools"
    ]
    # A licence given as an SPDX expression string needs setuptools 77 or later.
    lowest = min(Version(spec.version) for spec in setuptools.specifier if ">" in spec.operator)
    assert lowest >= Version("77")


def test_the_benchmark_report_folder_is_ignored_by_git() -> None:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    ignored = subprocess.run(
        ["git", "check-ignore", "--quiet", "--no-index", "bench-report/report.json"], cwd=REPO
    )
    assert ignored.returncode == 0
