"""Storage stays behind one door: only the catalog package imports faiss and sqlite3."""

from __future__ import annotations

import ast
from pathlib import Path

import imgmatch

ROOT = Path(imgmatch.__file__).parent.parent
STORAGE_MODULES = {"faiss", "sqlite3"}
CATALOG = Path("imgmatch/catalog")


def _imported_roots(path: Path) -> set[str]:
    """The top-level modules a file imports, wherever in the file the import is."""
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            roots.add(node.module.split(".")[0])
    return roots


def test_only_the_catalog_package_imports_faiss_and_sqlite3() -> None:
    sources = [*(ROOT / "imgmatch").rglob("*.py"), *(ROOT / "service").rglob("*.py")]
    outside = {
        str(path.relative_to(ROOT)): sorted(found)
        for path in sources
        if CATALOG not in path.relative_to(ROOT).parents
        and (found := _imported_roots(path) & STORAGE_MODULES)
    }
    assert outside == {}


def test_the_scan_sees_the_catalogs_own_imports() -> None:
    """Guards the test above against passing because it found no files or no imports."""
    found = set().union(*(_imported_roots(p) for p in (ROOT / CATALOG).glob("*.py")))
    assert found >= STORAGE_MODULES
