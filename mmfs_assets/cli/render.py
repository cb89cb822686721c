"""Printing Arrow tables and status reports as rich tables, CSV or JSON."""

from __future__ import annotations

import csv
import json
import sys
from datetime import date, datetime
from decimal import Decimal
from enum import Enum

import numpy as np
import pyarrow as pa
from rich.console import Console
from rich.table import Table
from rich.text import Text

from mmfs_loader.contract.health import human_bytes
from mmfs_loader.contract.schema import producer_model
from mmfs_loader.contract.status import DropStatus


class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


def _jsonable(v):
    if isinstance(v, (datetime, date)):
        return v.isoformat()
    if isinstance(v, Decimal):
        return float(v)
    if isinstance(v, bytes):
        return v.hex()
    return v


def clean_float(v: float, single: bool = False) -> float:
    """``v`` without binary noise: a float32 value as its shortest float32 decimal (452.8, not
    452.79998779296875), a float64 rounded to 12 significant digits (25.0, not 24.999999999999996)."""
    return float(str(np.float32(v))) if single else float(f"{v:.12g}")


def _cleaner(t: pa.DataType):
    """A function that cleans the floats of one column's Python values (lists of floats included)."""
    if pa.types.is_floating(t):
        single = t.bit_width <= 32
        return lambda v: v if v is None or v != v or v in (float("inf"), float("-inf")) else clean_float(v, single)
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        inner = _cleaner(t.value_type)
        if inner is not None:
            return lambda v: v if v is None else [inner(x) for x in v]
    return None


def plain(v) -> str:
    """A metadata value for one line of text: floats with 6 significant digits."""
    return f"{v:.6g}" if isinstance(v, float) else str(v)


MAX_TEXT = 200  # characters of one table cell: a longer text is cut with "…" (--format json and csv keep it all)
SHORT_LIST = 48  # a list whose text is at most this long prints as it is; a longer one as "[512 floats]"
MIN_COLUMN = 16  # below this width per column, a result prints one row at a time (a column per line)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _bytes_text(b: bytes) -> str:
    """Binary as a short description: ``<png 518x924>`` (from its header) or ``<blob 1.2 MB>``."""
    if b.startswith(PNG_SIGNATURE) and len(b) >= 24 and b[12:16] == b"IHDR":
        return f"<png {int.from_bytes(b[16:20], 'big')}x{int.from_bytes(b[20:24], 'big')}>"
    return f"<blob {human_bytes(len(b))}>"


def _kind(items: list) -> str:
    x = next((i for i in items if i is not None), None)
    for t, name in ((bool, "bool"), (float, "float"), (int, "int"), (str, "string"), (list, "list"), (dict, "struct")):
        if isinstance(x, t):
            return name
    return "item"


def _list_text(v: list) -> str:
    n = len(v)
    if v and all(isinstance(x, (bytes, bytearray, memoryview)) for x in v):
        parts = [_bytes_text(bytes(x)) for x in v]
        if len(set(parts)) == 1:
            return f"[{n} × {parts[0]}]" if n > 1 else f"[{parts[0]}]"
        text = "[" + ", ".join(parts) + "]"
        return text if len(text) <= SHORT_LIST else f"[{n} blobs, {human_bytes(sum(len(x) for x in v))}]"
    if n <= SHORT_LIST // 2:  # only short lists can print whole: a 512-vector is never turned into text here
        text = str([_jsonable(x) for x in v])
        if len(text) <= SHORT_LIST:
            return text
    kind = _kind(v)
    return f"[{n} {kind}{'' if n == 1 else 's'}]"


def cell_text(v) -> str:
    """A value as one cell of the table output: ``∅`` for null, vectors and lists as ``[512 floats]``, binary
    as ``<png 518x924>`` or ``<blob 1.2 MB>``, text over :data:`MAX_TEXT` characters cut with ``…``."""
    if v is None:
        return "∅"
    if isinstance(v, (bytes, bytearray, memoryview)):
        return _bytes_text(bytes(v))
    if isinstance(v, list):
        return _list_text(v)
    if isinstance(v, dict):
        v = {k: cell_text(x) if isinstance(x, (bytes, bytearray, memoryview, list)) else x for k, x in v.items()}
    s = str(_jsonable(v))
    return s if len(s) <= MAX_TEXT else s[: MAX_TEXT - 1] + "…"


def _fits(names: list[str], cells: list[list[str]], width: int) -> bool:
    """Whether a table with a column per name fits ``width`` with every column at least :data:`MIN_COLUMN`
    wide (or as wide as its widest cell, when narrower)."""
    need = 1
    for i, name in enumerate(names):
        natural = max([len(name), *(max(map(len, r[i].splitlines() or [""])) for r in cells)])
        need += min(natural, MIN_COLUMN) + 3  # padding and the border
    return need <= width


