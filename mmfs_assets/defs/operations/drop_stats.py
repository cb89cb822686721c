"""The ``drop_stats`` asset: per-drop statistics with plots, shown on the partition in the UI."""

import dagster as dg

from mmfs_assets.defs.ingest.partitions import drops_partitions
from mmfs_assets.quality.drop_stats import compute, errors_per_group, markdown_image, plot_png, summary_markdown
from mmfs_assets.resources import LanceTableResource


def drop_stats_asset(feature_names: list[str]) -> dg.AssetsDefinition:
    @dg.asset(
        name="drop_stats",
        partitions_def=drops_partitions,
        deps=["video_metadata", *feature_names],
        group_name="store",
        kinds={"lance", "python"},
        automation_condition=dg.AutomationCondition.eager(),
        description=(
            "Statistics of a drop for exploring it in the UI: resolution, duration, fps, codec and error histograms "
            "(one plot) and summary tables. Reads only metadata and error columns; writes nothing to the table."
        ),
    )
    def drop_stats(context: dg.AssetExecutionContext, lance_table: LanceTableResource) -> dg.MaterializeResult:
        ds = lance_table.open()
        st = compute(ds, context.partition_key)
        s = st.summary()
        return dg.MaterializeResult(metadata={
            "rows": st.rows,
            "decodable": s["decoded"],
            "gb": s["gb"],
            "median_duration_s": s["duration_s"]["median"] if s["duration_s"] else -1,
            # rows, not errors: a video that fails to decode has an error in every column group (errors_per_group)
            "rows_with_errors": st.rows_with_errors,
            "errors_per_group": errors_per_group(st),
            "plots": dg.MetadataValue.md(markdown_image(plot_png(st), f"statistics of drop {st.drop_id}")),
            "summary": dg.MetadataValue.md(summary_markdown(st)),
            "stats": dg.MetadataValue.json(s),
            "lance_version": ds.version,
        })

    return drop_stats
