"""The decode engine: worker processes that survive poison videos, cost-aware sampling, no orphans."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lance
import numpy as np
import pytest

from mmfs_assets import samples
from mmfs_assets.engine.decoders import DecoderUnavailableError, choose_decoder
from mmfs_assets.engine.pool import TaskFailed, WorkerPool
from mmfs_assets.features import discover
from mmfs_assets.ingest.probe import probe_video
from mmfs_loader.contract import schema as S
from mmfs_loader.decode.video import VideoPlan, decode_frames
from tests import poison
from tests.features_util import build_table, fill, tiny

FEATURES = {f.name: f for f in discover()}


def _children(pid: int) -> set[int]:
    out = set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.add(int(d.name))
            except (OSError, IndexError, ValueError):
                pass
    return out


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture(scope="module")
def gop_videos(tmp_path_factory) -> dict[int, Path]:
    """8 s, 30 fps videos with a 1 s and a 10 s keyframe interval (small frames: cost is in frames)."""
    d = tmp_path_factory.mktemp("gop")
    return {g: samples.write_video(d / f"gop{g}.mp4", samples.Spec(f"gop{g}.mp4", 192, 108, 30, 8.0, gop=g, options={"sc_threshold": "0"})) for g in (30, 300)}


def test_metadata_records_keyframe_times(gop_videos):
    v = probe_video(str(gop_videos[30])).values
    assert v["keyframe_times"] == pytest.approx([float(i) for i in range(8)])
    assert probe_video(str(gop_videos[300])).values["keyframe_times"] == [0.0]


def test_exact_mode_seeks_to_the_keyframe_before_each_target(gop_videos):
    """1 s GOP, 8 targets 1 s apart: about half a GOP per frame (was the whole video: 30 per frame)."""
    plan = VideoPlan.from_row(probe_video(str(gop_videos[30])).values)
    d = decode_frames(str(gop_videos[30]), plan, plan.targets(8), 64, mode="exact", threads=1)
    assert d.amplification <= 30 / 2 + 1
    assert d.seeks == 8
    legacy = decode_frames(str(gop_videos[30]), VideoPlan.from_row({**probe_video(str(gop_videos[30])).values, "keyframe_times": None}),
                           plan.targets(8), 64, mode="exact", threads=1)
    assert legacy.frames_decoded >= 7.5 * 30  # the old plan decoded every frame up to the last target
    np.testing.assert_array_equal(d.timestamps, legacy.timestamps)
    assert np.abs(d.frames.astype(int) - legacy.frames.astype(int)).max() == 0


def test_keyframe_mode_decodes_only_keyframes(gop_videos):
    v = probe_video(str(gop_videos[30])).values
    plan = VideoPlan.from_row(v)
    d = decode_frames(str(gop_videos[30]), plan, plan.targets(8), 64, mode="keyframe", threads=1)
    assert d.amplification <= 1.2
    assert set(np.round(d.timestamps, 6)) <= set(np.round(v["keyframe_times"], 6))
    # the keyframes themselves: equal to an exact decode at those times
    exact = decode_frames(str(gop_videos[30]), plan, d.timestamps + 1e-3, 64, mode="exact", threads=1)
    np.testing.assert_allclose(exact.timestamps, d.timestamps)
    assert np.abs(exact.frames.astype(int) - d.frames.astype(int)).max() == 0
    # a 10 s GOP has one keyframe: every target snaps to it, one frame decoded
    long = VideoPlan.from_row(probe_video(str(gop_videos[300])).values)
    d10 = decode_frames(str(gop_videos[300]), long, long.targets(8), 64, mode="keyframe", threads=1)
    assert d10.frames_decoded == 1 and list(d10.timestamps) == [0.0] * 8


def test_pool_survives_crashes_and_hangs_without_orphans():
    with WorkerPool(2, timeout=3.0) as pool:
        pids = pool.pids()
        ok1 = pool.submit(poison.echo, 1)
        bad = pool.submit(poison.crash)
        hung = pool.submit(poison.hang)
        after = [pool.submit(poison.echo, i) for i in range(6)]
        assert pool.result(ok1) == 1
        crashed = pool.result(bad)
        assert isinstance(crashed, TaskFailed) and "died: signal 11 (SIGSEGV)" in crashed.message
        timed_out = pool.result(hung)
        assert isinstance(timed_out, TaskFailed) and "timed out" in timed_out.message
        assert [pool.result(t) for t in after] == list(range(6))  # queued behind the poison: not lost
        assert pool.restarts == 3  # the crash ran twice (a death is retried once on a fresh worker), the hang once
        replaced = pool.pids()
    assert all(not _alive(p) for p in pids + replaced)
    assert not _children(os.getpid()) & set(pids + replaced)


@pytest.mark.timeout(120)
def test_large_tasks_and_large_results_do_not_deadlock_a_worker():
    """Several tasks bigger than a socket buffer queued on one worker whose results are as big: the pool's send
    of the next task and the worker's send of the last result must not wait on each other (they did: a depth
    fill with large maps hung for good, out of reach of the task timeout)."""
    blobs = [bytes([i]) * (5 << 20) for i in range(4)]
    with WorkerPool(1, timeout=120.0, depth=4) as pool:
        tids = [pool.submit(poison.echo_bytes, b) for b in blobs]
        assert [pool.result(t) for t in tids] == blobs


@pytest.fixture
def poison_table(tmp_path) -> str:
    drop = tmp_path / "P"
    drop.mkdir()
    for name, secs in [("ok1.mp4", 1.0), ("crash.mp4", 1.3), ("ok2.mp4", 1.5), ("hang.mp4", 1.7), ("ok3.mp4", 2.0)]:
        samples.write_video(drop / name, samples.Spec(name, 64, 48, 10, secs))
    uri = str(tmp_path / "p.lance")
    build_table(uri, {"P": drop})
    return uri


def test_poison_video_becomes_its_rows_error(poison_table, model_dir):
    """A decoder crash and a hang are those rows' errors; the other rows are computed; no orphans."""
    feature = FEATURES["quality"]
    before = _children(os.getpid())
    rep = fill(poison_table, "P", feature, tiny(feature, model_dir), decode_workers=2, decode_timeout=4.0,
               decode_task=poison.decode_or_break, chunk_rows=2)
    rows = {r["file_name"]: r for r in lance.dataset(poison_table).to_table(
        columns=[S.FILE_NAME, "sharpness", "quality_error", "quality_producer"]).to_pylist()}
    assert "decoder process died: signal 11" in rows["crash.mp4"]["quality_error"]
    assert "timed out" in rows["hang.mp4"]["quality_error"]
    for name in ("ok1.mp4", "ok2.mp4", "ok3.mp4"):
        assert rows[name]["quality_error"] is None and rows[name]["sharpness"] is not None
    assert all(r["quality_producer"] == rep.producer for r in rows.values())
    assert rep.rows_computed == 3 and rep.rows_errored == 2 and rep.worker_restarts == 3  # the crash ran twice
    assert _children(os.getpid()) <= before  # every worker (and replacement) is gone


