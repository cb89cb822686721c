"""The `mmfs` command line (Typer + rich)."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer
from rich.console import Console

from mmfs_assets.cli.render import Format

app = typer.Typer(
    name="mmfs",
    help="MMFS: a multimodal feature store for video training data (Dagster + Lance).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
console = Console(stderr=True)
out = Console()


@app.command()
def demo(
    videos: Annotated[int, typer.Option("--videos", "-n", help="good sample videos to generate")] = 10,
    models: Annotated[Optional[str], typer.Option(
        help="tiny (random-init test models, the default here) or pretrained (real weights)")] = None,
    ephemeral: Annotated[bool, typer.Option(help="use a throwaway Dagster instance instead of $DAGSTER_HOME")] = False,
) -> None:
    """Make sample videos in a new drop, run the whole pipeline, print a summary and a SQL query."""
    from mmfs_assets.cli.demo import run_demo
    from mmfs_assets.instance.home import InstanceError

    if models not in (None, "tiny", "pretrained"):
        console.print(f"[red]error:[/red] --models must be tiny or pretrained, not {models!r}")
        raise typer.Exit(2)
    try:
        run_demo(out, videos, models, ephemeral=ephemeral)
    except InstanceError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from e


@app.command()
def materialize(
    partition: Annotated[str, typer.Option("--partition", "-p", help="drop folder name under MMFS_DROP_DIR")],
    select: Annotated[Optional[list[str]], typer.Option("--select", "-s", help="asset to materialize (repeatable; default all)")] = None,
    ephemeral: Annotated[bool, typer.Option(help="use a throwaway Dagster instance (no history, no pools) instead of $DAGSTER_HOME")] = False,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="table (a line per asset) or json (every asset's metadata, on stdout)")] = Format.table,
) -> None:
    """Register drop PARTITION if needed and materialize the selected assets for it, in this process."""
    from dagster import DagsterExecutionInterruptedError

    from mmfs_assets.cli.progress_bars import rich_progress
    from mmfs_assets.cli.run import MaterializeError, dagster_instance, materialize_drop, result_summary
    from mmfs_assets.instance.home import InstanceError

    if fmt is Format.csv:
        console.print("[red]error:[/red] materialize supports --format table or json")
        raise typer.Exit(2)
    try:
        instance = dagster_instance(ephemeral)
        with rich_progress(console):
            result = materialize_drop(partition, select, instance,
                                      notify=lambda msg: console.print(f"[yellow]{msg}[/yellow]"))
    except (MaterializeError, InstanceError) as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from e
    except (KeyboardInterrupt, DagsterExecutionInterruptedError) as e:
        console.print("[red]interrupted:[/red] the run was stopped and its pool slots released")
        raise typer.Exit(130) from e
    summary = result_summary(result)
    if fmt is Format.json:
        import json

        sys.stdout.write(json.dumps({"partition": partition, "success": result.success,
                                     "assets": {a: md for a, md in summary}}, default=str) + "\n")
    else:
        for asset, md in summary:
            console.print(f"[green]✓[/green] {asset} [{partition}]: " + ", ".join(
                f"{k}={v}" for k, v in md.items() if isinstance(v, (int, float, str)) and len(str(v)) < 80))
    if not result.success:
        for ev in result.all_events:
            if ev.is_step_failure:
                console.print(f"[red]failed:[/red] {ev.step_key}: {ev.step_failure_data.error.message.strip()}")
        raise typer.Exit(1)


home_app = typer.Typer(help="The Dagster home ($DAGSTER_HOME): check and repair.", no_args_is_help=True)
app.add_typer(home_app, name="home")


@home_app.command("check")
def home_check() -> None:
    """Initialise $DAGSTER_HOME if needed and report whether its storages are healthy (exit 1 if not)."""
    from mmfs_assets.instance.home import InstanceError, damage, home_from_env, init_home

    try:
        home = home_from_env()
        init_home(home)
    except InstanceError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(1) from e
    out.print(f"{home}: healthy" if not damage(home) else f"{home}: damaged")


@home_app.command("repair")
def home_repair() -> None:
    """Repair a $DAGSTER_HOME broken by concurrent first use (one schema stamp per storage; history kept)."""
    from mmfs_assets.instance.home import InstanceError, home_from_env, init_home, repair_home

    try:
        home = home_from_env()
        fixed = repair_home(home)
        init_home(home)
    except InstanceError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(1) from e
    for rel, rows in fixed.items():
        out.print(f"repaired {home / rel}: {len(rows)} schema stamps -> 1")
    out.print(f"{home}: healthy" + ("" if fixed else " (nothing to repair)"))


@app.command("sql")
def sql_cmd(
    query: Annotated[str, typer.Argument(help="DuckDB SQL; the table is `videos`")],
    version: Annotated[Optional[int], typer.Option(help="pin a table version")] = None,
    tag: Annotated[Optional[str], typer.Option(help="pin a table tag")] = None,
    fmt: Annotated[Format, typer.Option("--format", "-f")] = Format.table,
    unsafe_allow_files: Annotated[bool, typer.Option(
        "--unsafe-allow-files", help="let SQL read and write files and load extensions (off: read-only)")] = False,
) -> None:
    """Run read-only SQL over the table (exposed as `videos`), at the latest version or a pinned one."""
    import duckdb

    from mmfs_assets.settings import Settings
    from mmfs_loader.query import sql
    from mmfs_loader.table import TableNotFoundError, VersionNotFoundError

    s = Settings.from_env()
    try:
        t = sql(s.table_uri, query, version=version, tag=tag, storage_options=s.storage_options or None,
                allow_external_access=unsafe_allow_files)
    except (TableNotFoundError, VersionNotFoundError, ValueError, duckdb.Error) as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from e
    from mmfs_assets.cli.render import print_arrow

    print_arrow(t, fmt, out)


@app.command()
def snapshot(
    name: Annotated[str, typer.Argument(help="tag name for training jobs to pin (FeatureDataset(tag=...))")],
    version: Annotated[Optional[int], typer.Option(help="version to tag (default: the latest)")] = None,
) -> None:
    """Tag a table version (default the latest) so training jobs can pin it; tags are never moved."""
    from mmfs_assets.settings import Settings
    from mmfs_assets.table.tags import create_tag

    s = Settings.from_env()
    try:
        v = create_tag(s.table_uri, name, version, storage_options=s.storage_options or None)
    except (ValueError, OSError) as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from e
    out.print(f"tagged version {v} of {s.table_uri} as {name}")


@app.command()
def status(fmt: Annotated[Format, typer.Option("--format", "-f")] = Format.table) -> None:
    """Per drop: rows, and per column group how many rows are filled, errored and missing, and by whom."""
    from mmfs_assets.cli.render import print_health, print_status
    from mmfs_assets.settings import Settings
    from mmfs_loader.health import check_table
    from mmfs_loader.status import table_status
    from mmfs_loader.table import TableNotFoundError, open_table

    s = Settings.from_env()
    if fmt is Format.csv:
        console.print("[red]error:[/red] status supports --format table or json")
        raise typer.Exit(2)
    opts = s.storage_options or None
    health = check_table(s.table_uri, opts)
    if not health.latest_ok and health.latest_version is not None:
        print_health(s.table_uri, health, console)
        raise typer.Exit(1)
    try:
        ds = open_table(s.table_uri, storage_options=opts)
    except TableNotFoundError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from e
    except Exception as e:  # noqa: BLE001 - a damaged table is reported, not dumped as a traceback
        console.print(f"[red]error:[/red] the table at {s.table_uri} cannot be opened: {str(e).splitlines()[0]}")
        raise typer.Exit(1) from e
    print_status(table_status(ds), fmt, out)
    if fmt is Format.table:
        print_health(s.table_uri, health, console)


def main() -> None:
    app(prog_name="mmfs")


if __name__ == "__main__":
    sys.exit(main())
