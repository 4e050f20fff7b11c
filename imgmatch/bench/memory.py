"""`python -m imgmatch.bench.memory`: the memory one upload costs, decoded alone and in the service.

1. Decode: each worst-case upload (`imgmatch.bench.memory_uploads`: every allowed format, in
   its widest mode, at the pixel limit) is decoded once in a fresh process; the peak RSS above
   the process's RSS before the decode, and the peak of Python-traced allocations (numpy
   arrays, bytes), are printed.
2. Service: `imgmatch serve` is started on 127.0.0.1 over a small indexed catalog; for each
   format, `--uploads` simultaneous checks of that upload are sent, and the service process's
   RSS is printed: idle (after a warm-up check), the peak during the burst, and what it retains
   once the burst is over. Target: peak under 2 GiB and retained within 20 % of idle.

`--code DIR` runs the decodes and the service from another checkout of imgmatch (a "before"
figure, e.g. the main branch); the uploads are built by this one either way.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from imgmatch.bench.conditions import cpu_model, package_versions, usable_cores
from imgmatch.bench.memory_uploads import UPLOADS, build_upload, upload_size
from imgmatch.config import ImageLimits

PROJECT_DIR = Path(__file__).resolve().parents[2]
TARGET_PEAK_MIB = 2048.0
TARGET_RETAINED_OVER_IDLE = 1.2
# Bundled references indexed into the service's catalog: enough to search, quick to index.
CATALOG_REFERENCES = ("D000_0.jpg", "D004_0.jpg", "D010_0.jpg", "D020_0.jpg")
READY_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 900.0
MIB = 1024 * 1024

# Runs in a fresh interpreter: decode one file, print what it cost. Peak RSS is Linux's VmHWM,
# reset just before the decode through /proc/self/clear_refs.
_DECODE_CHILD = """
import json, sys, time, tracemalloc
from pathlib import Path
from imgmatch.images import decode_image

def kib(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)

data = Path(sys.argv[1]).read_bytes()
Path("/proc/self/clear_refs").write_text("5")
before = kib("VmRSS")
tracemalloc.start()
start = time.perf_counter()
try:
    decoded = decode_image(data)
    outcome = "%dx%d" % (decoded.pixels.shape[1], decoded.pixels.shape[0])
except Exception as exc:
    outcome = type(exc).__name__
elapsed_ms = (time.perf_counter() - start) * 1000
traced_peak = tracemalloc.get_traced_memory()[1]
print(json.dumps({"outcome": outcome, "rss_peak_kib": kib("VmHWM") - before,
                  "traced_peak_bytes": traced_peak, "ms": elapsed_ms}))
"""


@dataclass(frozen=True)
class DecodeFigure:
    name: str
    file_bytes: int
    outcome: str
    rss_peak_mib: float
    traced_peak_mib: float
    ms: float


@dataclass(frozen=True)
class BurstFigure:
    name: str
    round: int
    outcomes: dict[str, int]
    before_mib: float
    peak_mib: float
    retained_mib: float
    seconds: float


def _child_env(code: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    # Children also run in `code` (cwd): `python -c` puts the working directory first on
    # sys.path, ahead of PYTHONPATH.
    return {**os.environ, "PYTHONPATH": str(code), **(extra or {})}


def measure_decode(name: str, path: Path, code: Path) -> DecodeFigure:
    """Decode `path` once in a fresh interpreter running `code`'s imgmatch."""
    done = subprocess.run(
        [sys.executable, "-c", _DECODE_CHILD, str(path)],
        env=_child_env(code),
        cwd=code,
        capture_output=True,
        text=True,
        check=True,
    )
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    return DecodeFigure(
        name=name,
        file_bytes=path.stat().st_size,
        outcome=figures["outcome"],
        rss_peak_mib=figures["rss_peak_kib"] / 1024,
        traced_peak_mib=figures["traced_peak_bytes"] / MIB,
        ms=figures["ms"],
    )


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _imgmatch(*args: str) -> list[str]:
    return [sys.executable, "-c", "from imgmatch.cli import app; app()", *args]


