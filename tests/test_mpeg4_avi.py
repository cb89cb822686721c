"""MPEG-4 Part 2 (ASP) in AVI with B-frames, packed the DivX way (issue 25: OpenCV's ``Megamind.avi``).

DivX and Xvid wrote AVI chunks of one frame each for Video for Windows: a reference frame travels in one
chunk with the first B-frame shown before it, and an N-VOP placeholder fills the chunk where the reference
frame is shown (``[P B1] [B2] [N]``). AVI stores no presentation times and FFmpeg's decoder labels these
frames with permuted pts; sampling keyframes with ``skip_frame=NONKEY`` returned the last keyframe stamped
with the end of the video, and AVI's dts-based seeks landed on the next keyframe when two were close.

The files are made here (``samples.Spec(packed_b_frames=True)``). The truth does not come from MMFS: each
frame's index is read from its pixels (``samples.pattern`` puts ``8 x index mod 256`` in the blue channel),
the keyframes are the frames the encoder was told to make keyframes, the key packets come from a plain
demux, and a frame's time is the first frame's time plus its index in frame durations (AVI is constant
rate). Every sampled time is checked against these, and every sampled frame pixel for pixel against a
plain decode from the start.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import av
import lance
import numpy as np
import pytest

from mmfs_assets import samples
from mmfs_assets.engine import tasks
from mmfs_assets.ingest.probe import probe_video
from mmfs_loader.contract import schema as S
from mmfs_loader.contract.table import TableRef
from mmfs_loader.decode.nvdec import nvdec_accepts
from mmfs_loader.decode.video import PLAN_COLUMNS, DecodeError, VideoPlan, decode_frames
from tests.features_util import build_table

FPS, N = 25, 100
KEYS = (0, 7, 30, 31, 64, 90)  # irregular keyframes (forced), two of them adjacent
MEGAMIND = Path("/usr/share/doc/opencv-doc/examples/data")  # Debian's opencv-doc


def _spec(name: str, packed: bool = True, closed_gop: bool = True) -> samples.Spec:
    opts = {"bf": "2", "qmax": "3"}  # two B-frames between references; qmax: frame indices readable from pixels
    if closed_gop:  # the frame before each keyframe is a P-frame, as in Megamind.avi
        opts |= {"flags": "+cgop", "sc_threshold": "1000000000"}
    return samples.Spec(name, 96, 64, FPS, N / FPS, codec="mpeg4", gop=10 * N, keyframes=KEYS[1:], packed_b_frames=packed,
                        options=opts)


# packed: like Megamind.avi; open_gop: a keyframe shares its chunk with the B-frame shown before it (the key
# packet's pts is then that B-frame's); unpacked: B-frames as FFmpeg writes them (one frame per chunk)
SPECS = {"packed": _spec("packed.avi"), "open_gop": _spec("packed_open_gop.avi", closed_gop=False),
         "unpacked": _spec("bframes.avi", packed=False)}


@dataclass
class Truth:
    frames: list[np.ndarray]  # a plain decode from the start, in the order the decoder returns them
    times: np.ndarray  # when each is shown (seconds from the stream start)
    key_packets: list[float]  # pts of the packets the demuxer flags as keyframes
    keys: list[int]  # indices of the keyframes

    @property
    def key_times(self) -> np.ndarray:
        return self.times[self.keys]


def _scan(path: Path, keys: list[int] | None = None) -> Truth:
    """What the file holds, found without MMFS. ``keys``: the frames made keyframes (default: those the
    decoder flags)."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        tb, start = s.time_base, s.start_time or 0
        pts = [(p.pts, p.is_keyframe) for p in c.demux(s) if p.size]
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_type = "NONE"
        decoded = [(f.to_ndarray(format="rgb24"), f.key_frame) for f in c.decode(s)]
    first = float((min(p for p, _ in pts) - start) * tb)
    times = first + np.arange(len(decoded)) * float(tb)  # an AVI stream's time base is one frame
    return Truth([f for f, _ in decoded], times, sorted(float((p - start) * tb) for p, k in pts if k),
                 keys if keys is not None else [i for i, (_, k) in enumerate(decoded) if k])


@pytest.fixture(scope="module")
def avis(tmp_path_factory) -> dict[str, tuple[Path, Truth]]:
    d = tmp_path_factory.mktemp("avi")
    out = {}
    for kind, spec in SPECS.items():
        p = samples.write_video(d / spec.name, spec)
        truth = _scan(p, list(KEYS))
        # frame k shows source frame k: nothing lost, presentation order
        assert [round(float(np.median(f[..., 2])) / 8) % 32 for f in truth.frames] == [k % 32 for k in range(N)]
        assert truth.times[0] == pytest.approx(1 / FPS)  # FFmpeg counts the decoder delay in: one frame
        out[kind] = (p, truth)
    return out


