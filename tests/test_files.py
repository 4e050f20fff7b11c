"""Atomic writes: one helper for the whole project, and a write that fails leaves the old file."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

import imgmatch
from imgmatch.files import write_atomically

ROOT = Path(imgmatch.__file__).parent.parent
SOURCES = sorted([*(ROOT / "imgmatch").rglob("*.py"), *(ROOT / "service").rglob("*.py")])
# Creating the catalog database links a finished SQLite file into place (first creator wins);
# that is not writing bytes to a path, and the rename is only its fallback.
RENAMES_ALLOWED = {Path("imgmatch/files.py"), Path("imgmatch/catalog/schema.py")}


def _calls(path: Path) -> set[str]:
    """Dotted names of every call in a module, e.g. "os.replace", "tempfile.mkstemp"."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
        ):
            names.add(f"{node.func.value.id}.{node.func.attr}")
    return names


def test_write_replaces_the_file_whole_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    target.write_text("old")
    write_atomically(target, "new ✓")
    write_atomically(tmp_path / "thumb.jpg", b"\xff\xd8")
    assert target.read_text(encoding="utf-8") == "new ✓"
    assert (tmp_path / "thumb.jpg").read_bytes() == b"\xff\xd8"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "thumb.jpg"]


def test_a_failed_write_keeps_the_old_file_and_cleans_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "index.faiss"
    target.write_bytes(b"old")

    def disk_full(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(OSError, match="No space"):
        write_atomically(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["index.faiss"]


def test_the_written_file_gets_the_users_umask_not_0600(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        write_atomically(tmp_path / "out.csv", "a,b\n")
    finally:
        os.umask(previous)
    assert (tmp_path / "out.csv").stat().st_mode & 0o777 == 0o644


def test_only_the_helper_renames_temporary_files_into_place() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(calls)
        for path in SOURCES
        if path.relative_to(ROOT) not in RENAMES_ALLOWED
        and (calls := _calls(path) & {"os.replace", "os.rename", "tempfile.mkstemp"})
    }
    assert offenders == {}
