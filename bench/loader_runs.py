"""The contenders of bench/loader.py, each a function of the data folder that returns its measurements.

Every run starts its clock before constructing its loader (time to first batch includes resolving the
tag, the filter and the guard for MMFS, opening the table for the others) and reads the same columns:
``clip_embedding`` (512 x f32) + ``height``, ``fps``, ``duration_s`` (+ ``id`` for MMFS).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from bench.loader_data import COLUMNS, TAG
from bench.measured import expect_count

BATCH = 256
EPOCHS = 3  # epoch 1, then the best of the later ones (this box is noisy)


class Clock:
    """Epoch ends and the first batch, from one start."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.first: float | None = None
        self.ends: list[float] = []
        self.rows = 0

    def batch(self, n: int) -> None:
        self.rows += n
        if self.first is None:
            self.first = time.perf_counter() - self.t0

    def epoch(self) -> None:
        self.ends.append(time.perf_counter() - self.t0)

    def result(self, expected: int, **extra) -> dict:
        """The measurements, once the run read ``expected`` rows in all (else :class:`bench.measured.NotMeasured`)."""
        expect_count("rows read", self.rows, expected)
        e = self.ends
        later = [b - a for a, b in zip(e, e[1:])]
        return {"rows": self.rows, "seconds": e[-1], "first_batch_s": self.first, "epoch1_s": e[0],
                "epoch2_s": min(later) if later else None, **extra}


def table_rows(data: Path, table: str) -> int:
    """Rows of a table of the data folder at the tag the runs read (counted after the clock stopped)."""
    import lance

    return lance.dataset(str(data / table), version=TAG).count_rows()


def _children_memory() -> list[dict]:
    """Per child process: peak RSS, PSS (shared pages split between their users) and USS (its private pages)."""
    out = []
    me = os.getpid()
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) != me:
                continue
            hwm = next(int(ln.split()[1]) for ln in (p / "status").read_text().splitlines() if ln.startswith("VmHWM:"))
            roll = {ln.split(":")[0]: int(ln.split()[1]) for ln in (p / "smaps_rollup").read_text().splitlines()[1:]}
            uss = roll.get("Private_Clean", 0) + roll.get("Private_Dirty", 0)
            out.append({"pid": int(p.name), "peak_rss_mb": hwm / 1024, "pss_mb": roll["Pss"] / 1024, "uss_mb": uss / 1024})
        except (OSError, StopIteration, ValueError, IndexError):
            continue
    return out


def run_mmfs(data: Path, shuffle, cache: bool = True, workers: int = 0, table: str = "features.lance",
             columns=COLUMNS, epochs: int = EPOCHS) -> dict:
    from mmfs_loader import FeatureDataset, Reading

    clock = Clock()
    ds = FeatureDataset(str(data / table), tag=TAG, columns=columns, shuffle=shuffle, seed=0, batch_size=BATCH,
                        reading=Reading(cache_bytes=(512 << 20) if cache else 0))
    loader = ds.dataloader(num_workers=workers, persistent_workers=workers > 0)
    mem: list[dict] = []
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for b in loader:
            clock.batch(len(b["id"]))
        clock.epoch()
        if workers and epoch == epochs - 1:
            mem = _children_memory()
    return clock.result(table_rows(data, table) * epochs, workers=mem)


def run_lance_torch(data: Path, shuffle: bool) -> dict:
    import lance
    from lance.sampler import FullScanSampler, ShardedBatchSampler
    from lance.torch.data import LanceDataset

    clock = Clock()
    ds = lance.dataset(str(data / "features.lance"), version=TAG)
    sampler = ShardedBatchSampler(0, 1, randomize=True, seed=0) if shuffle else FullScanSampler()
    # `id` (a string) is left out: LanceDataset's tensor conversion only takes numbers.
    loader = LanceDataset(ds, batch_size=BATCH, columns=COLUMNS, sampler=sampler, auto_detect_rank=False)
    for _ in range(EPOCHS):
        for b in loader:
            clock.batch(len(b["height"]))
        clock.epoch()
    return clock.result(table_rows(data, "features.lance") * EPOCHS)