class Service:
    """`imgmatch serve` on a free loopback port, run from `code`, until `stop`."""

    def __init__(self, code: Path, catalog: Path, env: dict[str, str]) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = _imgmatch("serve", "--catalog", str(catalog))
        command += ["--host", "127.0.0.1", "--port", str(self.port)]
        child_env = _child_env(code, {"IMGMATCH_LOG_LEVEL": "WARNING", **env})
        self.process = subprocess.Popen(
            command, env=child_env, cwd=code, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not self._ready():
            if self.process.poll() is not None:
                stderr = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"imgmatch serve exited: {stderr[-2000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("imgmatch serve was not ready in time")
            time.sleep(0.2)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def rss_mib(self) -> float:
        return _status_kib(self.process.pid, "VmRSS") / 1024

    def reset_peak(self) -> None:
        Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")

    def peak_mib(self) -> float:
        return _status_kib(self.process.pid, "VmHWM") / 1024

    def check(self, data: bytes, filename: str) -> str:
        """POST one upload to /v1/checks: "ok", the result's error type, or the HTTP status."""
        boundary = uuid.uuid4().hex
        body = b"".join(
            [
                f'--{boundary}\r\nContent-Disposition: form-data; name="image"; '
                f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode(),
                data,
                f"\r\n--{boundary}--\r\n".encode(),
            ]
        )
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        request = urllib.request.Request(f"{self.url}/v1/checks", body, headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
                result = json.loads(response.read())["results"][0]
        except urllib.error.HTTPError as error:
            return f"HTTP {error.code}"
        return "ok" if result["status"] == "ok" else str(result.get("error_type", "error"))

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def burst(
    service: Service, name: str, data: bytes, uploads: int, round_: int, settle_s: float
) -> BurstFigure:
    """Send `uploads` simultaneous checks of `data`; RSS before, at peak and `settle_s` after."""
    before = service.rss_mib()
    service.reset_peak()
    start = time.perf_counter()
    with ThreadPoolExecutor(uploads) as pool:
        outcomes = Counter(pool.map(lambda i: service.check(data, f"{name}-{i}"), range(uploads)))
    seconds = time.perf_counter() - start
    peak = service.peak_mib()
    time.sleep(settle_s)
    return BurstFigure(name, round_, dict(outcomes), before, peak, service.rss_mib(), seconds)


def build_catalog(code: Path, directory: Path) -> None:
    references = [str(code / "reference_images" / name) for name in CATALOG_REFERENCES]
    subprocess.run(
        _imgmatch("index", *references, "--catalog", str(directory), "--workers", "1"),
        env=_child_env(code),
        cwd=code,
        capture_output=True,
        check=True,
    )


def _parse_env(pairs: Sequence[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if not key or not _:
            raise argparse.ArgumentTypeError(f"--env wants KEY=VALUE, not {pair!r}")
        env[key] = value
    return env


def _commit(code: Path) -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=code, capture_output=True, text=True
    )
    return done.stdout.strip() or "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m imgmatch.bench.memory", description=__doc__)
    parser.add_argument("--formats", default=",".join(UPLOADS), help="comma-separated uploads")
    parser.add_argument(
        "--pixels", type=int, default=ImageLimits().max_image_pixels, help="pixels per upload"
    )
    parser.add_argument("--uploads", type=int, default=16, help="simultaneous checks per burst")
    parser.add_argument("--rounds", type=int, default=1, help="bursts per format")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds before 'retained'")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--code", type=Path, default=PROJECT_DIR, help="imgmatch checkout run")
    parser.add_argument(
        "--baseline", type=Path, help="another checkout whose decodes are shown beside (before)"
    )
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the service")
    parser.add_argument("--no-decode", action="store_true", help="skip the one-decode figures")
    parser.add_argument("--no-service", action="store_true", help="skip the service bursts")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.formats.split(",") if n.strip()]
    unknown = [n for n in names if n not in UPLOADS]
    if unknown:
        parser.error(f"unknown formats {unknown}; known: {', '.join(UPLOADS)}")
    if args.uploads < 1 or args.rounds < 1:
        parser.error("--uploads and --rounds must be at least 1")
    code = args.code.resolve()
    env = _parse_env(args.env)
    width, height = upload_size(args.pixels)
    print("imgmatch memory benchmark")
    print(f"  {datetime.date.today()}; {cpu_model()}; {usable_cores()} cores usable")
    print(f"  code under test: {code} (commit {_commit(code)}); seed {args.seed}")
    print("  versions: " + ", ".join(f"{k} {v}" for k, v in package_versions().items()))
    print(f"  uploads: {width}x{height} ({width * height:,} pixels), flat shapes")
    with tempfile.TemporaryDirectory(prefix="imgmatch-memory-") as workspace:
        root = Path(workspace)
        files = {}
        for name in names:
            files[name] = root / f"upload-{name}"
            files[name].write_bytes(build_upload(name, args.pixels, args.seed))
        if not args.no_decode:
            baseline = args.baseline.resolve() if args.baseline else None
            print_decodes(files, code, baseline)
        if not args.no_service:
            build_catalog(code, root / "catalog")
            print_bursts(args, code, env, root, files)
    return 0


