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
from mmfs_assets.engine.batches import ModelRunner
from mmfs_assets.engine.preprocess import Preprocess
from mmfs_assets.engine.sampling import row_producer
from mmfs_assets.engine.values import values_table
from mmfs_assets.features import discover
from mmfs_assets.features.catalog.clip_embedding import clip_feature
from mmfs_assets.features.spec import Clip, Feature, FrameRequest, Model, ModelUnavailableError
from mmfs_loader.contract import schema as S
from mmfs_loader.contract.depth import decode_depth
from mmfs_loader.contract.sql import equals
from tests.features_util import B_VIDEOS, TOY_GROUP, fill, snapshot, tiny, toy_feature, two_drop_table

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
        # provenance on every row, errors included (under sampling=auto, with the mode the row got)
        assert r[g.producer_column] in {row_producer(model.producer, m) for m in ("keyframe", "exact")}
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


def _clips(req: FrameRequest, n: int = 3) -> list[Clip]:
    """``n`` clips of random frames as the decoders make them for ``req`` (two frame shapes)."""
    rng = np.random.default_rng(0)
    s = req.short_side or 48
    shapes = [(s, s * 3 // 2), (s * 4 // 3, s)]
    return [Clip(10 + i, rng.integers(0, 256, (req.count, *shapes[i % 2], 3), dtype=np.uint8),
                 np.arange(req.count) * 0.5 + i) for i in range(n)]


def _computed(feature, model, clips: list[Clip]) -> pa.Table:
    """What a fill would write for ``clips``: compute, post-processing, the values table."""
    results = {}
    for c, r in zip(clips, ModelRunner(model, feature.group.value_columns)(clips)):
        assert not isinstance(r, str), r
        if model.postprocess is not None:
            r = model.postprocess({k: (v.numpy() if hasattr(v, "numpy") else v) for k, v in r.items()})
        results[c.rowid] = (r, None)
    return values_table(feature, model.producer, [c.rowid for c in clips], results)


def test_features_travel_by_pickle(model_dir):
    """A Feature is a declaration that travels (the ray engine sends it to its actors): every catalog feature, and
    the metadata group's, survives the standard pickle, and loads and computes the same on the other side."""
    import pickle

    from mmfs_assets.ingest.describe import METADATA_FEATURE

    for f in [*discover(), toy_feature(), toy_feature(post=True)]:
        g = pickle.loads(pickle.dumps(f))
        assert (g.name, g.group, g.code_version, g.setting, g.frames, g.batch_size, g.default_sampling) == (
            f.name, f.group, f.code_version, f.setting, f.frames, f.batch_size, f.default_sampling)
        here, there = tiny(f, model_dir), tiny(g, model_dir)
        assert there.producer == here.producer and there.frames == here.frames and there.batch_size == here.batch_size
        clips = _clips(here.frames)
        values = _computed(g, there, clips)
        assert values.equals(_computed(f, here, clips)), f.name
        assert values.column(f.group.value_columns[0]).null_count == 0
    meta = pickle.loads(pickle.dumps(METADATA_FEATURE))
    probe = tiny(meta, model_dir)
    assert probe.input == "container" and probe.producer.startswith("mmfs.probe:")


@pytest.mark.parametrize("post", [False, True], ids=["compute", "postprocess"])
def test_engine_fills_the_timestamps_column(post, table, model_dir):
    """A feature's compute returns only its value; the engine fills ``<name>_timestamps`` from the frames it
    decoded (passed through a post-processing step in the workers too) and applies the frame-count setting."""
    f = toy_feature(post)
    default = tiny(f, model_dir)
    assert (default.frames, default.batch_size) == (FrameRequest(3, 32), 2)
    model = tiny(f, model_dir, MMFS_TOY_FRAMES="2", MMFS_TOY_BATCH_SIZE="1")
    assert (model.frames, model.batch_size) == (FrameRequest(2, 32), 1)
    assert "|frames=2x32|" in model.producer and model.producer.replace("frames=2x32", "frames=3x32") == default.producer
    rep = fill(table, "B", f, model)
    assert (rep.rows_computed, rep.rows_errored, rep.frames_taken) == (2, 0, 4)
    rows = lance.dataset(table).to_table(columns=list(TOY_GROUP.columns), filter=equals(S.DROP_ID, "B")).to_pylist()
    assert len(rows) == 2
    for r in rows:
        assert r["toy_producer"] == model.producer and r["toy_error"] is None
        assert len(r["toy_timestamps"]) == 2 and r["toy_timestamps"] == sorted(r["toy_timestamps"])
        assert r["toy"] == pytest.approx(np.mean(r["toy_timestamps"]))  # the times compute saw are the ones stored


def test_engine_applies_the_frame_and_batch_settings(model_dir):
    clip = FEATURES["clip_embedding"]
    default = tiny(clip, model_dir)
    assert (clip.frames, clip.batch_size) == (8, 64)  # the declared defaults
    assert (default.frames, default.batch_size) == (FrameRequest(8, 64), 64)
    m = tiny(clip, model_dir, MMFS_CLIP_FRAMES="3", MMFS_CLIP_BATCH_SIZE="5")
    assert (m.frames, m.batch_size) == (FrameRequest(3, 64), 5)
    assert m.producer.replace("|frames=3x64|", "|frames=8x64|") == default.producer != m.producer
    assert len(_computed(clip, m, _clips(m.frames))["clip_embedding_timestamps"][0]) == 3
    cap = FEATURES["caption"]  # no count of its own: as many frames as the model takes (4 for the tiny GIT), never more
    assert cap.frames is None and tiny(cap, model_dir).frames.count == 4
    assert tiny(cap, model_dir, MMFS_CAPTION_FRAMES="2").frames.count == 2
    with pytest.raises(ModelUnavailableError, match="at most 4 frames per video, 5 asked for"):
        tiny(cap, model_dir, MMFS_CAPTION_FRAMES="5")


def _torch_toy_compute(net, clips, pixels) -> dict:
    import torch

    assert pixels.dtype == next(net.parameters()).dtype == torch.float32 and not net.training
    out = net(pixels.mean(dim=(2, 3)))
    return {"toy": [float(torch.is_inference_mode_enabled() and out.is_inference())] * len(clips)}


def _torch_toy_text(net, texts: list[str]) -> np.ndarray:
    import torch

    return np.array([float(torch.is_inference_mode_enabled())] * len(texts))


def _torch_toy_load(ctx) -> Model:
    import torch

    net = torch.nn.Linear(3, 2).double().train()  # as a library may hand it over: training mode, float64
    return Model("toy-linear", "none", _torch_toy_compute, net, Preprocess(16, (0.5,) * 3, (0.25,) * 3),
                 encode_text=_torch_toy_text)


def test_engine_places_the_network_and_computes_in_inference_mode(model_dir):
    import torch

    f = Feature("toy", TOY_GROUP, "toy-v1", "MMFS_TOY", "toy", _torch_toy_load, "a torch toy", frames=2)
    m = tiny(f, model_dir)
    assert m.device == "cpu" and m.dtype == torch.float32 and m.details == {"dtype": "fp32"}
    assert m.producer == "toy:toy-v1|model=toy-linear|weights=none|frames=2x16|sampling=exact|dtype=fp32"
    clips = _clips(m.frames)
    rows = ModelRunner(m, TOY_GROUP.value_columns)(clips)
    assert [r["toy"] for r in rows] == [1.0] * 3
    assert [r["toy_timestamps"] for r in rows] == [c.timestamps.tolist() for c in clips]
    assert not torch.is_inference_mode_enabled()
    assert m.encode_text is not None and m.encode_text(["a", "b"]).tolist() == [1.0, 1.0]
