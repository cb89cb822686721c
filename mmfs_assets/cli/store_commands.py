"""`mmfs snapshot ...`, `mmfs rollback`, `mmfs search`, `mmfs maintain`, `mmfs lineage`: operating the store."""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from mmfs_assets.cli.consoles import console, out
from mmfs_assets.cli.errors import CliError, CliUsageError
from mmfs_assets.cli.render import Format
from mmfs_assets.cli.tiny_notes import print_note, search_note, tiny_groups, tiny_note

snapshot_app = typer.Typer(help="Snapshots: tagged table versions with a manifest, what training jobs pin.",
                           no_args_is_help=True)
FormatOpt = Annotated[Format, typer.Option("--format", "-f", help="table or json")]


def _settings():
    from mmfs_assets.settings import Settings

    return Settings.from_env()


def _no_csv(fmt: Format, cmd: str) -> None:
    if fmt is Format.csv:
        raise CliUsageError(f"{cmd} supports --format table or json")


def _json(obj) -> None:
    sys.stdout.write(json.dumps(obj, default=str) + "\n")


def _writers() -> list[str]:
    """Runs writing the table, from $DAGSTER_HOME when it is set (without it no run can be seen)."""
    import os

    if not os.environ.get("DAGSTER_HOME"):
        return []
    from mmfs_assets.instance.home import open_instance
    from mmfs_assets.instance.writers import active_writers

    with open_instance() as instance:
        return active_writers(instance)


def print_manifest(m, fmt: Format) -> None:
    if fmt is Format.json:
        _json(m.record())
        return
    out.print(f"[bold]{m.name}[/bold]: version {m.version}, {m.rows} rows in {len(m.partitions)} partition(s)"
              + ("" if m.stored else " [yellow](no stored manifest: computed from the version)[/yellow]"), highlight=False)
    if m.required:
        out.print(f"required features: {', '.join(m.required)}", highlight=False)
    t = Table("group", "filled", "errored", "missing", "producers (rows)")
    for g, gm in sorted(m.groups.items()):
        t.add_row(g, str(gm.filled), str(gm.errored), str(gm.missing),
                  "\n".join(f"{n} x {p}" for p, n in sorted(gm.producers.items(), key=lambda kv: -kv[1])) or "-")
    for col in t.columns:
        col.overflow = "fold"
    out.print(t)
    out.print("partitions: " + ", ".join(f"{d} ({n})" for d, n in sorted(m.partitions.items())), highlight=False)