def print_decodes(files: dict[str, Path], code: Path, baseline: Path | None) -> None:
    print("\none decode per upload, each in a fresh process (peaks in MiB)")
    if baseline is not None:
        print(f"  before: {baseline} (commit {_commit(baseline)})")
    print(
        f"  {'upload':18} {'file MiB':>8} {'decoded to':>12} {'RSS peak':>8} "
        f"{'traced peak':>11} {'ms':>6}"
        + ("  before: decoded to, RSS, traced, ms" * bool(baseline))
    )
    for name, path in files.items():
        d = measure_decode(name, path, code)
        line = (
            f"  {d.name:18} {d.file_bytes / MIB:8.1f} {d.outcome:>12} {d.rss_peak_mib:8.0f} "
            f"{d.traced_peak_mib:11.1f} {d.ms:6.0f}"
        )
        if baseline is not None:
            b = measure_decode(name, path, baseline)
            line += f"  {b.outcome:>12} {b.rss_peak_mib:5.0f} {b.traced_peak_mib:6.1f} {b.ms:6.0f}"
        print(line, flush=True)


def print_bursts(
    args: argparse.Namespace, code: Path, env: dict[str, str], root: Path, files: dict[str, Path]
) -> None:
    settings = ", ".join(f"{k}={v}" for k, v in env.items()) or "defaults"
    service = Service(code, root / "catalog", env)
    figures = []
    try:
        warm_up = (code / "reference_images" / CATALOG_REFERENCES[0]).read_bytes()
        service.check(warm_up, "warm-up.jpg")
        time.sleep(args.settle)
        idle = service.rss_mib()
        print(f"\nservice ({settings}): idle {idle:.0f} MiB after a warm-up check")
        print(f"  {args.uploads} simultaneous checks of one upload; RSS of the service in MiB")
        print(
            f"  {'upload':18} {'round':>5} {'before':>7} {'peak':>7} {'retained':>8} "
            f"{'ret/idle':>8} {'s':>6}  outcomes"
        )
        for round_ in range(1, args.rounds + 1):
            for name, path in files.items():
                b = burst(service, name, path.read_bytes(), args.uploads, round_, args.settle)
                figures.append(b)
                outcomes = ", ".join(f"{k} {v}" for k, v in sorted(b.outcomes.items()))
                print(
                    f"  {b.name:18} {b.round:5} {b.before_mib:7.0f} {b.peak_mib:7.0f} "
                    f"{b.retained_mib:8.0f} {b.retained_mib / idle:8.2f} {b.seconds:6.1f}  "
                    f"{outcomes}",
                    flush=True,
                )
    finally:
        service.stop()
    peak = max(f.peak_mib for f in figures)
    retained = figures[-1].retained_mib
    peak_met = "met" if peak < TARGET_PEAK_MIB else "MISSED"
    retained_met = "met" if retained <= TARGET_RETAINED_OVER_IDLE * idle else "MISSED"
    print(
        f"  highest peak {peak:.0f} MiB (target < {TARGET_PEAK_MIB:.0f}: {peak_met}); "
        f"retained at the end {retained:.0f} MiB = {retained / idle:.2f}x idle "
        f"(target <= {TARGET_RETAINED_OVER_IDLE}: {retained_met})"
    )


if __name__ == "__main__":
    raise SystemExit(main())
