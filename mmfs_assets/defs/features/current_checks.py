"""``<asset>_current`` asset checks: does any partition hold values from an out-of-date producer?

Dagster shows a code-version change as "Unsynced" only on one selected partition; the graph, the
overview and the partition list show nothing. These checks put it where people look: a failed (WARN)
``<asset>_current`` check on the asset, with the stale partitions, row counts and causes in its metadata
(:mod:`mmfs_assets.staleness` decides what is stale). The ``staleness_sensor`` evaluates every check
when the code's expectations change (within a minute) or the table changed (at most every 5 minutes while
fills keep committing), and an asset's check after each of its materializations (within a minute: the UI
shows a check with no result newer than the asset's latest materialization as "not evaluated"); each
check can also be run from the UI (*Execute*).
"""

from __future__ import annotations

import hashlib
import json
import time

import dagster as dg

from mmfs_assets.features.spec import Feature
from mmfs_assets.resources import LanceTableResource, ModelsResource, ProbeResource
from mmfs_assets.staleness import METADATA_ASSET, Expectation, Stale, expectations, stale_features

STALENESS_INTERVAL_S = 60
RESCAN_WHILE_WRITING_S = 300  # expectations unchanged, table version moved: at most one scan per this long
MAX_LISTED = 100


def check_name(asset: str) -> str:
    return f"{asset}_current"


def _expectations(features: list[Feature], models: ModelsResource, probe: ProbeResource) -> list[Expectation]:
    from mmfs_assets.ingest.probe import FrameLimits

    return expectations(features, models.model_profile, models.feature_env, probe.max_corrupt_frames,
                        FrameLimits.of(probe))


def _table_stale(lance_table: LanceTableResource, exps: list[Expectation]) -> tuple[int | None, list[Stale]]:
    """(table version, stale entries); (None, []) while the table does not exist yet."""
    from mmfs_loader.contract.status import table_status
    from mmfs_loader.contract.table import TableNotFoundError

    try:
        ds = lance_table.open()
    except TableNotFoundError:
        return None, []
    return ds.version, stale_features(table_status(ds), exps)


def evaluation(asset: str, stale: list[Stale], version: int | None) -> dg.AssetCheckEvaluation:
    """The ``<asset>_current`` result: passed when no partition holds stale rows of ``asset``."""
    mine = [s for s in stale if s.feature == asset]
    rows = sum(s.rows for s in mine)
    lines = ["| drop | rows | cause |", "|---|---|---|"] + [f"| `{s.drop_id}` | {s.rows} | {s.cause} |" for s in mine[:MAX_LISTED]]
    if len(mine) > MAX_LISTED:
        lines.append(f"| ... | | {len(mine) - MAX_LISTED} more (`mmfs status`) |")
    return dg.AssetCheckEvaluation(
        asset_key=dg.AssetKey(asset),
        check_name=check_name(asset),
        passed=not mine,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            f"{rows} rows in {len({s.drop_id for s in mine})} partition(s) were made by an out-of-date producer: "
            "recompute them with a backfill of those partitions (or MMFS_RECOMPUTE_ON_CODE_CHANGE=1)"
            if mine else "every filled row matches the current code version and settings"
        ),
        metadata={
            "stale_rows": rows,
            "stale_partitions": len({s.drop_id for s in mine}),
            "stale": dg.MetadataValue.md("\n".join(lines) if mine else "none"),
            "table_version": version if version is not None else -1,
        },
    )


def current_check(asset: str, features: list[Feature]) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=asset, name=check_name(asset), blocking=False,
        description=(
            "Every partition's rows come from the current code version and settings (model profile, sampling, "
            "frames). Evaluated by the staleness_sensor; a failure lists the stale partitions and why."
        ),
    )
    def _check(lance_table: LanceTableResource, models: ModelsResource, probe: ProbeResource) -> dg.AssetCheckResult:
        version, stale = _table_stale(lance_table, _expectations(features, models, probe))
        ev = evaluation(asset, stale, version)
        return dg.AssetCheckResult(passed=ev.passed, severity=ev.severity, description=ev.description, metadata=ev.metadata)

    return _check


def _latest_materializations(instance: dg.DagsterInstance, assets: list[str]) -> dict[str, float]:
    """When each asset (any partition) was last materialized, 0.0 for never: the UI shows a check as "not
    evaluated" until it has a result newer than the asset's latest materialization."""
    out = {}
    for a in assets:
        event = instance.get_latest_materialization_event(dg.AssetKey(a))
        out[a] = event.timestamp if event is not None else 0.0
    return out


def current_checks(features: list[Feature]) -> list[dg.AssetChecksDefinition]:
    return [current_check(a, features) for a in [METADATA_ASSET, *(f.name for f in features)]]


def staleness_sensor(features: list[Feature]) -> dg.SensorDefinition:
    assets = [METADATA_ASSET, *(f.name for f in features)]

    @dg.sensor(
        name="staleness_sensor",
        minimum_interval_seconds=STALENESS_INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Evaluates the <asset>_current checks when the table or the expected producers change: a failed "
            "check lists the partitions whose rows an out-of-date code version or setting produced."
        ),
    )
    def _sensor(context: dg.SensorEvaluationContext, lance_table: LanceTableResource, models: ModelsResource,
                probe: ProbeResource):
        exps = _expectations(features, models, probe)
        from mmfs_loader.contract.table import TableNotFoundError

        try:
            version = lance_table.open().version
        except TableNotFoundError:
            return dg.SkipReason("the table does not exist yet")
        except Exception as e:  # noqa: BLE001 - a damaged or unreachable table is `mmfs status`'s to explain
            return dg.SkipReason(f"the table cannot be opened: {str(e).splitlines()[0][:300]}")
        expected = hashlib.sha256(json.dumps([assets, [repr(e) for e in exps]]).encode()).hexdigest()[:16]
        last = json.loads(context.cursor) if context.cursor else {}
        materialized = _latest_materializations(context.instance, assets)
        seen = last.get("materialized", {})
        newer = [a for a in assets if materialized[a] > seen.get(a, 0.0)]  # each needs a result after it
        if last.get("expected") == expected and not newer:
            if last.get("version") == version:
                return dg.SkipReason(f"table version {version} and the expected producers are unchanged")
            wait = last.get("scanned_at", 0) + RESCAN_WHILE_WRITING_S - time.time()
            if wait > 0:  # fills commit every chunk: a moving table is scanned at most every few minutes
                return dg.SkipReason(f"the table is being written (version {version}); next scan in {wait:.0f} s")
        at, stale = _table_stale(lance_table, exps)
        result = hashlib.sha256(json.dumps([assets, [s.record() for s in stale]]).encode()).hexdigest()[:16]
        cursor = json.dumps({"expected": expected, "version": at, "result": result, "scanned_at": time.time(),
                             "materialized": materialized})
        report = assets if last.get("result") != result or last.get("expected") != expected else newer
        if not report:
            return dg.SensorResult(skip_reason=f"staleness unchanged at table version {at}", cursor=cursor)
        return dg.SensorResult(asset_events=[evaluation(a, stale, at) for a in report], cursor=cursor)

    return _sensor
