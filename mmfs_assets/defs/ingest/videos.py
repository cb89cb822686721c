"""The ingest asset: one drop's new videos appended to the shared table."""

import dagster as dg

from mmfs_assets.defs.ingest.partitions import drops_partitions
from mmfs_assets.defs.lineage import run_properties, table_digest
from mmfs_assets.ingest.drops import DropRefusedError
from mmfs_assets.ingest.ingest_drop import ingest_drop
from mmfs_assets.pools import INGEST_POOL
from mmfs_assets.progress import tracker
from mmfs_assets.resources import DropFolderResource, LanceTableResource
from mmfs_assets.table.append import NoSpaceError
from mmfs_loader.contract import schema as S
from mmfs_loader.contract.sql import equals

INGEST_CODE_VERSION = "ingest-v1"


def _md_code(text: str) -> str:
    """Text safe inside a markdown code span: a file name cannot close it or start a new line."""
    return text.replace("`", "'").replace("\r", "\\r").replace("\n", "\\n")


@dg.asset(
    partitions_def=drops_partitions,
    group_name="ingest",
    code_version=INGEST_CODE_VERSION,
    kinds={"lance", "python"},
    pool=INGEST_POOL,
    description=(
        "Appends one row per new unique video of the drop (id = SHA-256 of the content) to the shared "
        "Lance table; videos already in the table, from any drop, are skipped."
    ),
)
def videos(
    context: dg.AssetExecutionContext, lance_table: LanceTableResource, drop_folder: DropFolderResource
) -> dg.MaterializeResult:
    key = context.partition_key
    try:
        drop = drop_folder.source().open(key)
    except DropRefusedError as e:
        raise dg.Failure(description=str(e)) from e
    trackers = {phase: tracker(context.log.info, f"{phase} {key} (bytes)") for phase in ("hash", "write")}
    try:
        rep = ingest_drop(
            drop,
            key,
            lance_table.ref,
            properties=run_properties(context, "videos", INGEST_CODE_VERSION),
            video_storage=lance_table.video_storage,
            inline_max_bytes=lance_table.inline_max_bytes,
            fragment_rows=lance_table.fragment_rows,
            progress=lambda phase, done, total: trackers[phase](done, total),
        )
    except NoSpaceError as e:  # the cause, not the step of Lance's write that noticed it
        if e.detail:
            context.log.error(f"the table write failed: {e.detail}")
        raise dg.Failure(description=str(e), metadata={"free_bytes": e.free, "path": e.path}) from e
    for s in rep.skipped:
        context.log.warning(f"skipped {s.relpath!r}: {s.reason}")
    ds = lance_table.open()
    held = ds.to_table(columns=[S.ID], filter=equals(S.DROP_ID, key))
    seconds = rep.seconds_hashing + rep.seconds_writing
    mb = rep.bytes_hashed / 1e6
    return dg.MaterializeResult(
        metadata={
            "lance_version": rep.lance_version,
            "rows_in_partition": len(held),
            "new_rows": rep.new_rows,
            "skipped_already_in_table": rep.already_in_table,
            "duplicates_in_drop": rep.duplicates_in_drop,
            "duplicates_removed_after_commit": rep.duplicates_removed,
            "stored_as_pointer_over_size_limit": rep.pointer_rows if lance_table.video_storage == "inline" else 0,
            "files": rep.files,
            "files_skipped": dg.MetadataValue.md(
                "\n".join(f"- `{_md_code(s.relpath)}`: {_md_code(s.reason)}" for s in rep.skipped) or "none"
            ),
            "bytes_new": rep.new_bytes,
            "commits": len(rep.commits),
            "commit_retries": rep.commit_retries,
            "video_storage": lance_table.video_storage,
            "throughput_mb_s": round(mb / seconds, 2) if seconds > 0 else 0.0,
            "table_uri": dg.MetadataValue.path(lance_table.uri),
        },
        data_version=dg.DataVersion(table_digest(held, S.ID)),
    )
