"""What the next engineer reads: module references in docstrings resolve, MMFS uses no private Dagster module,
and the CLI's modules import one way (the error handler never imports the app)."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("mmfs_assets", "mmfs_loader")
REF = re.compile(r":(?:mod|func|class|meth|data|attr):`~?((?:mmfs_assets|mmfs_loader)[\w.]*|\.+[\w.]*)`")


def _sources():
    for pkg in PACKAGES:
        yield from sorted((ROOT / pkg).rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolves(name: str) -> bool:
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for a in parts[i:]:
                obj = getattr(obj, a)
        except AttributeError:
            return False
        return True
    return False


def test_docstring_references_name_modules_that_exist():
    bad = []
    for path in _sources():
        mod = _module_name(path)
        package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
        for m in REF.finditer(path.read_text()):
            ref = m.group(1)
            if ref.startswith("."):
                dots = len(ref) - len(ref.lstrip("."))
                base = package.split(".")[: len(package.split(".")) - (dots - 1)]
                ref = ".".join([*base, *[p for p in ref.lstrip(".").split(".") if p]])
            if not _resolves(ref):
                bad.append(f"{path.relative_to(ROOT)}: {m.group(0)}")
    assert bad == []


def test_no_private_dagster_module_in_mmfs():
    """No ``dagster._...`` import or reference, and no exception raised into another thread (how MMFS once
    turned a Ctrl-C that Dagster swallowed into an interrupt)."""
    hits = [f"{p.relative_to(ROOT)}:{i}" for p in (ROOT / "mmfs_assets").rglob("*.py")
            for i, line in enumerate(p.read_text().splitlines(), 1)
            if "dagster._" in line or "PyThreadState_SetAsyncExc" in line]
    assert hits == []


def test_cli_modules_import_one_way():
    """``cli/errors.py`` (the error handler every command goes through) imports no other command module."""
    tree = ast.parse((ROOT / "mmfs_assets" / "cli" / "errors.py").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not {m for m in imported if m.startswith("mmfs_assets.cli") and m != "mmfs_assets.cli.consoles"}