@snapshot_app.command("create")
def snapshot_create(
    name: Annotated[str, typer.Argument(help="tag name training jobs pin (FeatureDataset(tag=...))")],
    version: Annotated[Optional[int], typer.Option(help="version to snapshot (default: the latest)")] = None,
    require: Annotated[Optional[list[str]], typer.Option("--require", "-r", help="feature that must be complete, from one producer (repeatable)")] = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Check the required features, tag the version and store its manifest; refuses, listing what is missing."""
    from mmfs_assets.store import snapshots
    from mmfs_loader.contract.table import check_tag_name

    _no_csv(fmt, "snapshot create")
    try:
        check_tag_name(name, new=True)
    except ValueError as e:
        example = f"v{name}" if name.isascii() and name.isdigit() else "train-v3"
        raise CliUsageError(str(e), f"pick a name that follows the rule, e.g. `mmfs snapshot create {example}`") from e
    try:
        m = snapshots.create(_settings().table_ref, name, version=version, require=require)
    except snapshots.SnapshotRefused as e:
        raise CliUsageError(str(e).split(": ", 1)[0] + ":\n  - " + "\n  - ".join(e.problems),
                       "fill the missing rows (`mmfs materialize -p DROP -s FEATURE`), or snapshot without --require") from e
    tiny = tiny_groups({g: gm.producers for g, gm in m.groups.items()})
    print_note(console, tiny_note(tiny, "this snapshot's values of them mean nothing for training"
                                  + (" (--require checks that values exist, not that they are real)" if require else "")))
    if fmt is Format.json:
        _json(m.record())
        return
    out.print(f"tagged version {m.version} as {name}: {m.rows} rows, {len(m.partitions)} partition(s)", highlight=False)


@snapshot_app.command("show")
def snapshot_show(name: Annotated[str, typer.Argument()], fmt: FormatOpt = Format.table) -> None:
    """A snapshot's manifest: version, rows, partitions, columns, producers with counts."""
    from mmfs_assets.store import snapshots

    _no_csv(fmt, "snapshot show")
    m = snapshots.show(_settings().table_ref, name)
    print_manifest(m, fmt)
    print_note(console, tiny_note(tiny_groups({g: gm.producers for g, gm in m.groups.items()}),
                                  "this snapshot's values of them mean nothing for training"))


@snapshot_app.command("list")
def snapshot_list(fmt: FormatOpt = Format.table) -> None:
    """Every snapshot (tag) with its version, rows, required features and creation time."""
    from mmfs_assets.store import snapshots

    _no_csv(fmt, "snapshot list")
    rows = snapshots.listing(_settings().table_ref)
    if fmt is Format.json:
        _json(rows)
        return
    if not rows:
        out.print("no snapshots yet: `mmfs snapshot create NAME` tags the latest version", highlight=False)
        return
    t = Table("name", "version", "rows", "required", "created")
    for r in rows:
        t.add_row(r["name"], str(r["version"]), "-" if r["rows"] is None else str(r["rows"]), r["required"] or "-",
                  r["created_at"] or "[dim]tag without manifest[/dim]")
    out.print(t)


@snapshot_app.command("delete")
def snapshot_delete(name: Annotated[str, typer.Argument()]) -> None:
    """Delete a snapshot (tag and manifest); maintenance may then clean its version up after the retention."""
    from mmfs_assets.store import snapshots

    v = snapshots.delete(_settings().table_ref, name)
    out.print(f"deleted snapshot {name} (version {v})", highlight=False)


ROLLBACK_MOVED_HINT = "wait for the fill(s) to finish or stop them, then run the rollback again"
ROLLBACK_FILL_HINT = ("wait for the fill(s) to finish or stop them (a fill that was killed holds its lease until "
                      "it expires: `mmfs status` lists the leases), then run the rollback again")


def rollback(
    to: Annotated[str, typer.Option("--to", help="snapshot name or version number to read as again "
                                    "(tag:NAME or version:N when a snapshot is named like a version)")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="only say what the rollback would undo")] = False,
    fmt: FormatOpt = Format.table,
) -> None:
    """Make the table read as TAG or VERSION again, as a new commit (history and snapshots kept).

    Exit code 2 for a target that cannot work (unknown, ambiguous), 1 when it cannot run now (a run is
    writing the table, the table moved since the plan, another rollback is running) or failed."""
    from contextlib import nullcontext

    from mmfs_assets.store import rollback as rb
    from mmfs_assets.store.rollback_journal import finish_pending

    _no_csv(fmt, "rollback")
    table = _settings().table_ref
    journal = None if dry_run else _journal()
    try:
        with journal.locked() if journal is not None else nullcontext():
            earlier = finish_pending(table, journal, mark_rerun) if journal is not None else []
            for e, flagged in earlier:
                console.print(f"finished flagging the rollback to {e.target_label} that stopped after committing "
                              f"version {e.new_version}: marked {len(flagged)} asset partition(s) as needing a re-run"
                              + (f": {', '.join(flagged[:10])}" if flagged else ""), highlight=False)
            try:
                p = rb.plan(table, to)
            except rb.AmbiguousTargetError as e:
                raise CliUsageError(str(e), e.hint) from e
            marked, flag_error = ([], None) if dry_run or p.current else _roll_back(table, p, journal)
    except rb.RollbackBusyError as e:
        raise CliError(str(e), "wait for it to finish, then run the rollback again") from e
    _print_rollback(p, dry_run, fmt, marked, earlier, flag_error)
    if flag_error is not None:
        from mmfs_assets.cli.errors import clean_message

        raise CliError(f"the rollback committed (version {p.new_version} reads as {p.target_label}), but flagging the "
                       f"undone partitions failed: {clean_message(flag_error)}",
                       f"run `mmfs rollback --to {to}` again: it finishes the flagging of a committed rollback first")