def print_arrow(t: pa.Table, fmt: Format, console: Console) -> None:
    """A result as JSON or CSV (every value in full) or as a table that fits the console: wide values
    abbreviated (:func:`cell_text`), one row at a time (a line per column) when the columns cannot fit."""
    if fmt is not Format.table:
        rows = t.to_pylist()
        for name, field in zip(t.column_names, t.schema):
            if (clean := _cleaner(field.type)) is not None:
                for r in rows:
                    r[name] = clean(r[name])
        if fmt is Format.json:
            sys.stdout.write(json.dumps([{k: _jsonable(v) for k, v in r.items()} for r in rows], default=str) + "\n")
        else:
            w = csv.writer(sys.stdout)
            w.writerow(t.column_names)
            for r in rows:
                w.writerow([_jsonable(r[c]) for c in t.column_names])
        return
    names, cells = t.column_names, _cells(t)
    if names and not _fits(names, cells, console.width):
        _print_records(names, cells, console)
    else:
        table = Table(show_lines=False)
        for name in names:
            table.add_column(Text(name), overflow="fold")  # wrap long values: ids and file names stay whole
        for row in cells:  # Text, not markup: values (file names from drops) print as they are, "[/b]" included
            table.add_row(*[Text(c) for c in row])
        console.print(table)
    console.print(f"[dim]{len(cells)} row(s)[/dim]")


