"""Per-partition quality checks and near-duplicate groups."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import lance
import numpy as np
import pyarrow as pa
import pytest

from mmfs_assets import samples
from mmfs_assets.features import discover
from mmfs_assets.quality.dup_groups import fill_dup_groups
from mmfs_assets.quality.partition_checks import group_quality
from mmfs_assets.table.replace import ROWID, replace_columns
from mmfs_loader import FeatureDataset
from mmfs_loader.contract import schema as S
from mmfs_loader.contract.sql import equals
from tests.conftest import make_drop
from tests.features_util import fill, tiny, two_drop_table

CLIP = {f.name: f for f in discover()}["clip_embedding"]
PAIR = ("same_h264.mp4", "same_hevc.mp4")  # one clip, encoded twice: near-duplicates


@pytest.fixture(scope="module")
def base(tmp_path_factory, fixture_dir, model_dir) -> Path:
    """Drop A: the good fixtures; drop B: one clip encoded with H.264 and with HEVC, plus the broken files."""
    uri = two_drop_table(tmp_path_factory.mktemp("quality"), sorted((fixture_dir / "good").iterdir()),
                         [samples.Spec(PAIR[0], 128, 96, 24, 2.0), samples.Spec(PAIR[1], 128, 96, 24, 2.0, codec="libx265")],
                         sorted((fixture_dir / "bad").iterdir()))
    model = tiny(CLIP, model_dir, MMFS_CLIP_FRAMES="2")
    fill(str(uri), "A", CLIP, model)
    fill(str(uri), "B", CLIP, model)
    return uri


@pytest.fixture
def table(base, tmp_path) -> str:
    dst = tmp_path / "videos.lance"
    shutil.copytree(base, dst)
    return str(dst)


def _vectors(ds) -> dict[str, np.ndarray]:
    t = ds.to_table(columns=[S.FILE_NAME, "clip_embedding"], filter="clip_embedding IS NOT NULL")
    return {f: np.asarray(v, np.float64) for f, v in zip(t[S.FILE_NAME].to_pylist(), t["clip_embedding"].to_pylist())}


def _set_vectors(table: str) -> None:
    """Spread the (random-init, near-identical) test embeddings out: random unit vectors, except the
    second encoding of PAIR, which gets its twin's vector plus a little noise (a real re-encode's distance)."""
    ds = lance.dataset(table)
    rng = np.random.default_rng(0)
    for drop in ("A", "B"):
        t = ds.to_table(columns=[S.FILE_NAME, "clip_embedding"], filter=f"{equals(S.DROP_ID, drop)} AND clip_embedding IS NOT NULL",
                        with_row_id=True)
        v = rng.normal(size=(t.num_rows, 512)).astype(np.float32)
        names = t[S.FILE_NAME].to_pylist()
        if PAIR[1] in names:
            v[names.index(PAIR[1])] = v[names.index(PAIR[0])] + rng.normal(0, 0.02, 512).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        replace_columns(table, pa.table({ROWID: t[ROWID], "clip_embedding": pa.FixedSizeListArray.from_arrays(pa.array(v.ravel()), 512)}),
                        locate_filter=equals(S.DROP_ID, drop), properties={})


def test_a_reencoded_clip_shares_a_dup_group_and_the_loader_can_keep_one(table):
    _set_vectors(table)
    ds = lance.dataset(table)
    vec = _vectors(ds)
    dist = {(a, b): 1 - float(vec[a] @ vec[b]) for a in vec for b in vec if a < b}
    threshold = 0.03
    assert {k for k, d in dist.items() if d <= threshold} == {PAIR}
    props = {"mmfs.asset": "dup_group"}
    rep_a = fill_dup_groups(table, "A", column="clip_embedding", distance=threshold, properties=props)
    rep_b = fill_dup_groups(table, "B", column="clip_embedding", distance=threshold, properties=props)
    assert (rep_a.grouped, rep_a.groups, rep_b.grouped, rep_b.groups) == (0, 0, 2, 1)
    ds = lance.dataset(table)
    t = ds.to_table(columns=[S.ID, S.FILE_NAME, "dup_group", "dup_group_error"])
    by_file = {r[S.FILE_NAME]: r for r in t.to_pylist()}
    g0, g1 = by_file[PAIR[0]]["dup_group"], by_file[PAIR[1]]["dup_group"]
    assert g0 == g1 == min(by_file[PAIR[0]][S.ID], by_file[PAIR[1]][S.ID])
    singles = [r for r in by_file.values() if r["dup_group"] and r[S.FILE_NAME] not in PAIR]
    assert singles and all(r["dup_group"] == r[S.ID] for r in singles)
    errored = [r for r in by_file.values() if r["dup_group"] is None]
    assert errored and all("no clip_embedding value" in r["dup_group_error"] for r in errored)  # the broken files
    # the loader keeps one video per group
    kept = FeatureDataset(table, columns=["dup_group"], filter="dup_group = id")
    names = {r[S.FILE_NAME] for r in ds.to_table(columns=[S.FILE_NAME], filter="dup_group = id").to_pylist()}
    assert kept.num_rows == len(singles) + 1 and len(names & set(PAIR)) == 1
    # recomputing B keeps the group it already had
    assert fill_dup_groups(table, "B", column="clip_embedding", distance=threshold, properties=props).grouped == 2
    again = lance.dataset(table).to_table(columns=["dup_group"], filter=equals(S.FILE_NAME, PAIR[1]))
    assert again["dup_group"][0].as_py() == g0


def test_quality_flags_error_rates_and_bad_norms(table):
    ds = lance.dataset(table)
    meta = S.METADATA
    a = group_quality(ds, meta, "A", max_error_rate=0.25, norm_tolerance=0.01)
    b = group_quality(ds, meta, "B", max_error_rate=0.25, norm_tolerance=0.01)
    assert a.passed and a.metadata["errors"] == 0
    assert not b.passed and b.metadata["error_rate"] > 0.25 and "have errors" in b.description
    g = CLIP.group
    ok = group_quality(ds, g, "A", max_error_rate=0.25, norm_tolerance=0.01, normalized=True)
    assert ok.passed and abs(ok.metadata["clip_embedding_norm_mean"] - 1) < 0.01
    # one vector scaled to norm 2, one NaN: both flagged
    t = ds.to_table(columns=["clip_embedding", g.producer_column, g.error_column], filter=equals(S.DROP_ID, "A"),
                    with_row_id=True).slice(0, 2)
    v = np.stack(t["clip_embedding"].to_numpy(zero_copy_only=False)).astype(np.float32)
    v[0] *= 2
    v[1, 0] = np.nan
    replace_columns(table, pa.table({ROWID: t[ROWID], "clip_embedding": pa.FixedSizeListArray.from_arrays(pa.array(v.ravel()), v.shape[1])}),
                    locate_filter=equals(S.DROP_ID, "A"), properties={})
    bad = group_quality(lance.dataset(table), g, "A", max_error_rate=0.25, norm_tolerance=0.01, normalized=True)
    assert not bad.passed and bad.metadata["clip_embedding_bad_norms"] == 2 and "norms" in bad.description


def test_checks_are_recorded_per_partition(env, fixture_dir, tmp_path, monkeypatch):
    """Through Dagster: the checks of a drop's run are stored under that drop's partition."""
    from mmfs_assets.cli.run import materialize_drop

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dh"))
    (tmp_path / "dh").mkdir()
    make_drop(env, "q-1", sorted((fixture_dir / "good").iterdir())[:2])
    make_drop(env, "q-2", sorted((fixture_dir / "bad").iterdir()))
    from mmfs_assets.instance.home import open_instance

    with open_instance() as instance:
        for key in ("q-1", "q-2"):
            r = materialize_drop(key, ["videos", "video_metadata"], instance, env)
            assert r.success
        recs = instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(dg.AssetKey("video_metadata"), "metadata_decode_failures"), limit=10)
        by_part = {rec.partition: rec.status.value for rec in recs}
    assert by_part == {"q-1": "SUCCEEDED", "q-2": "FAILED"}


def test_drop_stats_plots_and_tables(table, env, tmp_path, monkeypatch):
    from mmfs_assets.definitions import defs
    from mmfs_assets.quality.drop_stats import compute, errors_per_group, plot_png
    from mmfs_assets.resources import build_resources

    st = compute(lance.dataset(table), "B")
    s = st.summary()
    assert s["rows"] == st.rows == 11 and s["errors"]["metadata"] == 9 and s["decoded"] == 2
    assert s["codecs"]["hevc"] == 1 and sum(s["codecs"].values()) == len(st.width)  # partly readable files count
    assert s["error_reasons"]["empty file (0 bytes)"] == 1
    assert plot_png(st).startswith(b"\x89PNG")
    # through Dagster: the partition's materialization carries the plot and the tables
    monkeypatch.setenv("MMFS_TABLE_URI", table)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("drops", ["B"])
        stats = next(a for a in defs.assets if a.key.to_user_string() == "drop_stats")
        r = dg.materialize([stats], partition_key="B", instance=instance, resources=build_resources())
        assert r.success
        md = r.asset_materializations_for_node("drop_stats")[0].metadata
    assert md["plots"].value.startswith("![statistics of drop B](data:image/png;base64,")
    assert "| hevc | 1 |" in md["summary"].value and md["rows"].value == st.rows
    # rows with an error, never the per-group counts summed (a video that fails to decode errs in every group,
    # so their sum read "rows=20, errors=54" in the demo)
    assert "errors" not in md and st.rows_with_errors == s["rows_with_errors"] == 9
    assert md["rows_with_errors"].value == 9 <= md["rows"].value
    assert md["errors_per_group"].value == errors_per_group(st) == " / ".join(f"{g} {n}" for g, n in st.errors.items())
    assert f"| any group | 9 of {st.rows} rows |" in md["summary"].value
