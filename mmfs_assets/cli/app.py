"""The `mmfs` command line (Typer + rich)."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from mmfs_assets.cli import errors, store_commands
from mmfs_assets.cli.consoles import console, out
from mmfs_assets.cli.errors import CliError, CliUsageError
from mmfs_assets.cli.render import Format

app = typer.Typer(
    name="mmfs",
    help="MMFS: a multimodal feature store for video training data (Dagster + Lance).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=errors.ErrorHandlingGroup,
)


def package_version() -> str:
    """The installed mmfs distribution's version (``pyproject.toml``'s, as pip installed it)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mmfs")
    except PackageNotFoundError:
        return "unknown (not installed: pip install -e .)"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"mmfs {package_version()}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="show tracebacks (also MMFS_DEBUG=1)")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="print the version and exit")] = False,
) -> None:
    """MMFS: a multimodal feature store for video training data (Dagster + Lance).

    Errors print one message and a hint; exit code 2: the request cannot work as given, 1: it failed.
    """
    errors.set_debug(debug)


@app.command()
def demo(
    videos: Annotated[int, typer.Option("--videos", "-n", min=0, help="good sample videos to generate")] = 10,
    ephemeral: Annotated[bool, typer.Option(help="use a throwaway Dagster instance instead of $DAGSTER_HOME")] = False,
) -> None:
    """Make sample videos in a new drop, run the whole pipeline, print a summary and a SQL query.

    The models come from MMFS_MODEL_PROFILE like everywhere else (default tiny: random-init test models).
    """
    from mmfs_assets.cli.demo import run_demo

    run_demo(out, videos, ephemeral=ephemeral)


@app.command()
def materialize(
    partition: Annotated[str, typer.Option("--partition", "-p", help="drop folder name under MMFS_DROP_DIR")],
    select: Annotated[Optional[list[str]], typer.Option("--select", "-s", help="asset to materialize (repeatable; default all)")] = None,
    force: Annotated[bool, typer.Option("--force", help="recompute every row of the drop for the selected feature assets, even rows already current")] = False,
    ephemeral: Annotated[bool, typer.Option(help="use a throwaway Dagster instance (no history, no pools) instead of $DAGSTER_HOME")] = False,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="table (a line per asset) or json (every asset's metadata, on stdout)")] = Format.table,
) -> None:
    """Register drop PARTITION if needed and materialize the selected assets for it, in this process."""
    from dagster import DagsterExecutionInterruptedError

    from mmfs_assets.cli.progress_bars import rich_progress
    from mmfs_assets.cli.run import (
        dagster_instance,
        interrupted,
        materialize_drop,
        profile_line,
        result_summary,
        run_warnings,
        step_failures,
    )
    from mmfs_assets.settings import Settings

    if fmt is Format.csv:
        raise CliUsageError("materialize supports --format table or json")
    settings = Settings.from_env()
    console.print(profile_line(settings), highlight=False)
    if force and select and not set(select) - {"videos"}:
        raise CliUsageError("--force recomputes fills (video_metadata and the features); the videos ingest only "
                            "adds files that are not in the table yet", "add --select video_metadata or a feature")
    instance = dagster_instance(ephemeral)
    try:
        with rich_progress(console):
            result = materialize_drop(partition, select, instance, settings, force=force,
                                      notify=lambda msg: console.print(f"[yellow]{msg}[/yellow]", highlight=False),
                                      debug=errors.debug_enabled())
    except (KeyboardInterrupt, DagsterExecutionInterruptedError) as e:
        console.print("[red]interrupted:[/red] stopped before the run started; nothing was claimed")
        raise typer.Exit(130) from e
    if interrupted(result):
        console.print(f"[red]interrupted:[/red] run {result.run_id} was stopped; it holds no pool or device any more")
        raise typer.Exit(130)
    for line in run_warnings(instance, result.run_id):
        console.print(f"[yellow]warning:[/yellow] {line}", highlight=False)
    summary = result_summary(result)
    if fmt is Format.json:
        import json

        sys.stdout.write(json.dumps({"partition": partition, "success": result.success, "run_id": result.run_id,
                                     "assets": {a: md for a, md in summary}}, default=str) + "\n")
    else:
        from mmfs_assets.cli.render import plain

        for asset, md in summary:
            console.print(f"[green]✓[/green] {asset} [{partition}]: " + ", ".join(
                f"{k}={plain(v)}" for k, v in md.items() if isinstance(v, (int, float, str)) and len(str(v)) < 80),
                highlight=False)
    failures = step_failures(result)
    for step, message in failures:
        message = message.removeprefix(f"{step}: ")
        console.print(f"[red]error:[/red] {step} failed for drop {partition}: {message}", highlight=False)
    if failures or not result.success:
        if not failures:
            console.print(f"[red]error:[/red] run {result.run_id} for drop {partition} did not succeed "
                          "(see it in the UI, or rerun with --debug)", highlight=False)
        raise typer.Exit(1)