CHILD = """
import sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
from mmfs_assets.features import discover
from tests import poison
from tests.features_util import fill, tiny
f = {{x.name: x for x in discover()}}["quality"]
fill({uri!r}, "P", f, tiny(f, Path({models!r})), decode_workers=2, decode_timeout=None,
     decode_task=poison.decode_or_break, chunk_rows=1)
"""


def _cmdline(pid: int) -> str:
    """The process's command line; "" for one that ended meanwhile (a short-lived child of the fill's process)."""
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_text(errors="replace")
    except OSError:
        return ""


def test_killed_fill_leaves_no_worker_behind(poison_table, model_dir):
    """SIGKILL the process running a fill while its workers decode (one hangs): they all exit."""
    code = CHILD.format(root=str(Path(__file__).resolve().parents[1]), uri=poison_table, models=str(model_dir))
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 120
        workers: set[int] = set()
        while time.monotonic() < deadline and len(workers) < 2:
            workers = {p for p in _children(proc.pid) if "mmfs" in _cmdline(p) or "spawn" in _cmdline(p)}
            time.sleep(0.2)
        assert len(workers) >= 2, "the fill did not start its workers"
        time.sleep(1.0)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(p) for p in workers):
            time.sleep(0.1)
        assert not any(_alive(p) for p in workers), "workers outlived the killed fill"
    finally:
        if proc.poll() is None:
            proc.kill()


def test_decoder_choice():
    have = lambda: None  # noqa: E731 - CUDA and PyNvVideoCodec present
    missing = lambda: "PyNvVideoCodec is not installed"  # noqa: E731
    assert choose_decoder("auto", "cuda", probe=have).nvdec
    assert choose_decoder("nvdec", "cuda:0", probe=have).name == "nvdec+cpu"
    c = choose_decoder("auto", "cuda", probe=missing)
    assert not c.nvdec and "not installed" in c.reason
    assert not choose_decoder("auto", "cpu", probe=have).nvdec
    assert not choose_decoder("cpu", "cuda", probe=have).nvdec
    with pytest.raises(DecoderUnavailableError, match="not installed"):
        choose_decoder("nvdec", "cuda", probe=missing)
    with pytest.raises(DecoderUnavailableError, match="runs on cpu"):
        choose_decoder("nvdec", "cpu", probe=have)
    with pytest.raises(DecoderUnavailableError, match="choose one of"):
        choose_decoder("gpu", "cuda", probe=have)
    # on this machine (no GPU) auto picks CPU workers and says why
    real = choose_decoder("auto", "cuda")
    assert not real.nvdec and real.reason


