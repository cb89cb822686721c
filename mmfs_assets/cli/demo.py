"""`mmfs demo`: sample videos in a new drop, the whole pipeline, a pinned read, a summary."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from rich.console import Console

from mmfs_assets import samples
from mmfs_assets.ingest.drops import READY_MARKER
from mmfs_assets.ingest.object_drops import ObjectDrops
from mmfs_assets.ingest.s3_client import is_s3_uri
from mmfs_assets.settings import Settings

DEMO_720P = samples.Spec("demo_1280x720_30fps_1s.mp4", 1280, 720, 30, 1.0, gop=15, options={"preset": "ultrafast"})
DEMO_QUERY = "SELECT COUNT(1) AS videos_720p_or_more FROM videos WHERE height*width >= 1280*720"
#: the metadata the demo shows per asset, in this order (``rows_with_errors``/``errors_per_group``: drop_stats;
#: ``errors``: a fill's rows with an error in its own group)
SUMMARY_KEYS = ("lance_version", "new_rows", "skipped_already_in_table", "rows", "errors", "rows_with_errors",
                "errors_per_group", "throughput_mb_s", "videos_per_s", "decoder", "decode_amplification",
                "seconds_decode_wait", "seconds_compute", "seconds_write")


def asset_line(asset: str, md: dict) -> str:
    """One asset's line of the demo's summary: its main numbers as ``key=value``."""
    from mmfs_assets.cli.render import plain

    return f"[green]✓[/green] {asset}: " + ", ".join(f"{k}={plain(md[k])}" for k in SUMMARY_KEYS if k in md)


def try_lines(example_id: str, drop_id: str) -> list[str]:
    """What to try next, one command per line (a ``|`` between them would read as a shell pipe)."""
    return ["try:",
            f"  mmfs search --like {example_id} -k 3",
            "  mmfs search --caption WORD",
            f"  mmfs snapshot show {drop_id}-snapshot",
            "  mmfs lineage"]


def next_drop_id(taken, prefix: str = "demo") -> str:
    """The first ``<prefix>-NNN`` for which ``taken(name)`` is false."""
    n = 1
    while taken(f"{prefix}-{n:03d}"):
        n += 1
    return f"{prefix}-{n:03d}"


def write_demo_files(staging: Path, n_good: int, with_bad: bool) -> None:
    """``n_good`` sample videos, one 720p clip, a duplicate and broken files, in ``staging``."""
    specs = (samples.GOOD_SPECS * (n_good // len(samples.GOOD_SPECS) + 1))[:n_good]
    good = [samples.write_video(staging / f"{i:03d}_{s.name}", s) for i, s in enumerate(specs)]
    samples.write_video(staging / DEMO_720P.name, DEMO_720P)
    if good:
        shutil.copy(good[0], staging / f"copy of {good[0].name}")
    if with_bad:
        bad = staging / "broken"
        samples.make_bad(bad, scratch=staging)


def make_demo_drop(settings: Settings, n_good: int, with_bad: bool = True) -> tuple[str, Path]:
    """A new drop with the demo files: a folder under a local drop dir (staged under ``_staging-*`` and
    renamed, so it appears complete in one step), or objects under an ``s3://`` drop dir (uploaded, then
    ``_READY``). Returns the drop id and a local folder holding the files."""
    if is_s3_uri(settings.drop_dir):
        drops = ObjectDrops(settings.drop_dir, settings.storage_options)
        names = set(drops.drop_names())
        drop_id = next_drop_id(names.__contains__)
        staging = Path(tempfile.mkdtemp(prefix=f"mmfs-{drop_id}-"))
        write_demo_files(staging, n_good, with_bad)
        for f in sorted(p for p in staging.rglob("*") if p.is_file()):
            drops.client.upload_file(str(f), drops.loc.bucket, drops.loc.child(drop_id).prefix + f.relative_to(staging).as_posix())
        drops.client.put_object(Bucket=drops.loc.bucket, Key=drops.loc.child(drop_id).prefix + READY_MARKER, Body=b"")
        return drop_id, staging
    drop_dir = Path(settings.drop_dir)
    drop_dir.mkdir(parents=True, exist_ok=True)
    drop_id = next_drop_id(lambda name: (drop_dir / name).exists())
    staging = drop_dir / f"_staging-{drop_id}"  # '_' folders are ignored by the drop sensor
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    write_demo_files(staging, n_good, with_bad)
    (staging / READY_MARKER).touch()
    final = drop_dir / drop_id
    staging.rename(final)  # the drop appears complete, in one step
    return drop_id, final


def run_demo(console: Console, n_good: int, ephemeral: bool = False) -> None:
    from mmfs_assets.cli.progress_bars import rich_progress
    from mmfs_assets.cli.render import Format, print_arrow, print_status
    from mmfs_assets.cli.run import dagster_instance, materialize_drop, profile_line, result_summary, step_failures
    from mmfs_loader.contract.query import sql
    from mmfs_loader.contract.sql import equals, literal
    from mmfs_loader.contract.status import table_status

    settings = Settings.from_env()
    console.rule("[bold]MMFS demo")
    console.print(f"table  [cyan]{settings.table_uri}[/cyan]\ndrops  [cyan]{settings.drop_dir}[/cyan]", highlight=False)
    console.print(profile_line(settings), highlight=False)
    instance = dagster_instance(ephemeral)
    with console.status("making sample videos with PyAV..."):
        drop_id, path = make_demo_drop(settings, n_good)
    n_files = sum(1 for p in path.rglob("*") if p.is_file() and not p.name.startswith("_"))
    console.print(f"made drop [bold]{drop_id}[/bold] with {n_files} files")
    with rich_progress(console):
        result = materialize_drop(drop_id, None, instance, settings, notify=lambda m: console.print(f"[yellow]{m}[/yellow]"))
    if not result.success:
        from mmfs_assets.cli.errors import CliError

        failed = "; ".join(f"{step}: {msg}" for step, msg in step_failures(result))
        raise CliError(f"the pipeline failed for drop {drop_id}: {failed}")
    for asset, md in result_summary(result):
        console.print(asset_line(asset, md), highlight=False)
        if asset == "videos":
            parts = [f"{md.get('new_rows', 0)} new to the table"]
            if md.get("skipped_already_in_table"):
                parts.append(f"{md['skipped_already_in_table']} already in it (same content, kept with their first drop)")
            if md.get("duplicates_in_drop"):
                parts.append(f"{md['duplicates_in_drop']} duplicate(s) inside the drop")
            console.print(f"  of the {n_files} files: " + ", ".join(parts), highlight=False)
    ref = settings.table_ref
    ds = ref.open()

    def query(text: str):
        return sql(ref.uri, text, version=ds.version, storage_options=ref.options)

    console.rule("status")
    print_status(table_status(ds), Format.table, console)
    console.rule(f"SQL at version {ds.version}")
    console.print(f"[dim]{DEMO_QUERY}[/dim]")
    print_arrow(query(DEMO_QUERY), Format.table, console)
    q = ("SELECT left(file_name, 28) AS file, width, height, round(fps, 2) AS fps, num_frames AS frames, codec, "
         "left(coalesce(metadata_error, 'ok'), 40) AS status FROM videos "
         f"WHERE drop_id = {literal(drop_id)} ORDER BY metadata_error NULLS FIRST, file_name")
    print_arrow(query(q), Format.table, console)
    console.rule("features")
    q = ("SELECT left(file_name, 24) AS file, round(sharpness::DOUBLE, 1) AS sharp, round(motion::DOUBLE, 1) AS motion, "
         "len(clip_embedding) AS clip_d, len(depth_png) AS depth_k, left(caption, 24) AS caption FROM videos "
         f"WHERE drop_id = {literal(drop_id)} AND clip_embedding_error IS NULL ORDER BY file_name")
    print_arrow(query(q), Format.table, console)
    console.rule("loader pass (mmfs_loader.FeatureDataset)")
    from mmfs_assets.cli.loader_pass import loader_pass

    loader_pass(console, settings, drop_id)
    console.rule("search (the search_indices asset does this after fills in the UI)")
    from mmfs_assets.table.indices import VECTOR_MIN_ROWS, ensure_search_indices

    idx = ensure_search_indices(ref)
    first = ref.open().to_table(columns=["id"], filter=f"{equals('drop_id', drop_id)} AND clip_embedding IS NOT NULL",
                                limit=1)
    console.print(f"indices built: {', '.join(idx.created) or 'none new'} (vector search is exact below "
                  f"{VECTOR_MIN_ROWS:,} vectors, IVF_PQ above)", highlight=False)
    if first.num_rows:
        console.print("\n".join(try_lines(first["id"][0].as_py(), drop_id)), highlight=False)
    console.print(f"[bold green]done[/bold green]: drop {drop_id} is in {settings.table_uri} at version {ds.version}. "
                  "Start the UI with `make ui`.")