def _print_records(names: list[str], cells: list[list[str]], console: Console) -> None:
    """Rows too wide for the console, one at a time: a line per column, its name and its value."""
    if not cells:
        console.print(Text("columns: " + ", ".join(names)))
    for i, row in enumerate(cells, 1):
        console.rule(Text(f"row {i} of {len(cells)}"), align="left", style="dim")
        record = Table(show_header=False, box=None, padding=(0, 1, 0, 0))
        record.add_column(style="bold", overflow="fold", max_width=max(12, console.width // 3))
        record.add_column(overflow="fold")
        for name, c in zip(names, row):
            record.add_row(Text(name), Text(c))
        console.print(record)


def _cells(t: pa.Table) -> list[list[str]]:
    """Every row's cells (:func:`cell_text`, floats cleaned), by position: a result may name two columns
    alike (``SELECT a.x, b.x``), which a row as a dict would merge."""
    cols = []
    for col, field in zip(t.columns, t.schema):
        values = col.to_pylist()
        clean = _cleaner(field.type)
        cols.append([cell_text(v if clean is None else clean(v)) for v in values])
    return [list(r) for r in zip(*cols)]


def status_records(status: list[DropStatus]) -> list[dict]:
    return [
        {
            "drop_id": s.drop_id,
            "rows": s.rows,
            "groups": {
                g: {"filled": gs.filled, "errored": gs.errored, "missing": gs.missing, "producers": gs.producers,
                    "rows_with_repeated_frames": gs.rows_with_repeated_frames}
                for g, gs in s.groups.items()
            },
        }
        for s in status
    ]


def print_status(status: list[DropStatus], fmt: Format, console: Console) -> None:
    if fmt is Format.json:
        sys.stdout.write(json.dumps(status_records(status)) + "\n")
        return
    # one line per (drop, column group): stays readable however many features the table has; the long
    # producer strings are listed once below the table and referenced by number
    table = Table("drop", "group", "filled", "errored", "missing", "repeats", "producer")
    for col in table.columns:
        col.overflow = "fold"  # a long drop name wraps, it is never cut
    for col in table.columns[2:6]:
        col.justify = "right"
    numbers: dict[str, int] = {}  # one number per model: producers that differ only in sampling share it
    shown: dict[str, str] = {}
    for s in status:
        for i, (g, gs) in enumerate(sorted(s.groups.items())):
            per_model: dict[str, int] = {}
            for p, n in gs.producers.items():
                m = producer_model(p)
                per_model[m] = per_model.get(m, 0) + n
                shown[m] = _merge_sampling(shown.get(m), p)
            refs = []
            for m, n in per_model.items():
                k = numbers.setdefault(m, len(numbers) + 1)
                version = m.split("|", 1)[0].split(":", 1)[-1].split("/", 1)[0]  # "clip-v1", "metadata-v3"
                refs.append(f"\\[{k}] {version}" + (f" ({n})" if len(per_model) > 1 else ""))
            table.add_row(
                s.drop_id if i == 0 else f"[dim]{s.rows} row{'' if s.rows == 1 else 's'}[/dim]" if i == 1 else "",
                g,
                f"[green]{gs.filled}[/green]",
                f"[red]{gs.errored}[/red]" if gs.errored else "0",
                f"[yellow]{gs.missing}[/yellow]" if gs.missing else "0",
                f"[yellow]{gs.rows_with_repeated_frames}[/yellow]" if gs.rows_with_repeated_frames else "0",
                "\n".join(refs) or "-",
                end_section=i == len(s.groups) - 1,
            )
        if not s.groups:
            table.add_row(s.drop_id, "-", "", "", "", "", "", end_section=True)
    console.print(table)
    repeats = sum(gs.rows_with_repeated_frames for s in status for gs in s.groups.values())
    if repeats:
        console.print(f"repeats: {repeats} filled rows took the same frame more than once (a video with fewer frames "
                      "than the feature asks for, or keyframe sampling of a video with fewer keyframes; "
                      "MMFS_<F>_SAMPLING=auto samples those at the slice centres)", highlight=False)
    if numbers:
        console.print("producers:", highlight=False)
        for m, k in numbers.items():
            console.print(f"  \\[{k}] {shown[m]}", highlight=False, soft_wrap=True)


def _merge_sampling(seen: str | None, producer: str) -> str:
    """``producer`` with the sampling modes of ``seen`` (the same model) joined, ``sampling=exact/keyframe``:
    ``sampling=auto`` samples each video one way or the other."""
    if seen is None:
        return producer
    prefix = "sampling="
    modes = sorted({m for x in (seen, producer) for part in x.split("|") if part.startswith(prefix)
                    for m in part[len(prefix):].split("/")})
    return "|".join(prefix + "/".join(modes) if part.startswith(prefix) else part for part in producer.split("|"))


def print_health(uri: str, health, console: Console) -> None:
    """Damaged versions (with the newest readable one to pin) and the orphan data file count."""
    if health.damaged:
        newest = health.newest_readable
        console.print(
            f"[red]damaged:[/red] version(s) {', '.join(map(str, sorted(health.damaged, reverse=True)))} of {uri} "
            f"cannot be read ({next(iter(health.damaged.values()))})."
        )
        if newest is not None:
            console.print(f"newest readable version: {newest}; pinned reads work: `mmfs sql --version {newest} ...`, "
                          f"FeatureDataset(version={newest})")
    if health.orphan_files:
        blobs = health.orphan_blob_files or 0
        console.print(
            f"orphan data files: {health.orphan_data_files or 0}"
            + (f", blob sidecars: {blobs}" if blobs else "")
            + f" ({human_bytes(health.orphan_bytes or 0)}; left by killed or losing writers or by writes that "
            "failed, e.g. on a full disk; harmless to readers; `mmfs maintain` deletes them once an hour old)",
            highlight=False)


def health_record(health) -> dict:
    """The table health for ``mmfs status --format json``."""
    return {"latest_version": health.latest_version, "newest_readable": health.newest_readable,
            "damaged": {str(v): e for v, e in health.damaged.items()},
            "orphan_data_files": health.orphan_data_files, "orphan_blob_files": health.orphan_blob_files,
            "orphan_bytes": health.orphan_bytes}


def print_stale(stale, console: Console) -> None:
    """(drop, feature) pairs whose rows are not what the current code and settings would produce."""
    if not stale:
        console.print("[green]stale:[/green] none (every filled row matches the current code versions and settings)")
        return
    table = Table("drop", "feature", "rows", "cause", title="stale: recompute with `mmfs materialize -p DROP -s FEATURE`",
                  title_justify="left")
    for col in table.columns:
        col.overflow = "fold"
    for st in stale:
        table.add_row(st.drop_id, st.feature, str(st.rows), st.cause)
    console.print(table)


def print_refused(refused: dict[str, str], console: Console) -> None:
    """Folders under the drop dir that the sensor will not ingest, with the reason."""
    if not refused:
        return
    table = Table("folder", "why it is not ingested", title="refused drops (rename or move them)", title_justify="left")
    for col in table.columns:
        col.overflow = "fold"
    from rich.markup import escape

    from mmfs_assets.ingest.drops import display_name

    for name, reason in sorted(refused.items()):  # hostile names: shown as text, odd bytes as \\xNN
        table.add_row(escape(display_name(name)), escape(display_name(reason)))
    console.print(table)


def print_attention(items, console: Console) -> None:
    """Drops not (fully) ingested: waiting to be ready, ready but not ingested, or holding files added later."""
    if not items:
        return
    from rich.markup import escape

    from mmfs_assets.ingest.drops import display_name

    table = Table("drop", "state", "why", title="drops not (fully) ingested", title_justify="left")
    for col in table.columns:
        col.overflow = "fold"
    for a in items:
        table.add_row(escape(display_name(a.drop_id)), a.state, escape(display_name(a.why)))
    console.print(table)