home_app = typer.Typer(help="The Dagster home ($DAGSTER_HOME): check and repair.", no_args_is_help=True)
app.add_typer(home_app, name="home")


@home_app.command("check")
def home_check() -> None:
    """Initialise $DAGSTER_HOME if needed and report whether its storages are healthy (exit 1 if not)."""
    from mmfs_assets.instance.home import damage, home_from_env, init_home

    home = home_from_env()
    init_home(home)
    if damage(home):
        raise CliError(f"{home}: damaged", "`mmfs home repair` keeps one schema stamp per storage and the run history")
    out.print(f"{home}: healthy")


@home_app.command("repair")
def home_repair() -> None:
    """Repair a $DAGSTER_HOME broken by concurrent first use (one schema stamp per storage; history kept)."""
    from mmfs_assets.instance.home import home_from_env, init_home, repair_home

    home = home_from_env()
    fixed = repair_home(home)
    init_home(home)
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
    from mmfs_assets.cli.render import print_arrow
    from mmfs_assets.cli.tiny_notes import print_note, sql_note
    from mmfs_assets.settings import Settings
    from mmfs_loader.contract.query import sql

    s = Settings.from_env()
    t = sql(s.table_uri, query, version=version, tag=tag, storage_options=s.storage_options or None,
            allow_external_access=unsafe_allow_files)
    print_arrow(t, fmt, out)
    if t.num_rows:
        print_note(console, sql_note(s.table_ref, t.column_names, version, tag))


@app.command()
def status(
    fmt: Annotated[Format, typer.Option("--format", "-f")] = Format.table,
    drop: Annotated[Optional[list[str]], typer.Option("--drop", "-d", help="only this drop (repeatable; read through the drop_id index)")] = None,
) -> None:
    """Per drop: rows, per column group filled / errored / missing and by whom, stale features, refused drops,
    drops not (fully) ingested and why, damaged versions and orphan files."""
    from mmfs_assets.cli.render import (
        health_record,
        print_attention,
        print_health,
        print_refused,
        print_stale,
        print_status,
        status_records,
    )
    from mmfs_assets.cli.tiny_notes import print_note, tiny_groups, tiny_note
    from mmfs_assets.settings import Settings
    from mmfs_assets.staleness import refused_drops, settings_expectations, stale_features
    from mmfs_loader.contract import leases
    from mmfs_loader.contract.health import check_table
    from mmfs_loader.contract.status import table_status

    if fmt is Format.csv:
        raise CliUsageError("status supports --format table or json")
    s = Settings.from_env()
    opts = s.storage_options or None
    refused = refused_drops(s.drop_dir, s.storage_options or None)
    attention = drops_attention(s, drop)
    if fmt is Format.table:  # before the table is opened: a refused or waiting drop may be why there is no table yet
        print_refused(refused, out)
        print_attention(attention, out)
    health = check_table(s.table_uri, opts)
    if not health.latest_ok and health.latest_version is not None:
        print_health(s.table_uri, health, console)
        raise typer.Exit(1)
    ds = s.table_ref.open()
    drops = table_status(ds, drop)
    if drop:  # a typo must not print an empty status
        store_commands.check_drops(s, ds, drop, drops)
    stale = stale_features(drops, settings_expectations(s))
    held = leases.active(s.table_ref)
    if fmt is Format.json:
        import json

        sys.stdout.write(json.dumps({
            "table": s.table_uri, "version": ds.version, "drops": status_records(drops),
            "stale": [st.record() for st in stale], "refused_drops": refused,
            "drops_not_ingested": [a.record() for a in attention], "health": health_record(health),
            "leases": [{"holder": h.label, "version": h.version, "expires": h.expires} for h in held],
        }) + "\n")
        return
    print_status(drops, fmt, out)
    print_stale(stale, out)
    tiny = tiny_groups({g: gs.producers for d in drops for g, gs in d.groups.items() if gs.producers})
    print_note(console, tiny_note(tiny, "the values counted here are test values, not features to train on"))
    for h in held:  # fills running (anywhere) and training jobs reading: what maintenance keeps and rollback waits for
        out.print(("running fill: " if h.fill else "reading: ") + h.describe(), highlight=False)
    print_health(s.table_uri, health, console)


def drops_attention(s, drops: list[str] | None) -> list:
    """Drops waiting to be ready, ready but not ingested, or holding files not ingested (``mmfs status``)."""
    from mmfs_assets.ingest.drop_source import drop_source
    from mmfs_assets.ingest.pending import DropAttention, drops_needing_attention

    try:
        return drops_needing_attention(drop_source(s.drop_dir, s.storage_options or None), s.table_ref,
                                       s.drop_quiet_seconds, drops=drops)
    except Exception as e:  # noqa: BLE001 - said in the report, never a traceback: the rest of the status still helps
        return [DropAttention(str(s.drop_dir), "cannot be checked", f"the drops cannot be listed or compared with "
                              f"the table: {type(e).__name__}: {errors.clean_message(e)}")]


store_commands.register(app)


def main() -> None:
    app(prog_name="mmfs")


if __name__ == "__main__":
    main()