def _nearest(key_times: np.ndarray, t: float) -> int:
    return int(np.abs(key_times - t).argmin())  # ties to the earlier keyframe, as the sampler


def _check_keyframes(d, targets: np.ndarray, truth: Truth) -> None:
    for t, got, img in zip(targets, d.timestamps, d.frames):
        k = truth.keys[_nearest(truth.key_times, t)]
        assert got == pytest.approx(truth.times[k], abs=1e-9), f"target {t:.3f}: {got:.3f} instead of keyframe {truth.times[k]:.3f}"
        assert np.array_equal(img, truth.frames[k]), f"target {t:.3f}: not the keyframe at {truth.times[k]:.3f}"


def _check_exact(d, targets: np.ndarray, truth: Truth, fps: float) -> None:
    for t, got, img in zip(targets, d.timestamps, d.frames):
        k = min(int(np.searchsorted(truth.times, t - 0.5 / fps - 1e-9)), len(truth.times) - 1)
        assert got == pytest.approx(truth.times[k], abs=1e-9), f"target {t:.3f}: {got:.3f} instead of {truth.times[k]:.3f}"
        assert np.array_equal(img, truth.frames[k]), f"target {t:.3f}: not the frame shown at {truth.times[k]:.3f}"


@pytest.mark.parametrize("kind", SPECS)
def test_probe_keyframe_times_match_an_independent_scan(avis, kind):
    path, truth = avis[kind]
    r = probe_video(str(path))
    assert r.error is None
    v = r.values
    assert (v["container"], v["codec"], v["num_frames"]) == ("avi", "mpeg4", N)
    assert v["fps"] == pytest.approx(FPS) and v["duration_s"] == pytest.approx(N / FPS)
    assert not v["is_vfr"]
    np.testing.assert_allclose(v["keyframe_times"], truth.key_times, atol=1e-9)
    assert truth.keys == _scan(path).keys  # the decoder flags exactly the frames forced to be keyframes
    if kind != "open_gop":  # the demuxer's keyframes are at the same times
        np.testing.assert_allclose(truth.key_packets, truth.key_times, atol=1e-9)
    else:  # ... except where a key packet also holds the B-frame shown before it: its pts is that B-frame's
        assert sum(abs(p - t) > 1e-9 for p, t in zip(truth.key_packets, truth.key_times)) >= 1


@pytest.mark.parametrize("threads", [1, 0])
@pytest.mark.parametrize("kind", SPECS)
def test_keyframe_mode_returns_the_keyframes_at_their_times(avis, kind, threads):
    path, truth = avis[kind]
    plan = VideoPlan.from_row(probe_video(str(path)).values)
    for count in (8, 13, 25):
        targets = plan.targets(count)
        d = decode_frames(str(path), plan, targets, None, mode="keyframe", threads=threads)
        _check_keyframes(d, targets, truth)
        assert d.frames_decoded == len(set(np.round(d.timestamps, 6)))  # one frame decoded per keyframe
    # every keyframe asked for by its own time, the adjacent ones (30, 31) included
    d = decode_frames(str(path), plan, truth.key_times, None, mode="keyframe", threads=threads)
    _check_keyframes(d, truth.key_times, truth)


@pytest.mark.parametrize("threads", [1, 0])
@pytest.mark.parametrize("kind", SPECS)
def test_exact_mode_returns_the_frame_on_screen(avis, kind, threads):
    path, truth = avis[kind]
    plan = VideoPlan.from_row(probe_video(str(path)).values)
    for count in (8, 13, 25):
        targets = plan.targets(count)
        _check_exact(decode_frames(str(path), plan, targets, None, mode="exact", threads=threads), targets, truth, plan.fps)
    # on each keyframe and the frame before it (seeks to keyframes one frame apart), and every frame
    around = np.unique(np.concatenate([truth.key_times, truth.key_times[1:] - 1 / FPS]))
    for targets in (around, truth.times):
        _check_exact(decode_frames(str(path), plan, targets, None, mode="exact", threads=threads), targets, truth, plan.fps)


