"""Operating the store from the UI: the search indices asset, the snapshot job, the maintenance job.

- ``search_indices`` follows the feature assets (eager automation): after fills it builds the missing vector
  and caption indices and folds new and refilled fragments into every index.
- ``snapshot_job`` is ``mmfs snapshot create`` launchable from the Launchpad (run config: name, required
  features, version); the manifest is the run's output metadata.
- ``maintenance_job`` is ``mmfs maintain``, on a daily schedule. It shares the ``lance_ingest`` pool with
  ingests and compacts only while no fill or ingest run is active.
"""

from datetime import timedelta
from typing import Optional

import dagster as dg

from mmfs_assets.pools import INGEST_POOL
from mmfs_assets.resources import LanceTableResource

MAINTENANCE_CRON = "0 3 * * *"


def search_indices_asset(feature_names: list[str]) -> dg.AssetsDefinition:
    @dg.asset(
        name="search_indices",
        deps=feature_names,
        group_name="store",
        kinds={"lance"},
        automation_condition=dg.AutomationCondition.eager(),
        description=(
            "Vector indices on the embedding columns (IVF_PQ once the table is large enough; exact search below), "
            "the caption full-text index and the drop_id/id lookup indices, brought up to date after fills."
        ),
    )
    def search_indices(context: dg.AssetExecutionContext, lance_table: LanceTableResource) -> dg.MaterializeResult:
        from mmfs_assets.table.indices import ensure_scalar_indices, ensure_search_indices, index_status

        scalar = ensure_scalar_indices(lance_table.ref)
        rep = ensure_search_indices(lance_table.ref)
        ds = lance_table.open()
        status = index_status(ds)
        lines = ["| index | columns | type | indexed | unindexed |", "|---|---|---|---|---|"] + [
            f"| {s['name']} | {', '.join(s['columns'])} | {s['type']} | {s['indexed_rows']} | {s['unindexed_rows']} |"
            for s in status]
        for col, why in rep.skipped.items():
            context.log.info(f"{col}: {why}")
        return dg.MaterializeResult(metadata={
            "lance_version": ds.version,
            "created": ", ".join(scalar.created + rep.created) or "none",
            "updated": ", ".join(sorted(set(scalar.optimized + rep.optimized))) or "none",
            "exact_search": ", ".join(f"{c} ({why})" for c, why in rep.skipped.items()) or "none",
            "indices": dg.MetadataValue.md("\n".join(lines)),
        })

    return search_indices


class SnapshotConfig(dg.Config):
    name: str
    require: list[str] = []
    version: Optional[int] = None  # noqa: UP045 - dagster's config reads the annotation at runtime


@dg.op(description="Check the required features, tag the version and store its manifest (mmfs snapshot create).")
def create_snapshot(context: dg.OpExecutionContext, config: SnapshotConfig, lance_table: LanceTableResource) -> dg.Output:
    from mmfs_assets.store import snapshots

    try:
        m = snapshots.create(lance_table.ref, config.name, version=config.version, require=config.require)
    except snapshots.SnapshotRefused as e:
        raise dg.Failure(description=str(e), metadata={"problems": dg.MetadataValue.md(
            "\n".join(f"- {p}" for p in e.problems))}, allow_retries=False) from None
    groups = ["| group | filled | errored | missing | producers |", "|---|---|---|---|---|"] + [
        f"| {g} | {gm.filled} | {gm.errored} | {gm.missing} | " + "<br>".join(f"{n} x `{p}`" for p, n in gm.producers.items()) + " |"
        for g, gm in sorted(m.groups.items())]
    context.log.info(f"tagged version {m.version} as {m.name}")
    return dg.Output(None, metadata={
        "snapshot": m.name, "version": m.version, "rows": m.rows, "partitions": len(m.partitions),
        "required": ", ".join(m.required) or "none", "groups": dg.MetadataValue.md("\n".join(groups)),
        "manifest": dg.MetadataValue.json(m.record()),
    })


@dg.job(name="snapshot_job", description="Snapshot the table: launch it with run config `ops.create_snapshot.config.name`.")
def snapshot_job():
    create_snapshot()


class MaintenanceConfig(dg.Config):
    dry_run: bool = False
    retention_days: float = 7.0


@dg.op(pool=INGEST_POOL, description="Optimise indices, compact small fragments, remove old versions and orphans.")
def maintain_table(context: dg.OpExecutionContext, config: MaintenanceConfig, lance_table: LanceTableResource) -> dg.Output:
    from mmfs_assets.instance.writers import active_writers
    from mmfs_assets.store.maintain import maintain

    rep = maintain(lance_table.ref, dry_run=config.dry_run, retention=timedelta(days=config.retention_days),
                   writers=lambda: active_writers(context.instance, exclude_run=context.run_id))
    for s in rep.skipped:
        context.log.warning(s)
    rec = rep.record()
    return dg.Output(None, metadata={k: v for k, v in rec.items() if isinstance(v, (int, float, str, bool))}
                     | {"report": dg.MetadataValue.json(rec)})


@dg.job(name="maintenance_job", description="Table maintenance (mmfs maintain); scheduled daily.")
def maintenance_job():
    maintain_table()


maintenance_schedule = dg.ScheduleDefinition(
    name="maintenance_schedule", job=maintenance_job, cron_schedule=MAINTENANCE_CRON,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Daily table maintenance at 03:00 (indices, compaction, retention, orphans).",
)
