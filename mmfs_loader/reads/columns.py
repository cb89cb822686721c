"""Which table columns a dataset reads, from the names a user asks for."""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from mmfs_loader.contract import schema as S
from mmfs_loader.contract.schema import group_of, groups_in_schema


def resolve_columns(schema: pa.Schema, wanted: Sequence[str] | None, *, clip: bool) -> tuple[list[str], list[str]]:
    """(columns to read, with ``id`` first; column groups they belong to, for the provenance guard).

    A name may be a column or a group; a group stands for its value columns. ``None`` means every
    column but the video blob. The blob itself is never read as a column: ask for ``clip=`` instead.
    With ``clip``, the metadata group is required too (the seek plan comes from it).
    """
    names = schema.names
    groups = groups_in_schema(schema)
    if wanted is None:
        wanted = [n for n in names if n not in S.BLOB_COLUMNS]
    elif isinstance(wanted, str):
        raise TypeError("columns must be a list of names, not a string")
    cols: list[str] = [S.ID]
    for w in wanted:
        if w in S.BLOB_COLUMNS:
            raise ValueError(f"{w!r} is the video blob: pass clip=dict(frames=..., size=...) for decoded frames")
        if w in names:
            new = [w]
        elif w in groups:
            new = [c for c in groups[w] if not c.endswith(("_producer", "_error"))]
        else:
            known = sorted({*names, *groups} - set(S.BLOB_COLUMNS))
            raise ValueError(f"no column or column group {w!r} in the table (known: {known})")
        cols += [c for c in new if c not in cols]
    used = [g for c in cols if (g := group_of(schema, c))]
    if clip:
        if S.METADATA.error_column not in names:
            raise ValueError("clips need the video metadata columns: materialize video_metadata first")
        used.append(S.METADATA.name)
    return cols, list(dict.fromkeys(used))
