"""Printing Arrow tables and status reports as rich tables, CSV or JSON."""

from __future__ import annotations

import csv
import json
import sys
from datetime import date, datetime
from decimal import Decimal
from enum import Enum

import pyarrow as pa
from rich.console import Console
from rich.table import Table

from mmfs_loader.status import DropStatus


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


def print_arrow(t: pa.Table, fmt: Format, console: Console) -> None:
    rows = t.to_pylist()
    if fmt is Format.json:
        sys.stdout.write(json.dumps([{k: _jsonable(v) for k, v in r.items()} for r in rows], default=str) + "\n")
    elif fmt is Format.csv:
        w = csv.writer(sys.stdout)
        w.writerow(t.column_names)
        for r in rows:
            w.writerow([_jsonable(r[c]) for c in t.column_names])
    else:
        table = Table(*t.column_names, show_lines=False)
        for r in rows:
            table.add_row(*["∅" if r[c] is None else str(_jsonable(r[c])) for c in t.column_names])
        console.print(table)
        console.print(f"[dim]{len(rows)} row(s)[/dim]")


def status_records(status: list[DropStatus]) -> list[dict]:
    return [
        {
            "drop_id": s.drop_id,
            "rows": s.rows,
            "groups": {
                g: {"filled": gs.filled, "errored": gs.errored, "missing": gs.missing, "producers": gs.producers}
                for g, gs in s.groups.items()
            },
        }
        for s in status
    ]


def print_status(status: list[DropStatus], fmt: Format, console: Console) -> None:
    if fmt is Format.json:
        sys.stdout.write(json.dumps(status_records(status)) + "\n")
        return
    # one line per (drop, column group): stays readable however many features the table has
    table = Table("drop", "rows", "group", "filled", "errored", "missing", "producer")
    for s in status:
        for i, (g, gs) in enumerate(sorted(s.groups.items())):
            producers = "\n".join(f"{p} ({n})" if len(gs.producers) > 1 else p for p, n in gs.producers.items())
            table.add_row(
                s.drop_id if i == 0 else "",
                str(s.rows) if i == 0 else "",
                g,
                f"[green]{gs.filled}[/green]",
                f"[red]{gs.errored}[/red]" if gs.errored else "0",
                f"[yellow]{gs.missing}[/yellow]" if gs.missing else "0",
                producers or "-",
                end_section=i == len(s.groups) - 1,
            )
        if not s.groups:
            table.add_row(s.drop_id, str(s.rows), "-", "", "", "", "", end_section=True)
    console.print(table)


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
    if health.orphan_data_files:
        console.print(f"orphan data files: {health.orphan_data_files} (left by killed or losing writers; "
                      "harmless to readers; cleanup is not scheduled yet)")
