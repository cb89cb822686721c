"""Drops that are not (fully) in the table, and why: for ``mmfs status``.

Three states, each with the reason a person needs to act on it:

- ``waiting``: not ready yet (no ``_READY``, changed within the quiet period, or files with modification times
  in the future: :func:`mmfs_assets.ingest.drops.judge_readiness` names them);
- ``not ingested``: ready, but no ingest ran for it yet (the daemon is not running, or its run failed);
- ``files not ingested``: ingested, but files in the drop that the table does not account for (copied in
  after ``_READY`` and the ingest; :mod:`mmfs_assets.ingest.ledger`).

Refused drop folders (unsafe names, symlinks) are reported on their own (:func:`..staleness.refused_drops`).
This lists every drop's files (a walk of each folder, or a listing of each prefix): ``--drop`` narrows it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from mmfs_assets.ingest.drop_source import DropSource
from mmfs_assets.ingest.drops import names_text, unsafe_reason
from mmfs_assets.ingest.ledger import accounted
from mmfs_assets.ingest.object_drops import ObjectDrops
from mmfs_loader.contract.table import TableRef

WAITING, NOT_INGESTED, FILES_NOT_INGESTED = "waiting", "not ingested", "files not ingested"


@dataclass
class DropAttention:
    drop_id: str
    state: str
    why: str
    files: list[str] = field(default_factory=list)  # files not ingested yet (FILES_NOT_INGESTED)

    def record(self) -> dict:
        return asdict(self)


def drop_names(source: DropSource) -> list[str]:
    """Every drop name under the source that could be ingested (hidden, staging and refused ones left out)."""
    if isinstance(source, ObjectDrops):
        return [n for n in source.drop_names() if not n.startswith((".", "_")) and not unsafe_reason(n)]
    return [n for n, reason in source.candidates(set()) if not reason]


def drops_needing_attention(source: DropSource, table: TableRef, quiet_seconds: float, *,
                            drops: list[str] | None = None, ds=None, now: float | None = None) -> list[DropAttention]:
    """The drops (all, or ``drops``) that wait, were not ingested, or hold files the table lacks, sorted by name."""
    names = drop_names(source)
    if drops is not None:
        names = [n for n in names if n in set(drops)]
    if not names:
        return []
    acc = accounted(table, names, ds)
    out = []
    for name in names:
        a = acc.get(name)
        if a is None or not a.ingested:
            r = source.readiness(name, quiet_seconds, now)
            if r.ready:
                out.append(DropAttention(name, NOT_INGESTED, (
                    "ready, but not ingested yet: the drop sensor requests its ingest within 15 s while the Dagster "
                    f"daemon runs (a failed run stays failed: see it in the UI), or run `mmfs materialize -p {name}`")))
            else:
                out.append(DropAttention(name, WAITING, r.why))
            continue
        files, _ = source.open(name).list_files()
        missing = a.missing(files)
        if not missing:
            continue
        when = f" at {a.last_ingest:%Y-%m-%d %H:%M:%S} UTC" if a.last_ingest else ""
        why = (f"{len(missing)} file(s) the table does not hold, added or changed after its ingest{when}: "
               f"{names_text([f.relpath for f in missing])}; the drop sensor runs its ingest again once the drop "
               f"is quiet for {quiet_seconds:g} s, or run `mmfs materialize -p {name} -s videos`")
        if not a.ingests:
            why += (" (this drop has no ingest record: it was ingested before MMFS kept one, or its ingest failed "
                    "half-way; files whose video another drop holds are listed too until a re-run records them)")
        out.append(DropAttention(name, FILES_NOT_INGESTED, why, [f.relpath for f in missing]))
    return out
