"""The table contract: column names, Arrow types and feature column groups of the shared table.

One row per unique video (id = SHA-256 of the content). The ingest columns are written by the `videos`
asset when a row is appended; every feature owns a *column group*: its value columns plus
``<group>_producer`` (which model/code made the values) and ``<group>_error`` (null on success).
Group membership is stored in each field's Arrow metadata under ``mmfs.group``, so a reader can map any
column back to its group from the table alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
from lance.blob import blob_field

GROUP_KEY = b"mmfs.group"

# Ingest columns.
ID = "id"
DROP_ID = "drop_id"
SOURCE_URI = "source_uri"
FILE_NAME = "file_name"
SIZE_BYTES = "size_bytes"
INGESTED_AT = "ingested_at"
VIDEO_STORAGE = "video_storage"  # "inline" or "pointer"
VIDEO = "video"  # Lance blob v2: inline bytes or a URI to the source

INGEST_SCHEMA = pa.schema(
    [
        pa.field(ID, pa.string(), nullable=False),
        pa.field(DROP_ID, pa.string(), nullable=False),
        pa.field(SOURCE_URI, pa.string()),
        pa.field(FILE_NAME, pa.string()),
        pa.field(SIZE_BYTES, pa.int64()),
        pa.field(INGESTED_AT, pa.timestamp("us", tz="UTC")),
        pa.field(VIDEO_STORAGE, pa.string()),
        blob_field(VIDEO),
    ]
)

INGEST_COLUMNS = tuple(INGEST_SCHEMA.names)

# Columns that SQL engines cannot read (blob descriptors): hidden from `mmfs sql` and scans by default.
BLOB_COLUMNS = (VIDEO,)


@dataclass(frozen=True)
class ColumnGroup:
    """A feature's columns: its value fields plus the per-row producer and error columns."""

    name: str
    value_fields: tuple[pa.Field, ...]

    @property
    def producer_column(self) -> str:
        return f"{self.name}_producer"

    @property
    def error_column(self) -> str:
        return f"{self.name}_error"

    @property
    def value_columns(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.value_fields)

    @property
    def columns(self) -> tuple[str, ...]:
        return (*self.value_columns, self.producer_column, self.error_column)

    @property
    def fields(self) -> tuple[pa.Field, ...]:
        """All fields of the group, tagged with the group name in their metadata."""
        meta = {GROUP_KEY: self.name.encode()}
        base = (
            *self.value_fields,
            pa.field(self.producer_column, pa.string()),
            pa.field(self.error_column, pa.string()),
        )
        return tuple(f.with_metadata({**(f.metadata or {}), **meta}) for f in base)

    @property
    def schema(self) -> pa.Schema:
        return pa.schema(list(self.fields))


METADATA = ColumnGroup(
    "metadata",
    (
        pa.field("container", pa.string()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("fps", pa.float64()),
        pa.field("duration_s", pa.float64()),
        pa.field("num_frames", pa.int64()),
        pa.field("codec", pa.string()),
        pa.field("pix_fmt", pa.string()),
        pa.field("bit_rate", pa.int64()),
        pa.field("rotation", pa.int32()),
        pa.field("has_audio", pa.bool_()),
        pa.field("keyframe_interval", pa.float64()),
        pa.field("is_vfr", pa.bool_()),
        pa.field("corrupt_frames", pa.int32()),  # frames FFmpeg concealed or flagged corrupt
        pa.field("lost_frames", pa.int32()),  # packets that decoded to no frame
        pa.field("keyframe_times", pa.list_(pa.float64())),  # s from the stream start: plans seeks
    ),
)


def groups_in_schema(schema: pa.Schema) -> dict[str, list[str]]:
    """Map each column group present in ``schema`` to its columns, from the fields' metadata."""
    out: dict[str, list[str]] = {}
    for f in schema:
        g = (f.metadata or {}).get(GROUP_KEY)
        if g:
            out.setdefault(g.decode(), []).append(f.name)
    return out


def group_of(schema: pa.Schema, column: str) -> str | None:
    """The column group a column belongs to, or None for ingest columns."""
    g = (schema.field(column).metadata or {}).get(GROUP_KEY)
    return g.decode() if g else None


def producer_model(producer: str) -> str:
    """A producer without its ``|sampling=...`` field: what made the values (code version, model, weights,
    frames, profile), whichever frames of the video each row was sampled at. A feature filled with
    ``sampling=auto`` records ``keyframe`` on some rows and ``exact`` on others: one model, not a mix."""
    return "|".join(p for p in producer.split("|") if not p.startswith("sampling="))
