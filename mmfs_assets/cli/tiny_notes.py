"""The note commands print (on stderr) when the model-made values they show, search or tag come from
``MMFS_MODEL_PROFILE=tiny``: random-init test models whose values must never pass for real ones.

Every value a tiny model made has ``|profile=tiny`` in its group's producer; the notes read producers
only (a bounded read), never the values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from rich.console import Console

TINY_MARK = "|profile=tiny"  # in the producer of every value the tiny (random-init test) models made


def tiny_note(groups: Iterable[str], meaning: str) -> str | None:
    """One line saying that ``groups``' values come from the tiny profile (None when none do)."""
    names = sorted(set(groups))
    if not names:
        return None
    return (f"note: {', '.join(names)} values come from MMFS_MODEL_PROFILE=tiny (random-init test models): "
            f"{meaning}; fill with MMFS_MODEL_PROFILE=pretrained for real values")


def print_note(console: Console, line: str | None) -> None:
    if line:
        console.print(f"[yellow]{line}[/yellow]", highlight=False, soft_wrap=True)


def tiny_groups(producers: Mapping[str, Iterable[str]]) -> list[str]:
    """The groups (of ``{group: its producers}``) any of whose values a tiny model made."""
    return sorted(g for g, ps in producers.items() if any(TINY_MARK in p for p in ps))


def search_note(table, column: str | None, by_caption: bool, where: str | None, version: int | None,
                tag: str | None) -> str | None:
    """The note for a search's column (a bounded read of its producers, as the search does)."""
    from mmfs_assets.store import search as S
    from mmfs_loader.contract import schema as LS

    ds = table.open(version=version, tag=tag)
    try:
        col = "caption" if by_caption else S.pick_column(ds, column)
        producer = S.producer_of(ds, col, where)
    except S.SearchError:
        return None
    if TINY_MARK not in producer:
        return None
    group = LS.group_of(ds.schema, col) or col
    return tiny_note([group], "captions are placeholder text and scores mean nothing" if by_caption
                     else "these distances mean nothing")


SAMPLE_ROWS = 4096  # producers read per group for the note: a bounded read, whatever the table's size


def sql_note(table, result_columns: Iterable[str], version: int | None, tag: str | None) -> str | None:
    """The note for a query whose result has value columns of groups that tiny models filled (in the version
    read). Reads at most :data:`SAMPLE_ROWS` producers per such group (a filtered scan for the tiny mark would
    read the whole column of a table that has none): tiny values belong to test tables, filled throughout."""
    from mmfs_loader.contract import schema as LS

    ds = table.open(version=version, tag=tag)
    shown = set(result_columns)
    groups = [g for g, cols in LS.groups_in_schema(ds.schema).items()
              if g != LS.METADATA.name and shown.intersection(cols)]
    tiny = [g for g in groups
            if any(p and TINY_MARK in p for p in ds.scanner(columns=[f"{g}_producer"], limit=SAMPLE_ROWS)
                   .to_table().column(0).to_pylist())]
    return tiny_note(tiny, "their values in this result mean nothing")
