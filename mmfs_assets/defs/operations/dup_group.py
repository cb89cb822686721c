"""The ``dup_group`` asset: near-duplicate groups of a drop's videos, from their CLIP embeddings."""

import dagster as dg

from mmfs_assets.defs.features.fill_config import fill_automation
from mmfs_assets.defs.ingest.partitions import drops_partitions
from mmfs_assets.defs.lineage import run_properties
from mmfs_assets.quality.dup_groups import CODE_VERSION, GROUP, fill_dup_groups
from mmfs_assets.resources import ChecksResource, LanceTableResource
from mmfs_assets.settings import Settings

SOURCE = "clip_embedding"
CHECK = "dup_group_ratio"


def dup_group_asset(settings: Settings) -> dg.AssetsDefinition:
    """The ``dup_group`` asset (of the ``clip_embedding`` feature), its automation from ``settings``."""

    @dg.asset(
        name="dup_group",
        partitions_def=drops_partitions,
        deps=[SOURCE],
        group_name="features",
        code_version=CODE_VERSION,
        kinds={"lance", "python"},
        automation_condition=fill_automation(settings),
        check_specs=[dg.AssetCheckSpec(CHECK, asset="dup_group", partitions_def=drops_partitions,
                                       description="the share of the drop's videos that are near-duplicates of another "
                                                   "video is at most MMFS_CHECK_MAX_DUP_RATIO")],
        description=(
            "Near-duplicate groups: videos whose clip_embedding vectors are within MMFS_DUP_DISTANCE (cosine) share a "
            "dup_group (the smallest id of the group; a video alone is its own group), so training can keep one per "
            "group with filter=\"dup_group = id\"."
        ),
        metadata={"columns": ", ".join(GROUP.columns)},
    )
    def dup_group(context: dg.AssetExecutionContext, lance_table: LanceTableResource,
                  checks: ChecksResource) -> dg.MaterializeResult:
        key = context.partition_key
        distance = Settings.from_env().dup_distance
        limit = checks.check_max_dup_ratio
        rep = fill_dup_groups(lance_table.ref, key, column=SOURCE, distance=distance,
                              properties=run_properties(context, "dup_group", CODE_VERSION))
        with_vectors = rep.rows - rep.errors
        ratio = rep.grouped / with_vectors if with_vectors else 0.0
        tiny = "|profile=tiny" in (lance_table.open().to_table(columns=["clip_embedding_producer"], limit=1,
                                                                 filter="clip_embedding_producer IS NOT NULL")
                                    .column(0).to_pylist() or [""])[0]
        return dg.MaterializeResult(
            metadata={"lance_version": rep.version, "rows": rep.rows, "rows_with_near_duplicates": rep.grouped,
                      "groups": rep.groups, "errors": rep.errors, "dup_ratio": round(ratio, 4), "producer": rep.producer},
            check_results=[dg.AssetCheckResult(
                check_name=CHECK, passed=ratio <= limit, severity=dg.AssetCheckSeverity.WARN,
                description=(f"{rep.grouped} of {with_vectors} videos with an embedding ({ratio:.0%}) have a near-duplicate "
                             f"(limit {limit:.0%}, distance {distance:g})"
                             + ("; the embeddings come from random-init test models (MMFS_MODEL_PROFILE=tiny), under "
                                "which all videos look alike" if tiny else "")),
                metadata={"dup_ratio": round(ratio, 4), "rows_with_near_duplicates": rep.grouped, "groups": rep.groups,
                          "max_dup_ratio": limit},
            )],
        )

    return dup_group
