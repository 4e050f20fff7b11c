"""The conditions a benchmark ran under: seed, configuration, machine and package versions."""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import asdict, is_dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

# Distributions whose versions change the figures (decoders, hashes, ORB, FAISS).
_PACKAGES = (
    "imgmatch",
    "numpy",
    "faiss-cpu",
    "opencv-python-headless",
    "pillow",
    "imagehash",
    "matplotlib",
)


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo, else what `platform` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask, not the machine's total)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def package_versions() -> dict[str, str]:
    versions: dict[str, str] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_commit() -> str:
    """The project's commit, with `+dirty` when tracked files differ from it ('' outside git)."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "imgmatch"],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return ""
    return f"{head}+dirty" if head and dirty else head


def conditions(seed: int, **configs: Any) -> dict[str, Any]:
    """Everything a reader needs to reproduce or discount a figure."""
    return {
        "seed": seed,
        "cpu_model": cpu_model(),
        "cores": usable_cores(),
        "platform": platform.platform(),
        "versions": package_versions(),
        "git_commit": git_commit(),
        "config": {
            name: asdict(value) if is_dataclass(value) and not isinstance(value, type) else value
            for name, value in configs.items()
        },
    }
