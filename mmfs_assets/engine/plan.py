"""Which rows of a partition a fill computes: those without a value from the current producer.

Rows already filled by the current producer are skipped (a re-run resumes; ``force`` redoes them), a
``tiny``-profile fill never replaces values pretrained models made, and a frames feature waits for rows
without metadata. The counts go into the fill's report.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np

from mmfs_assets.engine.report import FillReport
from mmfs_assets.engine.sampling import current_producers, row_sampling
from mmfs_assets.features.spec import Feature, LoadedModel
from mmfs_loader.contract import schema as S
from mmfs_loader.decode.video import VideoPlan, plan_columns

M = S.METADATA


class FragmentGoneError(LookupError):
    """A shard names a fragment the table no longer has (compacted since the shards were planned)."""


def row_modes(rows, model: LoadedModel) -> list[str]:
    """Each row's sampling mode under the model's setting (:mod:`mmfs_assets.engine.sampling`); rows without
    metadata get the setting itself (they wait, and are not compared)."""
    if model.sampling != "auto":
        return [model.sampling] * len(rows)
    cols = {c: rows[c].to_pylist() for c in rows.column_names}
    has = cols[M.producer_column]
    return [row_sampling(model.sampling, VideoPlan.from_row({c: v[i] for c, v in cols.items()}), model.frames.count)
            if has[i] is not None else model.sampling for i in range(len(rows))]


def rows_to_fill(ds, feature: Feature, model: LoadedModel, where: str, rep: FillReport, force: bool = False,
                 fragments: Collection[int] | None = None):
    """(rows table, indices of the rows to fill, each row's sampling mode) and the report's row counts;
    ``force``: every row. ``fragments``: only the rows of these fragments (a shard,
    :mod:`mmfs_assets.engine.shards`)."""
    g = feature.group
    container = model.input == "container"
    names = ds.schema.names
    cols = [S.SIZE_BYTES] if container else [*plan_columns(names), M.producer_column, M.error_column]
    cols = list(dict.fromkeys([*cols, g.producer_column]))
    scan = {"columns": cols, "filter": where, "with_row_id": True, "with_row_address": True}
    if fragments is not None:
        frags = [ds.get_fragment(int(f)) for f in sorted(fragments)]
        gone = [f for f, frag in zip(sorted(fragments), frags) if frag is None]
        if gone:
            raise FragmentGoneError(f"fragments {gone} are not in version {ds.version} of the table (compacted since "
                                    "the shards were planned): plan the shards again")
        scan["fragments"] = frags
    rows = ds.scanner(**scan).to_table()
    rep.rows_in_partition = len(rows)
    producers = rows[g.producer_column].to_pylist()
    modes = [""] * len(rows) if container else row_modes(rows, model)
    current = np.array([p in current_producers(model.producer, m) for p, m in zip(producers, modes)], dtype=bool)
    rep.rows_already_current = int(current.sum())
    if force:  # the current rows are recomputed too
        rep.rows_forced, rep.rows_already_current = rep.rows_already_current, 0
        current[:] = False
    elif model.details.get("profile") == "tiny":  # random-init values never replace real ones unless forced
        real = np.array([p is not None and "|profile=tiny" not in p for p in producers], dtype=bool) & ~current
        rep.rows_kept_pretrained = int(real.sum())
        current |= real
    if container:
        return rows, np.flatnonzero(~current), modes
    has_meta = np.array([p is not None for p in rows[M.producer_column].to_pylist()], dtype=bool)
    rep.rows_waiting_for_metadata = int((~current & ~has_meta).sum())
    return rows, np.flatnonzero(~current & has_meta), modes
