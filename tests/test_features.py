"""Each declared feature, filled with its tiny random-init model: values, provenance, errors, bytes."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import lance
import numpy as np
import pyarrow as pa
import pytest

from mmfs_assets import samples
from mmfs_assets.features import discover
from mmfs_assets.features.catalog.clip_embedding import clip_feature
from mmfs_loader import schema as S
from mmfs_loader.depth import decode_depth
from mmfs_loader.sql import equals
from tests.features_util import B_VIDEOS, fill, snapshot, tiny, two_drop_table

FEATURES = {f.name: f for f in discover()}


def test_catalog_declares_the_features():
    assert set(FEATURES) == {"clip_embedding", "depth", "caption", "quality"}
    for f in FEATURES.values():
        assert f.group.name == f.name and f.code_version
        assert all((fl.metadata or {}).get(S.GROUP_KEY) == f.name.encode() for fl in f.group.fields)


@pytest.fixture(scope="module")
def base_table(tmp_path_factory, fixture_dir) -> Path:
    """Drop A: all good fixtures + the broken ones; drop B: two other videos. Metadata filled for both."""
    good = sorted((fixture_dir / "good").iterdir())
    bad = sorted((fixture_dir / "bad").iterdir())
    return two_drop_table(tmp_path_factory.mktemp("feat"), good + bad, B_VIDEOS)


@pytest.fixture
def table(base_table, tmp_path) -> str:
    dst = tmp_path / "t.lance"
    shutil.copytree(base_table, dst)
    return str(dst)


def _check_values(name: str, row: dict, model) -> None:
    k = model.frames.count
    if name == "clip_embedding":
        v = np.asarray(row["clip_embedding"], dtype=np.float32)
        assert v.shape == (512,) and np.isfinite(v).all()
        assert math.isclose(float(np.linalg.norm(v)), 1.0, rel_tol=1e-4)
        assert len(row["clip_embedding_timestamps"]) == k
    elif name == "depth":
        d = decode_depth(row)
        assert d.dtype == np.float32 and d.ndim == 3 and d.shape[0] == k and np.isfinite(d).all()
        assert min(d.shape[1:]) == 70  # the tiny processor's working size (short side)
        assert len(row["depth_timestamps"]) == k
        assert all(lo <= hi for lo, hi in zip(row["depth_min"], row["depth_max"]))
    elif name == "caption":
        assert isinstance(row["caption"], str) and row["caption"].strip()
        assert len(row["caption_timestamps"]) == k
    elif name == "quality":
        assert row["sharpness"] >= 0 and math.isfinite(row["sharpness"])
        assert row["motion"] >= 0 and math.isfinite(row["motion"])


@pytest.mark.parametrize("name", sorted(FEATURES))
def test_feature_fill(name, table, model_dir, fixture_dir):
    feature = FEATURES[name]
    g = feature.group
    model = tiny(feature, model_dir)
    root = Path(table)
    before = snapshot(root)
    rep = fill(table, "A", feature, model, chunk_rows=4)
    after = snapshot(root)

    ds = lance.dataset(table)
    for f in g.fields:  # declared with the exact types of the group
        assert ds.schema.field(f.name).type == f.type
    rows = ds.to_table(columns=[S.DROP_ID, S.FILE_NAME, *g.columns]).to_pylist()
    n_good = len(list((fixture_dir / "good").iterdir()))
    n_bad = len(list((fixture_dir / "bad").iterdir()))
    a_rows = [r for r in rows if r[S.DROP_ID] == "A"]
    assert rep.rows_computed == n_good and rep.rows_errored == n_bad
    assert rep.commits == -(-len(a_rows) // 4)  # chunks of at most 4 rows, one commit each
    for r in a_rows:
        assert r[g.producer_column] == model.producer  # provenance on every row, errors included
        if r[S.FILE_NAME].startswith("bad/") or r[S.FILE_NAME] in samples.BAD_FILES:
            assert r[g.error_column] and "metadata error" in r[g.error_column]
            assert all(r[c] is None for c in g.value_columns)
        else:
            assert r[g.error_column] is None, r[g.error_column]
            _check_values(name, r, model)
    for r in rows:  # only the partition's rows changed
        if r[S.DROP_ID] == "B":
            assert all(r[c] is None for c in g.columns)

    # only new files: no existing data/blob file changed; the new data files hold only this group
    changed = [p for p, v in before.items() if after.get(p) != v and p != "_versions/latest_version_hint.json"]
    assert changed == []
    new_data = {p: s for p, (s, _) in after.items() if p not in before and p.startswith("data/")}
    assert new_data
    cols_bytes = ds.to_table(columns=list(g.columns)).nbytes
    assert sum(new_data.values()) <= 2 * cols_bytes + 16384 * rep.commits
    ops = [ds.read_transaction(v["version"]).transaction_properties for v in ds.versions()[-rep.commits:]]
    assert all(p["mmfs.asset"] == name and p["mmfs.producer"] == model.producer and p["mmfs.op"] == "replace" for p in ops)

    # a re-run has nothing to do: no commit
    v = ds.version
    again = fill(table, "A", feature, model)
    assert again.rows_already_current == len(a_rows) and again.commits == 0
    assert lance.dataset(table).version == v


@pytest.mark.parametrize("name", sorted(FEATURES))
def test_feature_is_deterministic(name, base_table, tmp_path, model_dir):
    feature = FEATURES[name]
    values = []
    for i in range(2):
        dst = tmp_path / f"t{i}.lance"
        shutil.copytree(base_table, dst)
        fill(str(dst), "B", feature, tiny(feature, model_dir), chunk_rows=1)
        t = lance.dataset(str(dst)).to_table(columns=[S.ID, *feature.group.columns], filter=equals(S.DROP_ID, "B"))
        values.append(t.sort_by(S.ID))
    for c in feature.group.value_columns:  # real values, not two identical sets of nulls
        assert values[0][c].null_count == 0, c
    assert values[0].equals(values[1])


def test_frames_setting_changes_the_producer_and_recomputes(table, model_dir):
    f = FEATURES["quality"]
    first = tiny(f, model_dir)
    fill(table, "B", f, first)
    second = tiny(f, model_dir, MMFS_QUALITY_FRAMES="3")
    assert second.producer != first.producer and "frames=3x" in second.producer
    rep = fill(table, "B", f, second)
    assert rep.rows_computed == 2 and rep.rows_already_current == 0
    t = lance.dataset(table).to_table(columns=[f.group.producer_column], filter=equals(S.DROP_ID, "B"))
    assert set(t[f.group.producer_column].to_pylist()) == {second.producer}


def test_second_embedding_model_lives_beside_the_first(table, model_dir):
    alt = clip_feature(name="clip_alt", setting="MMFS_CLIP_ALT", dim=256, frames=2)
    main = FEATURES["clip_embedding"]
    fill(table, "B", main, tiny(main, model_dir))
    fill(table, "B", alt, tiny(alt, model_dir))
    ds = lance.dataset(table)
    assert ds.schema.field("clip_alt").type == pa.list_(pa.float32(), 256)
    assert ds.schema.field("clip_embedding").type == pa.list_(pa.float32(), 512)
    t = ds.to_table(columns=["clip_alt", "clip_embedding", "clip_alt_producer"], filter=equals(S.DROP_ID, "B"))
    assert t["clip_alt"].null_count == 0 and t["clip_embedding"].null_count == 0
    assert all(p.startswith("clip_alt:") for p in t["clip_alt_producer"].to_pylist())


def test_a_clip_that_breaks_the_model_gets_an_error_row(table, model_dir):
    f = FEATURES["quality"]
    model = tiny(f, model_dir)
    ds = lance.dataset(table)
    victim = ds.to_table(columns=[], filter=equals(S.FILE_NAME, "b1.mp4"), with_row_id=True)["_rowid"][0].as_py()
    inner = model.compute

    def flaky(clips):
        if any(c.rowid == victim for c in clips):
            raise RuntimeError("model blew up on this clip")
        return inner(clips)

    model.compute = flaky
    rep = fill(table, "B", f, model)
    assert rep.rows_computed == 1 and rep.rows_errored == 1
    t = lance.dataset(table).to_table(columns=[S.FILE_NAME, "quality_error", "sharpness"], filter=equals(S.DROP_ID, "B"))
    by = {r[S.FILE_NAME]: r for r in t.to_pylist()}
    assert "model blew up" in by["b1.mp4"]["quality_error"] and by["b1.mp4"]["sharpness"] is None
    assert by["b2.mp4"]["quality_error"] is None and by["b2.mp4"]["sharpness"] is not None


def test_rows_without_metadata_wait(tmp_path, fixture_dir, model_dir):
    from mmfs_assets.ingest.ingest_drop import ingest_drop

    drop = tmp_path / "C"
    drop.mkdir()
    shutil.copy(sorted((fixture_dir / "good").iterdir())[0], drop)
    uri = str(tmp_path / "c.lance")
    ingest_drop(drop, "C", uri, properties={})
    f = FEATURES["quality"]
    rep = fill(uri, "C", f, tiny(f, model_dir))
    assert rep.rows_waiting_for_metadata == 1 and rep.rows_written == 0
    assert lance.dataset(uri).to_table(columns=["quality_producer"])["quality_producer"].null_count == 1


@pytest.mark.parametrize(
    ("name", "spec", "setting"),
    [
        ("clip_embedding", "ViT-B-32:laion2b_s34b_b79k", "MMFS_CLIP_MODEL"),  # not in the local cache
        ("clip_embedding", "/nonexistent/clip", "MMFS_CLIP_MODEL"),
        ("depth", "depth-anything/Depth-Anything-V2-Small-hf", "MMFS_DEPTH_MODEL"),
        ("caption", "microsoft/git-base-vatex", "MMFS_CAPTION_MODEL"),
        ("caption", "./no/such/dir", "MMFS_CAPTION_MODEL"),
    ],
)
def test_unloadable_model_is_one_clear_error(name, spec, setting, model_dir):
    from mmfs_assets.features.models import ModelUnavailableError, load_model, model_context

    f = FEATURES[name]
    ctx = model_context(f, profile="pretrained", model_dir=str(model_dir), device="cpu", env={setting: spec})
    assert ctx.spec == spec
    with pytest.raises(ModelUnavailableError) as e:
        load_model(f, ctx)
    msg = str(e.value)
    assert setting in msg and spec in msg and "MMFS_MODEL_PROFILE=tiny" in msg


def test_caption_model_must_be_a_video_captioner(model_dir):
    from mmfs_assets.features.models import ModelUnavailableError, ensure_tiny, load_model, model_context

    depth_dir = ensure_tiny(FEATURES["depth"], model_dir)  # a real model directory, of the wrong kind
    ctx = model_context(FEATURES["caption"], profile="pretrained", model_dir=str(model_dir), device="cpu",
                        env={"MMFS_CAPTION_MODEL": str(depth_dir)})
    with pytest.raises(ModelUnavailableError, match="MMFS_CAPTION_MODEL"):
        load_model(FEATURES["caption"], ctx)


def test_bad_settings_are_clear(model_dir):
    from mmfs_assets.features.models import ModelUnavailableError, model_context

    with pytest.raises(ModelUnavailableError, match="MMFS_CLIP_FRAMES"):
        model_context(FEATURES["clip_embedding"], profile="tiny", model_dir=str(model_dir), device="cpu",
                      env={"MMFS_CLIP_FRAMES": "many"})
    with pytest.raises(ModelUnavailableError, match="MMFS_MODEL_PROFILE"):
        model_context(FEATURES["clip_embedding"], profile="huge", model_dir=str(model_dir), device="cpu", env={})


def test_tiny_fills_never_overwrite_pretrained_values(table, model_dir):
    """A table filled with real weights, then a process with MMFS_MODEL_PROFILE=tiny: the real values stay
    unless the run is forced."""
    import pyarrow as pa

    from mmfs_assets.table import replace_columns

    f = FEATURES["clip_embedding"]
    model = tiny(f, model_dir)
    assert model.producer.endswith("|profile=tiny")
    fill(table, "B", f, model)
    # make drop B's values look like a pretrained model's (same columns, a producer without profile=tiny)
    ids = lance.dataset(table).to_table(columns=[], filter=equals(S.DROP_ID, "B"), with_row_id=True)["_rowid"]
    real = "clip_embedding:clip-v1|model=ViT-B-32:laion2b_s34b_b79k|weights=hub|frames=8x224|sampling=keyframe|dtype=fp16"
    replace_columns(table, pa.table({"_rowid": ids, f.group.producer_column: [real] * len(ids)}),
                    locate_filter=equals(S.DROP_ID, "B"), properties={})
    rep = fill(table, "B", f, model)
    assert (rep.rows_kept_pretrained, rep.rows_computed, rep.commits) == (2, 0, 0)
    t = lance.dataset(table).to_table(columns=[f.group.producer_column], filter=equals(S.DROP_ID, "B"))
    assert set(t[f.group.producer_column].to_pylist()) == {real}
    rep = fill(table, "B", f, model, force=True)  # forced: the test values replace them
    assert rep.rows_computed == 2 and rep.rows_kept_pretrained == 0
