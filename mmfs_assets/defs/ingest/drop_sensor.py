"""The drop sensor: new ready drop -> `drops` partition + ingest run; files added to an ingested drop -> its
ingest again."""

import json
from collections.abc import Callable
from dataclasses import dataclass, field

import dagster as dg

from mmfs_assets.defs.ingest.partitions import DROPS, drops_partitions
from mmfs_assets.defs.ingest.videos import videos
from mmfs_assets.ingest.drops import DropRefusedError, Entry, ScanState, listing_signature, names_text
from mmfs_assets.ingest.ledger import accounted
from mmfs_assets.resources import DropFolderResource
from mmfs_loader.contract.table import TableRef

SENSOR_INTERVAL_S = 15
#: Ingested drops checked for files added later, per tick, in turn (listing a drop costs a walk of its folder or
#: a listing of its objects): with 1000 drops each is looked at every 1000 / 20 x 15 s = 12.5 minutes.
LATE_CHECK_PER_TICK = 20


def refused_summary(refused: dict[str, str], limit: int = 10) -> str:
    """The refused drops for a tick's skip reason: their names (the reasons are in the tick's log and `mmfs status`)."""
    names = sorted(refused)
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return (f"refused {len(names)} drop folder(s): {', '.join(repr(n) for n in names[:limit])}{more} "
            "(unsafe name, symlink or not a folder; `mmfs status` says why)")


@dg.sensor(
    name="drop_sensor",
    target=[videos],
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=("Registers each new ready drop (a folder under MMFS_DROP_DIR, or a prefix under an s3:// "
                 "MMFS_DROP_DIR) as a `drops` partition and requests its ingest run; requests the ingest of an "
                 "ingested drop again when files were added to it afterwards."),
)
def drop_sensor(context: dg.SensorEvaluationContext, drop_folder: DropFolderResource):
    source = drop_folder.source()
    quiet = drop_folder.quiet_seconds
    registered = set(context.instance.get_dynamic_partitions(DROPS))
    # The cursor remembers refused names and waiting drops (each is logged once, not every tick), for a bucket
    # where the listing of drop names resumes (see mmfs_assets.ingest.object_drops), the listings of drops with
    # future modification times (their quiet period runs from when a tick first saw them), and where the check
    # of ingested drops for late files resumes. Idempotency comes from the instance's registered partitions
    # and the run keys, not from the cursor.
    old = json.loads(context.cursor) if context.cursor else {}
    scan, state = source.scan(registered, quiet, ScanState.of(old.get("scan")))
    refused = scan.refused
    logged = set(old.get("refused", []))
    for name, reason in refused.items():
        if name not in logged:
            context.log.warning(f"refused drop: {reason}")
    # an incremental listing does not see refused names below its cursor: keep them until a full one
    kept = logged if not scan.full else logged & set(refused)
    known_refused = sorted(set(refused) | kept)

    late = check_late_files(source, _table, registered, quiet, old.get("late"), context.log)
    waits = {name: r.why for name, r in scan.why.items()} | late.waiting
    kinds = {name: r.kind for name, r in scan.why.items()} | dict.fromkeys(late.waiting, "late")
    was = old.get("waiting") or {}
    for name in sorted(waits):  # once per drop and kind of wait, not every tick
        if was.get(name) != kinds[name]:
            context.log.info(f"waiting for drop {name!r}: {waits[name]}")
    cursor = json.dumps({"refused": known_refused, "scan": state.record(), "late": late.state,
                         "waiting": kinds})
    ready = scan.ready
    if not ready and not late.requests:
        skip = f"no new ready drops in {source.root}"
        if scan.waiting:
            skip += f"; {len(scan.waiting)} still being written or not ready yet (no _READY)"
        if waits:
            skip += "; " + waiting_summary(waits)
        if known_refused:
            skip += f"; {refused_summary(dict.fromkeys(known_refused, ''))}"
        return dg.SensorResult(skip_reason=skip, cursor=cursor)
    return dg.SensorResult(
        dynamic_partitions_requests=[drops_partitions.build_add_request(ready)] if ready else [],
        run_requests=[dg.RunRequest(partition_key=d, run_key=f"ingest:{d}") for d in ready]
        + [dg.RunRequest(partition_key=d, run_key=key, tags={"mmfs/late_files": str(n)})
           for d, key, n in late.requests],
        cursor=cursor,
    )


