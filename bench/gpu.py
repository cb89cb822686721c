"""Does the fill feed the model? Per feature: model alone vs the whole fill vs the decode ceiling.

Input: 720p H.264 videos (30 fps, ``--seconds`` long, unique bytes each) with a 1 s GOP and with a 10 s
GOP, stored inline in one Lance table and described by the engine: ``--videos`` per GOP for exact mode
and ``--keyframe-factor`` times as many for keyframe mode (whose decoding is that much faster, so every
fill lasts long enough to show its throughput rather than its fixed start-up).

For each GOP and sampling mode (``exact``, ``keyframe``):
- decode ceiling: the engine's worker pool decoding every row's frames (8 at 224 on the short side), no
  model, with 1 worker and with all workers (``--workers``, default the cores); frames decoded per
  frame taken (decode amplification).
For each feature, GOP and mode:
- pure network: the feature's ``compute`` on preprocessed pixels already on the device;
- model alone: uint8 frames decoded beforehand -> device preprocessing -> ``compute`` (what the engine
  does per batch);
- fill: ``fill_feature`` on a fresh copy of the table (rows, worker decoding, model, commits);
- ratios: model alone / pure network, fill / min(model alone, decode ceiling); GPU busy (NVML) when
  the model runs on CUDA.
Training clips: one pass of FeatureDataset(clip=...) over the 1 s GOP drop, decoded by the CPU and, where
present, by NVDEC, unaligned and keyframe-aligned.

Profiles: ``tiny`` (random-init test models, the default without CUDA) and ``real`` (the real
architectures with random weights: ViT-B/32 and ViT-L/14 CLIP, Depth Anything V2 Small; the default
with CUDA). Results go to stdout and, with ``--json``, to a file.

Usage: python bench/gpu.py [--videos 16] [--seconds 8] [--profile tiny|real] [--features clip_embedding,depth]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LANCE_LOG", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import lance  # noqa: E402
import torch  # noqa: E402

from bench.measured import NotMeasured, expect_count  # noqa: E402
from mmfs_assets import samples  # noqa: E402
from mmfs_assets.engine import tasks  # noqa: E402
from mmfs_assets.engine.batches import ModelRunner  # noqa: E402
from mmfs_assets.engine.decoders import default_workers  # noqa: E402
from mmfs_assets.engine.fill import fill_feature  # noqa: E402
from mmfs_assets.engine.gpu_busy import GpuBusy  # noqa: E402
from mmfs_assets.engine.pool import TaskFailed, WorkerPool  # noqa: E402
from mmfs_assets.engine.preprocess import pixels  # noqa: E402
from mmfs_assets.features import discover  # noqa: E402
from mmfs_assets.features.models import load_model, model_context  # noqa: E402
from mmfs_assets.features.spec import Clip  # noqa: E402
from mmfs_assets.ingest.describe import describe_partition  # noqa: E402
from mmfs_assets.ingest.ingest_drop import ingest_drop  # noqa: E402
from mmfs_loader.contract import schema as S  # noqa: E402
from mmfs_loader.contract.sql import equals  # noqa: E402
from mmfs_loader.contract.table import TableRef  # noqa: E402
from mmfs_loader.decode.nvdec import nvdec_available  # noqa: E402
from mmfs_loader.decode.video import VideoPlan, plan_columns  # noqa: E402

GOPS = {"gop1s": 30, "gop10s": 300}
MODES = ("exact", "keyframe")


def drop_of(gop: str, mode: str) -> str:
    return f"{gop}-{mode}"


def make_table(root: Path, counts: dict[str, int], seconds: float) -> str:
    """One drop per (GOP, mode), ``counts[mode]`` videos each (keyframe runs get more rows, so a fill
    lasts long enough that its fixed start-up cost does not hide its throughput)."""
    uri = str(root / "bench.lance")
    for gop_name, gop in GOPS.items():
        spec = samples.Spec("v.mp4", 1280, 720, 30, seconds, gop=gop, options={"preset": "veryfast", "sc_threshold": "0"})
        base = samples.write_video(root / f"{gop_name}.mp4", spec).read_bytes()
        for mode, n in counts.items():
            drop_id = drop_of(gop_name, mode)
            drop = root / drop_id
            drop.mkdir()
            for i in range(n):  # unique bytes per file (an id each), same decoded content
                (drop / f"v{i:03d}.mp4").write_bytes(base + f"{drop_id}{i}".encode())
            ingest_drop(drop, drop_id, uri, properties={})
            describe_partition(uri, drop_id, properties={})
            shutil.rmtree(drop)
    return uri


def rows_of(uri: str, drop_id: str, expected: int) -> list[dict]:
    """The drop's rows (with their plans' columns); exactly ``expected`` of them, or :class:`NotMeasured`."""
    ds = lance.dataset(uri)
    rows = ds.to_table(columns=plan_columns(ds.schema.names), filter=equals(S.DROP_ID, drop_id), with_row_id=True).to_pylist()
    expect_count(f"rows of drop {drop_id!r}", len(rows), expected)
    return rows


def decode_all(uri: str, rows: list[dict], frames: int, short: int | None, mode: str, workers: int) -> tuple[float, float, list]:
    """(videos/s, amplification, decoded results) with ``workers`` engine workers, no model."""
    ds = lance.dataset(uri)
    with WorkerPool(workers, initializer=tasks.open_table, initargs=(TableRef(uri), ds.version), depth=4) as pool:
        for t in [pool.submit(int) for _ in range(workers)]:  # wait until every worker is up
            pool.result(t)
        args = []
        for r in rows:
            plan = VideoPlan.from_row(r)
            args.append((r["_rowid"], plan, [float(t) for t in plan.targets(frames)], short, mode))
        t0 = time.perf_counter()
        out = [v for _, v in sorted(pool.map_unordered(tasks.decode_row, args), key=lambda x: x[0])]
        for o in out:  # into this process, as the engine does
            if isinstance(o, dict) and "frames" in o:
                o["frames"] = o["frames"].take()
        dt = time.perf_counter() - t0
    bad = [o for o in out if isinstance(o, TaskFailed) or "error" in o]
    if bad:
        raise RuntimeError(f"decode failed: {bad[0]}")
    expect_count("videos decoded", len(out), len(rows))
    decoded = sum(o["frames_decoded"] for o in out)
    taken = sum(int(o["frames"].shape[0]) for o in out)
    return len(rows) / dt, decoded / taken, out


def real_model_dirs(root: Path, wanted: list[str]) -> dict[str, tuple[str, dict[str, str]]]:
    """Feature -> (model dir, extra env) for the real architectures with random weights."""
    import open_clip
    from safetensors.torch import save_file

    out: dict[str, tuple[str, dict[str, str]]] = {}
    torch.manual_seed(0)
    for name, arch in (("clip_embedding", "ViT-B-32"), ("clip_vit_l14", "ViT-L-14")):
        if name not in wanted:
            continue
        d = root / f"{arch}-random"
        d.mkdir()
        model = open_clip.create_model(arch, pretrained=None)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(d / "open_clip_model.safetensors"))
        pp = {"size": 224, "mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]}
        (d / "open_clip_config.json").write_text(json.dumps({"model_cfg": open_clip.get_model_config(arch), "preprocess_cfg": pp}))
        out[name] = (str(d), {})
    if "depth" not in wanted:
        return out
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config, DPTImageProcessor

    d = root / "da-v2-small-random"
    backbone = Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
                            patch_size=14, image_size=518, out_features=["stage3", "stage6", "stage9", "stage12"],
                            reshape_hidden_states=False)
    cfg = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=384, neck_hidden_sizes=[48, 96, 192, 384],
                              fusion_hidden_size=64, head_hidden_size=32)
    DepthAnythingForDepthEstimation(cfg).save_pretrained(d)
    DPTImageProcessor(size={"height": 518, "width": 518}, keep_aspect_ratio=True, ensure_multiple_of=14, resample=3,
                      do_pad=False, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]).save_pretrained(d)
    out["depth"] = (str(d), {})
    return out


def load(feature, profile: str, root: Path, device: str, mode: str, dirs: dict, name: str):
    env = {feature.sampling_env: mode}
    if profile == "real":
        env[feature.model_env] = dirs[name][0]
    ctx = model_context(feature, profile="tiny" if profile == "tiny" else "pretrained", model_dir=str(root / "models"),
                        device=device, env=env)
    return load_model(feature, ctx)


def time_model(model, clips: list[Clip]) -> tuple[float, float | None, float | None, float | None]:
    """(model alone videos/s, pure network videos/s, GPU busy model alone, GPU busy network); the pure
    network is None for a model without device preprocessing (nothing to measure apart)."""
    run = ModelRunner(model, [])
    sync = torch.cuda.synchronize if str(model.device).startswith("cuda") else (lambda: None)
    bs = model.batch_size
    run(clips[:bs])  # warm-up
    sync()
    with GpuBusy(model.device) as busy:
        t0 = time.perf_counter()
        for i in range(0, len(clips), bs):
            run(clips[i : i + bs])
        sync()
        alone = len(clips) / (time.perf_counter() - t0)
    net, net_busy = None, None
    if model.preprocess is not None:
        batches = []
        for i in range(0, len(clips), bs):
            group = clips[i : i + bs]
            if len({tuple(c.frames.shape) for c in group}) == 1:
                px = pixels(torch.cat([torch.as_tensor(c.frames) for c in group]), model.preprocess, model.device,
                            model.dtype or torch.float32)
                batches.append((group, px))
        sync()
        with GpuBusy(model.device) as nb:
            t0 = time.perf_counter()
            n = 0
            for group, px in batches:
                model.compute(group, px)
                n += len(group)
            sync()
            net = n / (time.perf_counter() - t0)
        net_busy = nb.percent
        expect_count("videos through the pure network", n, len(clips))
    return alone, net, busy.percent, net_busy


def rate(v: float) -> str:
    """videos/s with three significant digits at most (CPU runs of real models are below 0.1/s)."""
    return f"{v:.1f}" if v >= 10 else f"{v:.2f}" if v >= 0.1 else f"{v:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--keyframe-factor", type=int, default=4, help="keyframe-mode drops hold this many times --videos")
    ap.add_argument("--profile", choices=["tiny", "real"], default="real" if torch.cuda.is_available() else "tiny")
    ap.add_argument("--features", default="clip_embedding,clip_vit_l14,depth" if torch.cuda.is_available() else "clip_embedding,depth",
                    help="comma-separated; clip_vit_l14 adds a 768-d CLIP group (ViT-L/14 with --profile real)")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    workers = args.workers or default_workers()
    feats = {f.name: f for f in discover()}
    wanted = args.features.split(",")
    report: dict = {"device": torch.cuda.get_device_name(0) if device == "cuda" else f"cpu ({os.cpu_count()} cores)",
                    "profile": args.profile, "videos": args.videos, "seconds": args.seconds, "workers": workers,
                    "decode": {}, "features": {}}
    print(f"== {report['device']}, profile {args.profile}, 1280x720 {args.seconds:g} s 30 fps videos: {args.videos} per GOP "
          f"for exact mode, {args.videos * args.keyframe_factor} for keyframe mode; {workers} decode workers")
    with tempfile.TemporaryDirectory(dir=os.environ.get("MMFS_BENCH_DIR")) as tmp:
        root = Path(tmp)
        counts = {"exact": args.videos, "keyframe": args.videos * args.keyframe_factor}
        uri = make_table(root, counts, args.seconds)
        dirs = real_model_dirs(root, wanted) if args.profile == "real" else {}
        if "clip_vit_l14" in wanted and "clip_vit_l14" not in feats:
            from mmfs_assets.features.catalog.clip_embedding import clip_feature

            feats["clip_vit_l14"] = clip_feature("clip_vit_l14", "MMFS_CLIPL", dim=768)
        ds = lance.dataset(uri)
        t0 = time.perf_counter()
        with WorkerPool(workers, initializer=tasks.open_table, initargs=(TableRef(uri), ds.version)) as pool:
            for t in [pool.submit(int) for _ in range(workers)]:
                pool.result(t)
            startup = time.perf_counter() - t0
        report["worker_startup_s"] = startup
        print(f"\n-- a fill's fixed cost: {workers} workers started and the table opened in each in {startup:.2f} s")
        print("\n-- decode ceiling (8 frames at 224, engine workers, no model)")
        print(f"{'input':8s} {'mode':9s} {'1 worker':>10s} {f'{workers} workers':>11s} {'scaling':>8s} {'frames decoded/taken':>21s}")
        for gop in GOPS:
            for mode in MODES:
                rows = rows_of(uri, drop_of(gop, mode), counts[mode])
                one, amp, _ = decode_all(uri, rows, 8, 224, mode, 1)
                many, _, _ = decode_all(uri, rows, 8, 224, mode, workers)
                report["decode"][f"{gop}/{mode}"] = {"videos_s_1": one, "videos_s_all": many, "amplification": amp}
                print(f"{gop:8s} {mode:9s} {one:8.1f}/s {many:9.1f}/s {many / one:7.2f}x {amp:21.2f}")
        for name in wanted:
            f = feats[name]
            print(f"\n-- {name}")
            print(f"{'input':8s} {'mode':9s} {'network':>9s} {'alone':>8s} {'fill':>8s} {'ceiling':>8s} "
                  f"{'alone/net':>9s} {'fill/min(alone,ceil)':>20s} {'busy alone/fill':>16s} {'ampl.':>6s}")
            for gop in GOPS:
                for mode in MODES:
                    rows = rows_of(uri, drop_of(gop, mode), counts[mode])
                    model = load(f, args.profile, root, device, mode, dirs, name)
                    k, short = model.frames.count, model.frames.short_side
                    ceil, _, decoded = decode_all(uri, rows, k, short, mode, workers)
                    clips = [Clip(r["_rowid"], d["frames"], d["timestamps"]) for r, d in zip(rows, decoded)]
                    if model.preprocess is None:
                        clips = [Clip(c.rowid, c.frames.numpy(), c.timestamps) for c in clips]
                    alone, net, busy_alone, _ = time_model(model, clips)
                    t_uri = str(root / "fill.lance")
                    shutil.rmtree(t_uri, ignore_errors=True)
                    shutil.copytree(uri, t_uri)
                    rep = fill_feature(t_uri, drop_of(gop, mode), f, model, properties={}, decode_workers=workers)
                    expect_count(f"rows the {name} fill computed ({gop}/{mode})", rep.rows_computed, len(rows))
                    fill = rep.rows_per_s
                    r = {"network_videos_s": net, "model_alone_videos_s": alone, "fill_videos_s": fill,
                         "decode_ceiling_videos_s": ceil, "alone_over_network": alone / net if net else None,
                         "fill_over_min": fill / min(alone, ceil), "gpu_busy_alone": busy_alone,
                         "gpu_busy_fill": rep.gpu_busy_percent, "amplification": rep.amplification,
                         "fill": rep.metrics()}
                    report["features"][f"{name}/{gop}/{mode}"] = r
                    ba = "-" if busy_alone is None else f"{busy_alone:.0f}%"
                    bf = "-" if rep.gpu_busy_percent is None else f"{rep.gpu_busy_percent:.0f}%"
                    ratio = "-" if not net else f"{alone / net:.2f}x"
                    net_s = "-" if net is None else f"{rate(net)}/s"
                    print(f"{gop:8s} {mode:9s} {net_s:>9s} {rate(alone):>6s}/s {rate(fill):>6s}/s {rate(ceil):>6s}/s {ratio:>9s} "
                          f"{fill / min(alone, ceil):19.2f}x {ba + ' / ' + bf:>16s} {rep.amplification:6.2f}")
        report["loader_clips"] = training_clips(uri, counts["exact"], workers)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=str))


#: the drop the training-clip pass reads: the 1 s GOP videos of exact mode
CLIPS_DROP = drop_of("gop1s", "exact")


def training_clips(uri: str, videos: int, workers: int, decoders: list[str] | None = None) -> dict[str, float]:
    """The training-clip section: clips/s of one loader pass over :data:`CLIPS_DROP` (``videos`` rows) per
    decoder (CPU, and NVDEC where it can run) and alignment, printed and returned."""
    print("\n-- training clips (FeatureDataset, 8 frames at 224, 1 s GOP, main process, batches of 8)")
    out: dict[str, float] = {}
    if decoders is None:
        decoders = ["cpu", "nvdec"] if nvdec_available() is None else ["cpu"]
    for decoder in decoders:
        for align in ("exact", "keyframe"):
            rate_ = loader_clips(uri, CLIPS_DROP, decoder, align, workers, videos)
            out[f"{decoder}/{align}"] = rate_
            print(f"decoder {decoder:6s} align {align:9s} {rate_:7.1f} clips/s")
    return out


def loader_clips(uri: str, drop_id: str, decoder: str, align: str, threads: int, expected: int) -> float:
    """Clips per second of one pass of the training loader over a drop (clip decoding in the main
    process: NVDEC's frames stay on the GPU, the CPU path uses ``threads`` decode threads). The pass must
    yield ``expected`` good clips (one per row of the drop), or :class:`NotMeasured`."""
    from mmfs_loader import ClipSpec, FeatureDataset, Reading

    ds = FeatureDataset(uri, columns=["file_name"], filter=equals(S.DROP_ID, drop_id), batch_size=8, shuffle=True,
                        clip=ClipSpec(frames=8, size=224, align=align), reading=Reading(decoder=decoder, decode_threads=threads))
    t0, n, bad = time.perf_counter(), 0, 0
    for b in ds.dataloader():
        bad += int((~b["clip_ok"]).sum())
        n += len(b["id"])
    dt = time.perf_counter() - t0
    expect_count(f"training clips from drop {drop_id!r} ({decoder}, {align})", n, expected)
    if bad:
        raise NotMeasured(f"training clips from drop {drop_id!r} ({decoder}, {align}): {bad} of {n} failed to decode")
    return n / dt


if __name__ == "__main__":
    main()