def _journal():
    """Where rollbacks record their plans until flagged: $DAGSTER_HOME/mmfs-rollbacks (None without a home)."""
    import os

    if not os.environ.get("DAGSTER_HOME"):
        return None
    from mmfs_assets.instance.home import home_from_env
    from mmfs_assets.store.rollback_journal import JOURNAL_DIR, Journal

    return Journal(home_from_env() / JOURNAL_DIR)


def _roll_back(table, p, journal) -> tuple[list[str], BaseException | None]:
    """Restore (refusing while runs write the table or the table moves), then flag: (flagged, flag error)."""
    from mmfs_assets.store import rollback as rb

    if journal is None:
        console.print("[yellow]warning:[/yellow] DAGSTER_HOME is not set: runs writing the table cannot be "
                      "seen, and the undone partitions are not flagged in the UI", highlight=False)
    busy = _writers()
    if busy:
        raise CliError("the table is being written by " + "; ".join(busy),
                       "wait for those runs to finish (or cancel them in the UI), then roll back")
    if journal is not None:
        journal.save(table, p)  # before the restore: a kill after it leaves the flagging to the next rollback
    try:
        rb.execute(table, p)
    except (rb.TableMovedError, rb.FillRunningError) as e:
        if journal is not None:
            journal.done(p)
        raise CliError(str(e), ROLLBACK_MOVED_HINT if isinstance(e, rb.TableMovedError) else ROLLBACK_FILL_HINT) from e
    if journal is None:
        return [], None
    journal.save(table, p)  # with the restore's version and the commits it undid while it ran
    try:
        marked = mark_rerun(p.undone, p.target_label)
    except Exception as e:  # noqa: BLE001 - the restore committed: report it, then the flagging error
        return [], e
    journal.done(p)
    return marked, None


def _print_rollback(p, dry_run: bool, fmt: Format, marked: list[str], earlier, flag_error) -> None:
    if fmt is Format.json:
        _json({"target": p.target, "latest": p.latest, "new_version": p.new_version, "dry_run": dry_run,
               "undone": [u.record() for u in p.undone], "marked_for_rerun": marked,
               "raced": [r.record() for r in p.raced],
               "finished_earlier": [{**e.record(), "marked_for_rerun": f} for e, f in earlier],
               **({"flag_error": str(flag_error)} if flag_error is not None else {})})
        return
    if p.current:
        out.print(f"the table already reads as {p.target_label}: nothing to do", highlight=False)
        return
    verb = "would undo" if dry_run else "undid"
    if p.new_version is not None:
        out.print(f"version {p.new_version} now reads as {p.target_label} (was version {p.latest})", highlight=False)
    t = Table("asset", "partition", f"what the rollback {verb}", title=None if p.undone else "nothing per partition")
    for u in p.undone:
        t.add_row(u.asset, u.partition, u.what)
    out.print(t)
    if p.raced:
        out.print(f"[yellow]warning:[/yellow] {len(p.raced)} commit(s) landed while the rollback ran and were undone "
                  f"too (their runs may have reported success): {', '.join(r.describe() for r in p.raced[:10])}",
                  highlight=False)
    if marked:
        out.print(f"marked {len(marked)} asset partition(s) as needing a re-run in the UI (a failed *_complete "
                  f"check per partition): {', '.join(marked[:10])}", highlight=False)


ROLLBACK_JOB = "mmfs_rollback"


