"""Reading blocks of row ids from the pinned table: projected ``take`` plus decoded clips.

One :class:`BlockReader` lives in each process that reads (the main process or a DataLoader worker);
the Lance handle, thread pool and cache are made lazily there and never pickled. A block's row ids are
de-duplicated and sorted before the ``take`` (a mixture can repeat rows; sorted ids read in file
order), and the rows are put back in the requested order afterwards.

Cache: a random ``take`` costs about 8 us per row here, a scan about 2 us (bench/loader.py), so a
globally shuffled epoch of small rows read by ``take`` runs at a fraction of the speed of a sequential
scan. When the projected columns of the whole selection fit ``cache_bytes`` (estimated from the
column types), the first read loads them with one filtered scan, and every block of every later
epoch is an in-memory gather. Only the selected rows and the requested columns are read; the video
blob never is (clips are decoded per block). Bigger selections are read block by block with ``take``.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import lance
import numpy as np
import pyarrow as pa
import torch

from mmfs_loader import schema as S
from mmfs_loader.clips import ClipSpec, decode_clip, draw
from mmfs_loader.convert import columns_of_block
from mmfs_loader.video import VideoPlan, plan_columns

log = logging.getLogger(__name__)


class BlockReader:
    def __init__(
        self,
        uri: str,
        version: int,
        columns: list[str],
        *,
        clip: ClipSpec | None,
        seed: int,
        storage_options: dict[str, str] | None = None,
        decode_threads: int | None = None,
        cache_bytes: int = 0,
        cache_filter: str | None = None,
        row_ids: np.ndarray | None = None,
    ) -> None:
        self.uri, self.version, self.columns = uri, version, columns
        self.clip, self.seed = clip, seed
        self.storage_options = storage_options
        self.decode_threads = decode_threads or max(1, min(4, os.cpu_count() or 1))
        self._table: lance.LanceDataset | None = None
        self._pool: ThreadPoolExecutor | None = None
        self.cache_bytes, self.cache_filter = cache_bytes, cache_filter
        self._cache_ids = None if row_ids is None else np.unique(row_ids)
        self._cache: pa.Table | None = None
        self._fits: bool | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_table": None, "_pool": None, "_cache": None}

    @property
    def plan_columns(self) -> list[str]:
        """The metadata columns that plan clip decoding (tables described before keyframe times lack one)."""
        return plan_columns(self.table.schema.names)

    @property
    def read_columns(self) -> list[str]:
        extra = [c for c in self.plan_columns if c not in self.columns] if self.clip else []
        return [*self.columns, *extra]

    def caches(self) -> bool:
        """Whether the selection's projected columns fit the cache budget (decided once per process)."""
        if self._fits is None:
            if not self.cache_bytes or self._cache_ids is None:
                self._fits = False
            else:
                schema = self.table.schema
                per_row = sum(_row_bytes(schema.field(c).type) for c in self.read_columns)
                self._fits = per_row * len(self._cache_ids) <= self.cache_bytes
        return self._fits

    def _cached(self) -> pa.Table:
        """The projected columns of every selected row, in row-id order (one filtered scan)."""
        if self._cache is None:
            ids = self._cache_ids
            assert ids is not None
            # Streamed 1k-row batches with read-ahead: measured 3x faster than `to_table` for this scan.
            batches = self.table.to_batches(
                columns=self.read_columns, filter=self.cache_filter, with_row_id=True, batch_size=1024,
                batch_readahead=16,
            )
            t = pa.Table.from_batches(list(batches)).combine_chunks()
            have = t["_rowid"].to_numpy()
            order = None if (np.diff(have.astype(np.int64)) > 0).all() else np.argsort(have, kind="stable")
            pos = np.searchsorted(have, ids, sorter=order)
            if (pos >= len(have)).any() or not np.array_equal(have[pos if order is None else order[pos]], ids):
                raise RuntimeError("the cache scan did not find every selected row (filter changed meaning?)")
            t = t.drop_columns(["_rowid"])
            if order is not None or len(ids) != len(have):  # keep only the selection, in row-id order
                t = t.take(pa.array(pos if order is None else order[pos])).combine_chunks()
            self._cache = t
        return self._cache

    def _take(self, uniq: np.ndarray) -> pa.Table:
        """The read columns of sorted unique row ids, from the table."""
        # `_take_rows` takes by stable row id (the public `take` takes by offset, which differs per version).
        t = self.table._take_rows(pa.array(uniq, pa.uint64()), columns=self.read_columns)
        if t.num_rows != len(uniq):
            raise RuntimeError(f"{len(uniq) - t.num_rows} of {len(uniq)} row ids are missing from version {self.version}")
        return t

    @property
    def table(self) -> lance.LanceDataset:
        if self._table is None:
            self._table = lance.dataset(self.uri, version=self.version, storage_options=self.storage_options)
        return self._table

    def read(self, ids: np.ndarray, epoch: int) -> dict[str, Any]:
        """Per output key, a column for ``ids`` (in that order): tensors ``[B, ...]`` or lists."""
        uniq, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
        if self.caches():  # one in-memory gather, straight into the block's order
            assert self._cache_ids is not None
            t = self._cached().take(pa.array(np.searchsorted(self._cache_ids, ids)))
        else:
            t = self._take(uniq).take(pa.array(inverse))
        cols = columns_of_block(t.select(self.columns))
        if self.clip:
            plans = [VideoPlan.from_row(r) for r in t.select(self.plan_columns).take(pa.array(first)).to_pylist()]
            cols.update(self._clips(uniq, inverse, plans, epoch))
        return cols

    def _clips(self, uniq: np.ndarray, inverse: np.ndarray, plans: list[VideoPlan], epoch: int) -> dict[str, Any]:
        """Decoded clips of the unique rows (``plans[k]`` for ``uniq[k]``), spread to the block's rows."""
        spec = self.clip
        assert spec is not None
        blobs = self._blobs(uniq)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.decode_threads, thread_name_prefix="mmfs-clip")

        def one(k: int):
            row_id = int(uniq[k])
            blob = blobs[k]
            try:
                if blob is None:
                    raise ValueError("no video stored for this row")
                with blob:
                    return decode_clip(blob, plans[k], spec, draw(self.seed, epoch, row_id))
            except Exception as e:  # noqa: BLE001 - one unreadable video must not stop the epoch (or DDP)
                log.warning("row %d: clip not decoded (%s: %s); yielding zeros with clip_ok=False", row_id, type(e).__name__, e)
                return None

        decoded = list(self._pool.map(one, range(len(uniq))))
        good = next((d for d in decoded if d is not None), None)
        shape = good[0].shape if good is not None else (spec.frames, 3, spec.size or 0, spec.size or 0)
        frames, times, ok = [], [], []
        for k in inverse:
            d = decoded[k]
            frames.append(torch.zeros(shape, dtype=torch.uint8) if d is None else torch.from_numpy(d[0]))
            times.append(torch.full((spec.frames,), float("nan"), dtype=torch.float64) if d is None else torch.from_numpy(d[1]))
            ok.append(d is not None)
        return {"frames": frames, "frame_times": times, "clip_ok": torch.tensor(ok, dtype=torch.bool)}

    def _blobs(self, uniq: np.ndarray) -> list[Any]:
        """Blob files of the rows; a pointer that leads nowhere fails the whole ``take_blobs`` call, so
        then each row is opened alone and the broken ones become None."""
        try:
            return self.table.take_blobs(S.VIDEO, ids=pa.array(uniq, pa.uint64()))
        except (OSError, ValueError):
            out: list[Any] = []
            for u in uniq:
                try:
                    out.append(self.table.take_blobs(S.VIDEO, ids=[int(u)])[0])
                except (OSError, ValueError) as e:
                    log.warning("row %d: video not readable (%s)", int(u), e)
                    out.append(None)
            return out

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def _row_bytes(t: pa.DataType) -> int:
    """Estimated in-memory bytes of one value (variable-size values at a guess)."""
    if pa.types.is_fixed_size_list(t):
        return t.list_size * _row_bytes(t.value_type)
    try:
        return max(1, t.bit_width // 8)
    except ValueError:  # strings, binaries, lists
        return 256 if (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_binary(t)) else 64