def run_streaming(data: Path, limit: int = 25_600) -> dict:
    """``lancedb.streaming.StreamingDataset`` as its documentation shows it:
    ``DataLoader(StreamingDataset(table, shuffle_seed=...), batch_size=256)``. It yields rows one by one
    (Python values), so a whole epoch takes minutes here: the first ``limit`` rows are timed."""
    import lancedb
    from lancedb.streaming import StreamingDataset
    from torch.utils.data import DataLoader

    clock = Clock()
    tbl = lancedb.connect(str(data)).open_table("features")
    tbl.checkout(TAG)
    loader = DataLoader(StreamingDataset(tbl, shuffle_seed=0, columns=COLUMNS), batch_size=BATCH)
    for b in loader:
        clock.batch(len(b["height"]))
        if clock.rows >= limit:
            break
    clock.epoch()
    return clock.result(min(table_rows(data, "features.lance"), -(-limit // BATCH) * BATCH), partial_epoch=True)


def run_webdataset(data: Path) -> dict:
    import torch
    import webdataset as wds

    clock = Clock()
    shards = sorted(str(p) for p in (data / "wds").glob("*.tar"))
    pipe = (
        wds.WebDataset(shards, shardshuffle=len(shards), seed=0, empty_check=False)
        .shuffle(2000, seed=0).decode().to_tuple("__key__", "emb.npy", "json").batched(BATCH)
    )
    for _keys, emb, _meta in pipe:
        x = torch.from_numpy(emb) if not isinstance(emb, torch.Tensor) else emb
        clock.batch(len(x))
    clock.epoch()
    return clock.result(table_rows(data, "features.lance"))


def run_parquet(data: Path) -> dict:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    clock = Clock()
    t = pq.read_table(data / "features.parquet", columns=["id", *COLUMNS]).combine_chunks()
    perm = np.random.default_rng(0).permutation(len(t))
    for s in range(0, len(t), BATCH):
        b = t.take(pa.array(perm[s : s + BATCH]))
        emb = torch.from_numpy(b["clip_embedding"].combine_chunks().flatten().to_numpy().reshape(len(b), 512).copy())
        _ = {c: torch.from_numpy(b[c].to_numpy()) for c in COLUMNS[1:]}, b["id"].to_pylist()
        clock.batch(len(emb))
    clock.epoch()
    return clock.result(table_rows(data, "features.lance"))


def run_big_lance(data: Path) -> dict:
    """LanceDataset's sequential read of the big table (the reference of the windowed shuffle)."""
    import lance
    from lance.sampler import FullScanSampler
    from lance.torch.data import LanceDataset

    clock = Clock()
    ds = lance.dataset(str(data / "big.lance"), version=TAG)
    loader = LanceDataset(ds, batch_size=BATCH, columns=["clip_embedding"], sampler=FullScanSampler(), auto_detect_rank=False)
    for b in loader:
        clock.batch(len(b["clip_embedding"]) if isinstance(b, dict) else len(b))  # one column: a bare tensor
    clock.epoch()
    return clock.result(table_rows(data, "big.lance"))


CLIP_EPOCHS = 4


def run_clips_mmfs(data: Path, workers: int, align: str) -> dict:
    """FeatureDataset(clip=...) through its DataLoader: clips from the inline blobs, decoded in the
    DataLoader's worker processes (one decode thread each)."""
    from mmfs_loader import ClipSpec, FeatureDataset, Reading

    clock = Clock()
    ds = FeatureDataset(str(data / "clips.lance"), columns=["file_name"], clip=ClipSpec(frames=8, size=224, align=align),
                        batch_size=4, shuffle=True, seed=0, reading=Reading(decode_threads=1))
    loader = ds.dataloader(num_workers=workers, persistent_workers=workers > 0)
    for epoch in range(CLIP_EPOCHS):
        loader.set_epoch(epoch)
        for b in loader:
            assert b["clip_ok"].all() and b["frames"].shape[1:] == (8, 3, 224, 224)
            clock.batch(len(b["id"]))
        clock.epoch()
    return _steady(clock, len(clip_paths(data)) * CLIP_EPOCHS)


def clip_paths(data: Path) -> list[str]:
    """The clip videos: the files on disk (the same videos as the rows of ``clips.lance``)."""
    import lance

    paths = sorted(str(p) for p in (data / "clips").glob("*.mp4"))
    expect_count("rows of clips.lance (one per file of clips/)", lance.dataset(str(data / "clips.lance")).count_rows(), len(paths))
    return paths


class PlainClips:
    """What a team writes without MMFS: a map-style dataset of mp4 paths; per item PyAV opens the file,
    draws a start, seeks to the keyframe before it, decodes up to it and keeps 8 consecutive frames,
    scaled by FFmpeg so the short side is 224, centre-cropped."""

    def __init__(self, paths: list[str], frames: int = 8, size: int = 224, seed: int = 0) -> None:
        self.paths, self.frames, self.size, self.seed = paths, frames, size, seed

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        import random

        import av
        import numpy as np
        import torch

        rng = random.Random(self.seed * 1_000_003 + i)
        with av.open(self.paths[i]) as c:
            s = c.streams.video[0]
            fps = float(s.average_rate or 25)
            dur = float(s.duration * s.time_base) if s.duration else c.duration / 1e6
            start = rng.uniform(0, max(0.0, dur - self.frames / fps))
            c.seek(int(start / s.time_base), stream=s, backward=True, any_frame=False)
            out = []
            for f in c.decode(s):
                if f.time is not None and f.time < start - 0.5 / fps:
                    continue
                scale = self.size / min(f.width, f.height)
                w, h = round(f.width * scale / 2) * 2, round(f.height * scale / 2) * 2
                out.append(f.reformat(width=w, height=h, format="rgb24").to_ndarray())
                if len(out) == self.frames:
                    break
        while len(out) < self.frames:
            out.append(out[-1])
        a = np.stack(out)
        top, left = (a.shape[1] - self.size) // 2, (a.shape[2] - self.size) // 2
        a = a[:, top : top + self.size, left : left + self.size]
        return torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))


def run_clips_plain(data: Path, workers: int) -> dict:
    """PlainClips in a torch DataLoader with the same worker count (fork, as such loaders do)."""
    from torch.utils.data import DataLoader

    clock = Clock()
    paths = sorted(str(p) for p in (data / "clips").glob("*.mp4"))
    loader = DataLoader(PlainClips(paths), batch_size=4, shuffle=True, num_workers=workers, persistent_workers=workers > 0)
    for _ in range(CLIP_EPOCHS):
        for b in loader:
            assert b.shape[1:] == (8, 3, 224, 224)
            clock.batch(len(b))
        clock.epoch()
    return _steady(clock, len(paths) * CLIP_EPOCHS)


def _steady(clock: Clock, expected: int) -> dict:
    """Clips per second after the first batch (worker start-up left out: spawned workers import torch and
    Lance, forked ones do not), with the first batch's latency alongside; ``expected`` clips in all."""
    r = clock.result(expected)
    assert clock.first is not None
    r["seconds"] = clock.ends[-1] - clock.first
    r["rows"] = clock.rows - 4
    return r


def _windowed(window: int = 1024, buffer: int = 8192):
    from mmfs_loader import Shuffle

    return Shuffle(window=window, buffer=buffer)


RUNS = {
    "mmfs global shuffle": lambda d: run_mmfs(d, True),
    "mmfs global shuffle, 2 workers": lambda d: run_mmfs(d, True, workers=2),
    "mmfs global shuffle, take only": lambda d: run_mmfs(d, True, cache=False),
    "mmfs windowed shuffle": lambda d: run_mmfs(d, _windowed(), cache=False),
    "mmfs sequential": lambda d: run_mmfs(d, False),
    "lance torch (batch shuffle)": lambda d: run_lance_torch(d, True),
    "lance torch (sequential)": lambda d: run_lance_torch(d, False),
    "lancedb StreamingDataset": run_streaming,
    "webdataset": run_webdataset,
    "parquet (pyarrow)": run_parquet,
    "big: lance torch (sequential)": run_big_lance,
    "big: mmfs windowed shuffle": lambda d: run_mmfs(d, _windowed(), cache=False, table="big.lance",
                                                     columns=["clip_embedding"], epochs=1),
    "big: mmfs windowed shuffle, 2 workers": lambda d: run_mmfs(d, _windowed(), cache=False, workers=2,
                                                                table="big.lance", columns=["clip_embedding"], epochs=1),
    "clips plain PyAV files, 2 workers": lambda d: run_clips_plain(d, 2),
    "clips mmfs, 2 workers": lambda d: run_clips_mmfs(d, 2, "exact"),
    "clips mmfs keyframe-aligned, 2 workers": lambda d: run_clips_mmfs(d, 2, "keyframe"),
}