def mark_rerun(undone, label: str) -> list[str]:
    """Flag the undone asset partitions in $DAGSTER_HOME: a failed ``<asset>_complete`` check on each fill
    partition (the UI lists it on the partition; a re-run passes it again), an observation on each
    ingest partition. Dagster's SQLite storage cannot wipe single partitions, so nothing is deleted.

    The flags are the events of one small run (job ``mmfs_rollback``), not runless events: Dagster keys
    check results by (asset, check, run, partition), and every runless result shares the empty run id, so a
    second rollback of the same partition would collide with the first (UNIQUE constraint failed)."""
    import os

    if not os.environ.get("DAGSTER_HOME") or not undone:
        return []
    import dagster as dg

    from mmfs_assets.instance.home import open_instance

    events: list = []
    marked: list[str] = []
    for u in {(u.asset, u.partition): u for u in undone}.values():
        text = f"rolled back to {label}: {u.what}; re-run this partition"
        if u.asset == "videos":
            events.append(dg.AssetObservation(
                dg.AssetKey(u.asset), partition=u.partition, description=text, metadata={"rolled_back": text}))
        else:
            check = "metadata_complete" if u.asset == "video_metadata" else f"{u.asset}_complete"
            events.append(dg.AssetCheckEvaluation(
                asset_key=dg.AssetKey(u.asset), check_name=check, passed=False, partition=u.partition,
                description=text, metadata={"rolled_back": text}))
        marked.append(f"{u.asset}[{u.partition}]")

    @dg.op(name="flag_rolled_back_partitions")
    def flag():
        yield from events
        yield dg.Output(None)

    @dg.job(name=ROLLBACK_JOB, description="Flags the partitions an `mmfs rollback` undid.")
    def job():
        flag()

    with open_instance() as instance:
        job.execute_in_process(instance=instance, tags={"mmfs/rollback": label},
                               run_config={"loggers": {"console": {"config": {"log_level": "ERROR"}}}})
    return marked


def search(
    text: Annotated[Optional[str], typer.Argument(help="text to embed with the stored vectors' model")] = None,
    like: Annotated[Optional[str], typer.Option("--like", help="video id: find its neighbours")] = None,
    caption: Annotated[Optional[str], typer.Option("--caption", help="words to find in captions (full-text index)")] = None,
    k: Annotated[int, typer.Option("-k", min=1, max=10_000, help="results")] = 10,
    where: Annotated[Optional[str], typer.Option("--where", help="SQL filter on the table's columns")] = None,
    tag: Annotated[Optional[str], typer.Option("--tag", help="search a snapshot")] = None,
    version: Annotated[Optional[int], typer.Option("--version", help="search a table version")] = None,
    column: Annotated[Optional[str], typer.Option("--column", help="embedding column (default: the first)")] = None,
    fmt: Annotated[Format, typer.Option("--format", "-f")] = Format.table,
) -> None:
    """Nearest videos to TEXT, to a video (--like ID), or videos whose caption matches (--caption WORDS)."""
    from mmfs_assets.cli.render import print_arrow
    from mmfs_assets.store import search as S
    from mmfs_assets.store.text_encoder import settings_encoder

    if sum(x is not None for x in (text, like, caption)) != 1:
        raise CliUsageError("give one of TEXT, --like ID or --caption WORDS")
    settings = _settings()
    table = settings.table_ref
    q = S.Query(k=k, where=where)
    if like is not None:
        hits = S.like(table, like, q, column=column, version=version, tag=tag)
    elif caption is not None:
        hits = S.by_caption(table, caption, q, version=version, tag=tag)
    else:
        hits = S.by_text(table, text or "", q, settings_encoder(settings), column=column, version=version, tag=tag)
    if hits:
        print_note(console, search_note(table, "caption" if caption is not None else column, caption is not None,
                                        where, version, tag))
    import pyarrow as pa

    print_arrow(pa.Table.from_pylist(hits) if hits else pa.table({"id": pa.array([], pa.string())}), fmt, out)


def maintain(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="say what would be compacted and removed")] = False,
    retention_days: Annotated[float, typer.Option("--retention-days", min=0, help="keep untagged versions this long")] = 7.0,
    fmt: FormatOpt = Format.table,
) -> None:
    """Optimise indices, compact small fragments (no writer active), remove old untagged versions and orphans."""
    from mmfs_assets.store.maintain import maintain as run_maintenance

    _no_csv(fmt, "maintain")
    rep = run_maintenance(_settings().table_ref, dry_run=dry_run, writers=_writers,
                          retention=timedelta(days=retention_days))
    if fmt is Format.json:
        _json(rep.record())
        return
    print_maintenance(rep, out)


