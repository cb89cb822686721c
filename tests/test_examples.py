"""The examples in ``examples/``: the README shows each one verbatim, its commands fit their usage lines,
and ``examples/read_features.py`` runs as written on a small real table (``test_torchrun.py`` runs the
training example under torchrun)."""

from __future__ import annotations

import ast
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import lance
import pytest

from mmfs_assets.features import discover
from tests.features_util import build_table, fill, tiny

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.S | re.M)
NAMED = re.compile(r"(?<![\w/])examples/([\w-]+\.py)")


def blocks(lang: str) -> list[tuple[str, str]]:
    """(the README text between the previous block and this one, block text) for each ``lang`` block."""
    out, end = [], 0
    for m in FENCE.finditer(README):
        if m.group(1) == lang:
            out.append((README[end : m.start()], m.group(2)))
        end = m.end()
    return out


def shown_examples() -> dict[str, str]:
    """Python blocks introduced by text naming an example file (the last one named): file name -> block."""
    shown: dict[str, str] = {}
    for before, text in blocks("python"):
        named = NAMED.findall(before)
        if named:
            assert named[-1] not in shown, f"examples/{named[-1]} is shown twice in README.md"
            shown[named[-1]] = text
    return shown


def test_readme_shows_every_example_verbatim():
    shown = shown_examples()
    assert EXAMPLES and sorted(shown) == [p.name for p in EXAMPLES]
    for path in EXAMPLES:
        assert shown[path.name] == path.read_text(), f"README.md's block for examples/{path.name} differs from the file"


def usage(path: Path) -> tuple[int, int]:
    """(required, total) arguments of the usage line in the example's docstring (``[X]`` is optional)."""
    line = next(ln for ln in path.read_text().splitlines() if f"examples/{path.name}" in ln)
    args = shlex.split(line.split(f"examples/{path.name}", 1)[1].split("(")[0])
    return sum(not a.startswith("[") for a in args), len(args)


def test_readme_commands_fit_the_examples_usage():
    commands = [ln.split("#")[0] for _, text in blocks("bash") for ln in text.splitlines() if NAMED.search(ln)]
    assert commands
    for cmd in commands:
        name = NAMED.search(cmd).group(1)
        path = ROOT / "examples" / name
        assert path.is_file(), cmd
        given = len(shlex.split(cmd.split(f"examples/{name}", 1)[1]))
        required, total = usage(path)
        assert required <= given <= total, f"{cmd!r}: examples/{name} takes {required}..{total} arguments"
        for arg in shlex.split(cmd):  # outputs go under data/ (ignored by git), never into the repository root
            assert not arg.endswith((".pt", ".pth", ".ckpt")) or arg.startswith("data/"), cmd


@pytest.fixture(scope="module")
def table(tmp_path_factory, fixture_dir, model_dir) -> str:
    """The sample videos ingested and described, clip_embedding and caption filled by tiny models, tagged."""
    uri = str(tmp_path_factory.mktemp("examples") / "videos.lance")
    build_table(uri, {"A": fixture_dir / "good"})
    features = {f.name: f for f in discover()}
    for name in ("clip_embedding", "caption"):
        fill(uri, "A", features[name], tiny(features[name], model_dir))
    ds = lance.dataset(uri)
    ds.tags.create("snap-1", ds.version)
    return uri


def test_read_features_runs_as_written(table):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "examples/read_features.py", table, "snap-1"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-5000:]
    lines = proc.stdout.splitlines()
    # The good samples with height >= 96: all but the two 64-pixel ones; batches of 4.
    assert re.fullmatch(r"version \d+: 8 rows selected \(0 quarantined left out\), 2 batches", lines[0]), lines
    assert lines[1] == ("first batch: {'clip_embedding': (4, 512), 'height': (4,), 'frames': (4, 8, 3, 112, 112), "
                        "'frame_times': (4, 8), 'clip_ok': (4,)}")
    assert lines[2:4] == ["state: {'epoch': 0, 'position': 4}", "resumed: 4 more samples"]
    heights = ast.literal_eval(lines[4].removeprefix("mixture, one epoch of heights: "))
    assert len(heights) == 8 and sum(h >= 240 for h in heights) == 4  # 0.5 of 8 from the one 240-pixel video
    assert len(lines) == 5