@pytest.mark.parametrize("kind", SPECS)
def test_rows_without_keyframe_times(avis, kind):
    """Rows described before keyframe times were recorded: exact mode the same frames, keyframe mode the
    keyframe at or before each target."""
    path, truth = avis[kind]
    plan = VideoPlan.from_row({**probe_video(str(path)).values, "keyframe_times": None})
    targets = plan.targets(13)
    _check_exact(decode_frames(str(path), plan, targets, None, mode="exact", threads=1), targets, truth, plan.fps)
    d = decode_frames(str(path), plan, targets, None, mode="keyframe", threads=1)
    for t, got, img in zip(targets, d.timestamps, d.frames):
        k = truth.keys[int(np.searchsorted(truth.key_times, t + 1e-9)) - 1]
        assert got == pytest.approx(truth.times[k], abs=1e-9) and np.array_equal(img, truth.frames[k]), t


def test_keyframe_times_the_stream_lacks_are_the_rows_error(avis):
    """Metadata that disagrees with the file (here: the key packets' pts, one frame early where a keyframe
    shares its chunk with a B-frame) is an error, not the nearest frame under another time."""
    path, truth = avis["open_gop"]
    plan = VideoPlan.from_row({**probe_video(str(path)).values, "keyframe_times": tuple(truth.key_packets)})
    wrong = [t for t in truth.key_packets if min(abs(truth.key_times - t)) > 1e-9]
    with pytest.raises(DecodeError, match="not in the stream"):
        decode_frames(str(path), plan, wrong, None, mode="keyframe", threads=1)


def test_engine_decodes_the_rows_keyframes_from_the_table(avis, tmp_path):
    """Ingest and describe the files, then the engine's worker task on each row (the video read from its
    Lance blob): the metadata's keyframe times and every sampled frame match the scan."""
    drop = tmp_path / "D"
    drop.mkdir()
    for path, _ in avis.values():
        (drop / path.name).write_bytes(path.read_bytes())
    uri = str(tmp_path / "t.lance")
    build_table(uri, {"D": drop})
    ds = lance.dataset(uri)
    rows = ds.to_table(columns=[S.FILE_NAME, *PLAN_COLUMNS], with_row_id=True).to_pylist()
    assert len(rows) == len(SPECS)
    truths = {path.name: truth for path, truth in avis.values()}
    tasks.open_table(TableRef(uri), ds.version)
    for row in rows:
        truth = truths[row[S.FILE_NAME]]
        np.testing.assert_allclose(row["keyframe_times"], truth.key_times, atol=1e-9)
        plan = VideoPlan.from_row(row)
        for mode, check in (("keyframe", _check_keyframes), ("exact", _check_exact)):
            targets = plan.targets(8)
            out = tasks.decode_row(row["_rowid"], plan, [float(t) for t in targets], None, mode)
            assert out.error is None and out.deferred is None, out
            got = SimpleNamespace(timestamps=out.timestamps, frames=out.frames.take().numpy())
            check(got, targets, truth, *((plan.fps,) if mode == "exact" else ()))


def test_nvdec_leaves_avi_files_with_b_frames_to_the_cpu(avis):
    """NVDEC takes frame index = time x fps; these files' first frame is one frame in."""
    plan = VideoPlan.from_row(probe_video(str(avis["packed"][0])).values)
    assert not nvdec_accepts(plan)
    assert nvdec_accepts(VideoPlan(duration_s=8.0, fps=30.0, keyframe_interval=30.0, keyframe_times=(0.0, 1.0)))


@pytest.mark.parametrize("name", ["Megamind.avi", "Megamind_bugy.avi"])
def test_opencv_megamind(name):
    """OpenCV's sample files themselves, where Debian's opencv-doc installed them."""
    path = MEGAMIND / name
    if not path.exists():
        pytest.skip(f"{path} is absent (apt-get install opencv-doc)")
    truth = _scan(path)
    v = probe_video(str(path)).values
    np.testing.assert_allclose(v["keyframe_times"], truth.key_packets, atol=1e-9)  # the demuxer's keyframes
    np.testing.assert_allclose(v["keyframe_times"], truth.key_times, atol=1e-9)
    plan = VideoPlan.from_row(v)
    for count in (8, 25):
        targets = plan.targets(count)
        _check_keyframes(decode_frames(str(path), plan, targets, None, mode="keyframe", threads=1), targets, truth)
        _check_exact(decode_frames(str(path), plan, targets, None, mode="exact", threads=1), targets, truth, plan.fps)
    if name == "Megamind.avi":  # the numbers: keyframes at 0.04, 0.08, 4.13, 6.46, 8.38 s
        assert np.round(v["keyframe_times"], 2).tolist() == [0.04, 0.08, 4.13, 6.46, 8.38]
        d = decode_frames(str(path), plan, plan.targets(8), 224, mode="keyframe", threads=1)
        assert np.round(d.timestamps, 2).tolist() == [0.08, 4.13, 4.13, 4.13, 6.46, 8.38, 8.38, 8.38]