def print_maintenance(rep, console_: Console) -> None:
    would = "would " if rep.dry_run else ""
    ix = rep.indices
    if ix is not None:
        console_.print(f"indices: created {', '.join(ix.created) or 'none'}; updated {', '.join(ix.optimized) or 'none'}"
                       + "".join(f"; {c}: {why}" for c, why in ix.skipped.items()), highlight=False)
    console_.print(f"compaction: {would}merge {rep.fragments_compacted} small fragment(s)"
                   + (f" into {rep.fragments_written}" if rep.fragments_written else "")
                   + f"; {rep.blob_fragments_kept} fragment(s) with large videos left as they are", highlight=False)
    console_.print(f"retention: {would}remove {rep.versions_removed} old version(s), {rep.bytes_removed / 1e6:.1f} MB "
                   f"(tagged versions are kept){f'; archived {rep.lineage_archived} commit records' if rep.lineage_archived else ''}",
                   highlight=False)
    console_.print(f"orphans: {would}delete {rep.orphans_removed} file(s), {rep.orphan_bytes / 1e6:.1f} MB", highlight=False)
    for s in rep.skipped:
        console_.print(f"[yellow]skipped:[/yellow] {s}", highlight=False)
    console_.print(f"table version {rep.version_before} -> {rep.version_after}", highlight=False)


def lineage(
    tag: Annotated[Optional[str], typer.Option("--tag", help="a snapshot")] = None,
    version: Annotated[Optional[int], typer.Option("--version", help="a table version")] = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Per column group: producers, the partitions and rows they cover, the versions and runs that wrote them."""
    from mmfs_assets.store.lineage import lineage as read_lineage

    _no_csv(fmt, "lineage")
    v, groups = read_lineage(_settings().table_ref, version=version, tag=tag)
    if fmt is Format.json:
        _json({"version": v, "groups": {g: gl.record() for g, gl in groups.items()}})
        return
    out.print(f"lineage of version {v}", highlight=False)
    t = Table("group", "producer (rows)", "partitions", "versions", "runs")
    for col in t.columns:
        col.overflow = "fold"
    for g, gl in groups.items():
        t.add_row(g, "\n".join(f"{n} x {p}" for p, n in gl.producers.items()) or "-",
                  str(len([d for d, c in gl.partitions.items() if c])), _ranges(gl.versions),
                  "\n".join(r[:8] for r in gl.run_ids[-5:]) + (f"\n(+{len(gl.run_ids) - 5} more)" if len(gl.run_ids) > 5 else ""),
                  end_section=True)
    out.print(t)


def _ranges(vs: list[int]) -> str:
    """[1, 2, 3, 7] -> '1-3, 7'."""
    out: list[str] = []
    for v in sorted(set(vs)):
        if out and out[-1].split("-")[-1].isdigit() and int(out[-1].split("-")[-1]) == v - 1:
            out[-1] = f"{out[-1].split('-')[0]}-{v}"
        else:
            out.append(str(v))
    return ", ".join(out) or "-"


def check_drops(settings, ds, asked: list[str], found) -> None:
    """Raise a usage error naming the known drops when a drop asked for (``mmfs status --drop``) is neither in
    the table (``found``: its status) nor a folder under MMFS_DROP_DIR: a typo must not read as "no rows"."""
    import difflib

    from mmfs_assets.ingest.drop_source import drop_source
    from mmfs_assets.ingest.drops import names_text
    from mmfs_assets.ingest.pending import drop_names
    from mmfs_loader.contract.status import drop_ids

    missing = [d for d in dict.fromkeys(asked) if d not in {st.drop_id for st in found}]
    if not missing:
        return
    try:
        source = drop_source(settings.drop_dir, settings.storage_options or None)
        folders = set(drop_names(source)) | set(source.refused())
    except Exception:  # noqa: BLE001 - the drops cannot be listed: judge by the table alone
        folders = set()
    unknown = [d for d in missing if d not in folders]
    if not unknown:
        return
    known = sorted(set(drop_ids(ds)) | folders)
    close = [c for d in unknown for c in difflib.get_close_matches(d, known, n=3, cutoff=0.6)]
    hint = (f"did you mean {names_text(list(dict.fromkeys(close)))}? " if close else "") + (
        f"known drops: {names_text(known)}" if known else "the table and MMFS_DROP_DIR hold no drops yet")
    raise CliUsageError(f"no drop {names_text(unknown)} in the table or under MMFS_DROP_DIR ({settings.drop_dir})",
                        hint)


def register(app: typer.Typer) -> None:
    app.add_typer(snapshot_app, name="snapshot")
    app.command("rollback")(rollback)
    app.command("search")(search)
    app.command("maintain")(maintain)
    app.command("lineage")(lineage)