@pytest.fixture(scope="module")
def gop_table(tmp_path_factory, gop_videos) -> str:
    root = tmp_path_factory.mktemp("goptable")
    drop = root / "G"
    drop.mkdir()
    for p in gop_videos.values():
        (drop / p.name).write_bytes(p.read_bytes())
    uri = str(root / "g.lance")
    build_table(uri, {"G": drop})
    return uri


def test_fill_reports_amplification_and_mode_recomputes(gop_table, tmp_path, model_dir):
    """Keyframe mode decodes ~1 frame per frame; switching to exact is a new producer."""
    import shutil

    uri = str(tmp_path / "t.lance")
    shutil.copytree(gop_table, uri)
    clip = FEATURES["clip_embedding"]
    key = tiny(clip, model_dir, MMFS_CLIP_SAMPLING="keyframe")
    assert key.sampling == "keyframe" and "sampling=keyframe" in key.producer
    rep = fill(uri, "G", clip, key, decode_workers=2)
    assert rep.rows_computed == 2 and rep.decoder == "cpu" and rep.decode_workers == 2
    assert rep.amplification <= 1.2 and rep.frames_taken == 16
    assert rep.rows_with_repeated_frames == 1  # the 10 s GOP video: one keyframe for 8 targets
    exact = tiny(clip, model_dir, MMFS_CLIP_SAMPLING="exact")
    assert exact.producer != key.producer and "sampling=exact" in exact.producer
    rep2 = fill(uri, "G", clip, exact, decode_workers=2)
    assert rep2.rows_computed == 2  # the mode is part of the producer: changing it recomputes
    assert rep2.amplification_max > rep.amplification_max
    assert rep2.rows_with_repeated_frames == 0
    t = lance.dataset(uri).to_table(columns=[S.FILE_NAME, "clip_embedding_timestamps"]).to_pylist()
    stamps = {r["file_name"]: r["clip_embedding_timestamps"] for r in t}
    assert stamps["gop30.mp4"] == pytest.approx([i + 0.5 for i in range(8)])
    with pytest.raises(Exception, match="MMFS_CLIP_SAMPLING"):
        tiny(clip, model_dir, MMFS_CLIP_SAMPLING="fast")


def test_broken_model_stops_the_fill_and_cleans_up(poison_table, model_dir):
    """A model that fails on every clip fails the fill (not the rows): no worker and no shared-memory
    frames are left behind, and nothing is committed."""
    import dataclasses

    def boom(clips):
        raise RuntimeError("CUDA out of memory (simulated)")

    feature = FEATURES["quality"]
    model = dataclasses.replace(tiny(feature, model_dir), compute=boom)
    shm_before = {p.name for p in Path("/dev/shm").iterdir()}
    kids_before = _children(os.getpid())
    version = lance.dataset(poison_table).version
    with pytest.raises(RuntimeError, match="out of memory"):
        fill(poison_table, "P", feature, model, decode_workers=2)
    assert {p.name for p in Path("/dev/shm").iterdir()} <= shm_before
    assert _children(os.getpid()) <= kids_before
    ds = lance.dataset(poison_table)
    assert ds.version == version + 1  # only the (idempotent) declaration of the group's columns
    assert ds.to_table(columns=["quality_producer"]).column(0).null_count == ds.count_rows()


def test_nvdec_frame_indices():
    """NVDEC fetches frames by index: the same frames the CPU decoder takes at a constant rate."""
    from mmfs_loader.decode.nvdec import frame_indices

    plan = VideoPlan(duration_s=8.0, fps=30.0, keyframe_interval=30.0, keyframe_times=tuple(float(i) for i in range(8)))
    idx, stamps = frame_indices(plan, list(plan.targets(8)), "exact")
    assert idx == [15, 45, 75, 105, 135, 165, 195, 225] and stamps[0] == pytest.approx(0.5)
    idx, stamps = frame_indices(plan, list(plan.targets(8)), "keyframe")
    assert idx == [0, 30, 60, 90, 120, 150, 180, 210]
    assert frame_indices(plan, [9.0], "exact")[0] == [239]  # past the end: the last frame


@pytest.mark.parametrize("mode", ["exact", "keyframe"])
def test_nvdec_indices_match_the_cpu_decoder(gop_videos, mode):
    from mmfs_loader.decode.nvdec import frame_indices

    plan = VideoPlan.from_row(probe_video(str(gop_videos[30])).values)
    cpu = decode_frames(str(gop_videos[30]), plan, plan.targets(8), 32, mode=mode, threads=1)
    _, stamps = frame_indices(plan, list(plan.targets(8)), mode)
    np.testing.assert_allclose(stamps, cpu.timestamps, atol=1e-6)
