"""A new user's first hour (issue 25): `mmfs --version`, the demo's hints and summary lines, the README's set-up
instructions and links, and `make`'s venv step saying what it does."""

from __future__ import annotations

import re
import shutil
import subprocess
from importlib.metadata import version
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mmfs_assets.cli.app import app
from mmfs_assets.cli.demo import asset_line, try_lines

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.S | re.M)


def test_version_prints_the_package_version(monkeypatch) -> None:
    monkeypatch.delenv("DAGSTER_HOME", raising=False)  # no instance, table or settings needed
    r = CliRunner().invoke(app, ["--version"])
    assert r.exit_code == 0, r.output
    assert r.stdout == f"mmfs {version('mmfs')}\n"


def test_demo_hints_one_command_per_line() -> None:
    lines = try_lines("abc123", "demo-001")
    assert lines[0] == "try:"
    commands = [ln.strip() for ln in lines[1:]]
    assert commands == ["mmfs search --like abc123 -k 3", "mmfs search --caption WORD",
                        "mmfs snapshot show demo-001-snapshot", "mmfs lineage"]
    assert not any("|" in ln for ln in lines)  # nothing that reads as a shell pipe


def test_demo_drop_stats_line_counts_rows_not_errors() -> None:
    """20 rows of which 9 failed to decode: 9 rows with errors, each in every column group; the line says
    so instead of ``errors=54`` (the per-group counts summed)."""
    md = {"lance_version": 12, "rows": 20, "decodable": 11, "rows_with_errors": 9,
          "errors_per_group": "metadata 9 / clip_embedding 9 / depth 9 / caption 9 / quality 9 / dup_group 9"}
    line = asset_line("drop_stats", md)
    assert "rows=20, rows_with_errors=9, errors_per_group=metadata 9 / clip_embedding 9" in line
    assert "errors=54" not in line and not re.search(r"(?<!_)errors=", line)
    # a fill's own `errors` (rows with an error in its group) is still shown
    assert "errors=9" in asset_line("depth", {"rows": 20, "errors": 9})


def _bash_blocks() -> list[tuple[int, str]]:
    return [(m.start(), m.group(2)) for m in FENCE.finditer(README) if m.group(1) == "bash"]


def test_readme_says_how_to_reach_the_venv_before_bare_commands() -> None:
    first = next(pos for pos, text in _bash_blocks()
                 if any(re.match(r"(mmfs|torchrun) ", ln.strip()) for ln in text.splitlines()))
    before = README[:first + 400]
    assert "source .venv/bin/activate" in before and ".venv/bin/mmfs" in before
    assert "export DAGSTER_HOME=$PWD/dagster_home" in before


def test_readme_links_stay_inside_the_repository() -> None:
    assert "../shared" not in README and "DESIGN.md" not in README
    arch = re.search(r"Architecture: \[[^\]]+\]\(([^)]+)\)", README)
    assert arch and arch.group(1) == "docs/architecture.md"
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README):
        if "://" in target:
            continue
        assert not target.startswith(("../", "/")), target
        assert (ROOT / target).exists(), target
    doc = (ROOT / "docs" / "architecture.md").read_text()
    for target in re.findall(r"\]\(([^)#]+)\)", doc):
        assert (ROOT / "docs" / target).resolve().is_relative_to(ROOT) and (ROOT / "docs" / target).exists(), target
    # every package directory the map names exists
    for path in set(re.findall(r"`((?:mmfs_assets|mmfs_loader)/[\w/]+\.py)`", doc)):
        assert (ROOT / path).exists(), path


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_make_venv_says_what_it_does(tmp_path) -> None:
    """`make -n` (prints the recipe, runs nothing): a line before each step, the big install not silenced."""
    out = subprocess.run(["make", "-n", "-C", str(ROOT), "venv", f"VENV={tmp_path / 'venv'}"], capture_output=True,
                         text=True, check=True).stdout
    lines = out.splitlines()
    install = next(i for i, ln in enumerate(lines) if "pip install" in ln and ".[pipeline,deploy,test,ray]" in ln)
    assert " -q" not in lines[install]
    assert any(ln.startswith("echo ") and "minutes" in ln for ln in lines[:install])
    assert sum(ln.startswith("echo \"== [") for ln in lines) == 3
