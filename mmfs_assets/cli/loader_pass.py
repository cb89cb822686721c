"""The demo's loader pass: tag the table, then read the drop through mmfs_loader as a training job would."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mmfs_assets.settings import Settings
from mmfs_assets.store import snapshots
from mmfs_loader.contract.sql import equals

COLUMNS = ["clip_embedding", "caption", "height"]
CLIP = dict(frames=8, size=112)


def loader_pass(console: Console, settings: Settings, drop_id: str) -> None:
    from mmfs_loader import FeatureDataset, Guard, ProvenanceError

    so = settings.storage_options or None
    tag = f"{drop_id}-snapshot"
    m = snapshots.create(settings.table_ref, tag)
    console.print(f"tagged version {m.version} as [bold]{tag}[/bold] (`mmfs snapshot show {tag}` prints its manifest)")
    kw = dict(tag=tag, columns=COLUMNS, filter=equals("drop_id", drop_id), shuffle=True, seed=0, clip=CLIP,
              batch_size=4, storage_options=so)
    t0 = time.perf_counter()
    try:
        ds = FeatureDataset(settings.table_uri, **kw)
    except ProvenanceError as e:
        console.print(f"[yellow]the provenance guard refused the drop:[/yellow] {e}\nreading the complete rows only")
        ds = FeatureDataset(settings.table_uri, guard=Guard(drop_incomplete=True), **kw)
    console.print(
        f"FeatureDataset: {ds.num_rows} rows of {drop_id} (quarantined left out: {ds.quarantined}), "
        f"columns {ds.columns}, clips {CLIP}, producers:"
    )
    for g, c in ds.group_counts.items():
        for p, n in c.producers.items():
            console.print(f"  {g}: {n} x [dim]{p}[/dim]")
    loader = ds.dataloader()
    rows = frames = 0
    shape = None
    bars = Progress(TextColumn("[bold]loader pass"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console)
    with bars:
        task = bars.add_task("read", total=len(loader))
        for batch in loader:
            rows += len(batch["id"])
            frames += int(batch["clip_ok"].sum()) * CLIP["frames"]
            shape = shape or {k: tuple(v.shape) for k, v in batch.items() if hasattr(v, "shape")}
            bars.advance(task)
    dt = time.perf_counter() - t0
    console.print(f"read {rows} samples ({frames} decoded frames) in {dt:.2f} s = {rows / dt:.1f} samples/s; batch shapes {shape}")
    console.print(f"state after the pass {loader.state_dict()}; recipe fingerprint {ds.fingerprint}")