def waiting_summary(waits: dict[str, str], limit: int = 3) -> str:
    """Why drops wait, for a tick's skip reason: the first few in full (the rest by count; `mmfs status` has all)."""
    names = sorted(waits)
    more = f"; and {len(names) - limit} more drop(s) waiting (`mmfs status` lists them)" if len(names) > limit else ""
    return "; ".join(f"drop {n!r} waits: {waits[n]}" for n in names[:limit]) + more


@dataclass
class LateCheck:
    requests: list[tuple[str, str, int]] = field(default_factory=list)  # (drop, run key, files not ingested)
    waiting: dict[str, str] = field(default_factory=dict)  # drop -> why its late files wait
    state: dict = field(default_factory=dict)  # for the cursor


def _table() -> TableRef:
    """The shared table, from the one settings reader the resources are built from (``MMFS_TABLE_URI``,
    ``MMFS_STORAGE_OPTIONS``): the sensor takes only ``drop_folder`` as a resource, so code that evaluates it
    with that resource alone keeps working."""
    from mmfs_assets.settings import Settings

    return Settings.from_env().table_ref


def check_late_files(source, table: Callable[[], TableRef] | TableRef, registered: set[str], quiet: float, raw: dict | None, log,
                     per_tick: int = LATE_CHECK_PER_TICK, now: float | None = None) -> LateCheck:
    """Registered drops whose folder holds files the table does not account for (:mod:`mmfs_assets.ingest.ledger`):
    copied in after ``_READY`` and the ingest. Up to ``per_tick`` drops a tick, in turn (the cursor says where
    the next tick goes on), only drops whose ingest recorded what it saw. Such a drop's ingest is requested
    again once the drop is quiet (its ``_READY`` was already used), with a run key naming the files, so one
    state of the drop is requested once. Never fails the tick: a check that cannot run is logged."""
    raw = raw or {}
    old_seen = raw.get("seen") if isinstance(raw.get("seen"), dict) else {}
    out = LateCheck(state={"after": raw.get("after"), "seen": {}})
    names = sorted(registered)
    if not names:
        return out
    after = raw.get("after")
    start = next((i for i, n in enumerate(names) if after is None or n > after), 0)
    batch = (names[start:] + names[:start])[:per_tick]
    out.state["after"] = batch[-1]
    # drops not checked this tick keep their memory of future modification times
    out.state["seen"] = {n: v for n, v in (old_seen or {}).items() if n in registered and n not in batch}
    try:
        acc = accounted(table() if callable(table) else table, batch)
    except Exception as e:  # noqa: BLE001 - the table may be unreachable: new drops are still registered
        log.warning(f"checking ingested drops for files added later failed: {type(e).__name__}: {e}")
        return out
    for name in batch:
        a = acc.get(name)
        if a is None or not a.ingests:  # not ingested yet, or before the ingest kept its ledger
            continue
        try:
            files, _ = source.open(name).list_files()
            missing = a.missing(files)
            if not missing:
                continue
            r = source.readiness(name, quiet, now, (old_seen or {}).get(name), use_marker=False)
        except DropRefusedError:  # its folder was removed after the ingest (or replaced by a link): nothing to add
            continue
        except Exception as e:  # noqa: BLE001 - a drop that cannot be listed: said, not raised
            log.warning(f"checking drop {name!r} for files added later failed: {type(e).__name__}: {e}")
            continue
        what = (f"{len(missing)} file(s) added after its ingest: "
                f"{names_text([f.relpath for f in missing])}")
        if r.seen:
            out.state["seen"][name] = r.seen
        if r.ready:
            sig = listing_signature([Entry(f.relpath, f.size, 0.0) for f in missing])[:16]
            out.requests.append((name, f"ingest:{name}:late:{sig}", len(missing)))
            log.info(f"drop {name!r}: {what}; requesting its ingest again")
        else:
            out.waiting[name] = f"{what}; {r.why}"
    return out
