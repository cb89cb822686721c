"""The benchmarks measure what they say: each checks the rows it processed against what it set out to measure.

bench/gpu.py's training-clip section once read the drop ``1s-exact`` while the drops are ``gop1s-exact``:
it read no clip and printed ``0.0 clips/s``. Here its section runs on a small table of its own making.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from bench.measured import NotMeasured, expect_count

BENCH = Path(__file__).resolve().parent.parent / "bench"


def test_expect_count_fails_loudly() -> None:
    assert expect_count("clips", 3, 3) == 3
    with pytest.raises(NotMeasured, match="processed 0, meant to process 3"):
        expect_count("clips", 0, 3)
    with pytest.raises(NotMeasured, match="nothing to measure"):
        expect_count("clips", 0, 0)


def test_gpu_training_clips_read_the_drop_they_name(tmp_path: Path) -> None:
    from bench import gpu

    uri = gpu.make_table(tmp_path, {"exact": 2, "keyframe": 1}, seconds=1.0)
    assert gpu.CLIPS_DROP in {gpu.drop_of(g, m) for g in gpu.GOPS for m in gpu.MODES}
    rates = gpu.training_clips(uri, videos=2, workers=1, decoders=["cpu"])
    assert set(rates) == {"cpu/exact", "cpu/keyframe"}
    assert all(r > 0 for r in rates.values()), rates
    # the old drop name reads nothing: that is now an error, not "0.0 clips/s"
    with pytest.raises(NotMeasured, match="processed 0, meant to process 2"):
        gpu.loader_clips(uri, "1s-exact", "cpu", "exact", 1, expected=2)
    with pytest.raises(NotMeasured):
        gpu.rows_of(uri, "1s-exact", 2)


def _scripts() -> list[Path]:
    return sorted(p for p in BENCH.glob("*.py") if 'if __name__ == "__main__"' in p.read_text())


@pytest.mark.parametrize("script", _scripts(), ids=lambda p: p.name)
def test_every_benchmark_checks_what_it_measured(script: Path) -> None:
    """Every runnable benchmark (or the module it measures with) calls ``expect_count``."""
    def calls(path: Path) -> bool:
        tree = ast.parse(path.read_text())
        return any(isinstance(n, ast.Call) and getattr(n.func, "id", getattr(n.func, "attr", None)) == "expect_count"
                   for n in ast.walk(tree))

    helpers = {"loader.py": ["loader_runs.py"]}.get(script.name, [])
    assert calls(script) or any(calls(BENCH / h) for h in helpers), f"{script.name} never calls expect_count"
