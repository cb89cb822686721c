"""The node cache: the projected columns of a whole selection, filled in the background, shared by mapping.

A random ``take`` costs 10-30 us per row here while a run of neighbouring rows costs about 1-2 us
(bench/loader.py), so a globally shuffled epoch of small rows read by ``take`` runs at a fraction of a
sequential read. When the requested columns of the selection fit ``cache_bytes``, one process of the
node reads them once into the node directory (:mod:`mmfs_loader.reads.node`), by offset in pieces of
neighbouring rows, several at once, and every reader of the node gathers its blocks from the
memory-mapped files: one copy in memory for all ranks and workers.

Nothing waits for it. The first reader to need the cache starts the fill in a background thread (the
others see its lock taken and go on); until the fill is published every reader serves its blocks by
``take``, so the first batch comes as fast as without a cache. A killed filler leaves only a temporary
directory and frees its lock; the next reader that checks starts the fill again.

Layout of ``cache-<hash>/``: ``meta.json`` (columns and how each is stored), ``<k>.npy`` per number or
fixed-size vector column (``[rows, ...]`` in cache order, with ``<k>.valid.npy`` when it holds nulls) or
short ASCII string column (fixed-width bytes), and ``rest.arrow`` (an uncompressed Arrow IPC file of the
other columns: long or non-ASCII strings, lists, timestamps), all in the order of the sorted unique
selected row ids.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from mmfs_loader.reads.convert import short_strings, strings_at
from mmfs_loader.reads.node import NodeDir, has_room, key_of, map_npy

log = logging.getLogger(__name__)

RETRY_S = 5.0  # how often a reader looks again for a filler that died
FILL_ROWS = 1024  # cache positions per take while filling
_MAP_LOCK = threading.Lock()
FILL_THREADS = 8  # takes in flight while filling (Lance's take waits on I/O and releases the GIL)


def row_bytes(t: pa.DataType) -> int:
    """Estimated in-memory bytes of one value (variable-size values at a guess)."""
    if pa.types.is_fixed_size_list(t):
        return t.list_size * row_bytes(t.value_type)
    try:
        return max(1, t.bit_width // 8)
    except ValueError:  # strings, binaries, lists
        return 256 if (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_binary(t)) else 64


def _numpy_kind(t: pa.DataType) -> tuple[str, tuple[int, ...]] | None:
    """(numpy dtype, per-row shape) of a column stored as ``.npy``, or None for ``rest.arrow``."""
    shape: list[int] = []
    while pa.types.is_fixed_size_list(t):
        shape.append(t.list_size)
        t = t.value_type
    if len(shape) > 1 or not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
        return None
    return np.dtype(t.to_pandas_dtype()).str, tuple(shape)


class ColumnCache:
    """The cache of ``columns`` for the sorted unique row ids ``ids`` (see the module docstring)."""

    def __init__(self, node: NodeDir, schema: pa.Schema, columns: list[str], n_rows: int) -> None:
        self.node = node
        self.columns = list(columns)
        self.types = {c: schema.field(c).type for c in self.columns}
        self.n_rows = int(n_rows)
        self.name = "cache-" + key_of({"columns": self.columns, "types": [str(self.types[c]) for c in self.columns]})
        self.nbytes = sum(row_bytes(self.types[c]) for c in self.columns) * self.n_rows
        self._open: dict[str, Any] | None = None
        self._next_try = 0.0
        self._filler: threading.Thread | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_open": None, "_next_try": 0.0, "_filler": None}

    @property
    def path(self) -> Path:
        return self.node.file(self.name)

    # ---- reading -------------------------------------------------------------------------------------
    def ready(self) -> bool:
        """Whether the cache is published (and then mapped into this process)."""
        if self._open is None and (self.path / "meta.json").exists():
            with _MAP_LOCK:  # the read-ahead threads ask at once: map once
                if self._open is None:
                    self._open = self._map()
        return self._open is not None

    def _map(self) -> dict[str, Any]:
        meta = json.loads((self.path / "meta.json").read_text())
        arrays: dict[str, Any] = {}
        for k, c in enumerate(meta["columns"]):
            if meta["stored"][c] == "npy":
                valid = self.path / f"{k}.valid.npy"
                values = map_npy(self.path / f"{k}.npy")
                with warnings.catch_warnings():  # the mapping is read-only; gathers copy out of it
                    warnings.simplefilter("ignore", UserWarning)
                    as_tensor = torch.from_numpy(values) if values.dtype != np.uint64 else None
                arrays[c] = (values, map_npy(valid) if valid.exists() else None, as_tensor)
        strings = {c: map_npy(self.path / f"{k}.npy") for k, c in enumerate(meta["columns"]) if meta["stored"][c] == "strings"}
        rest = None
        if (self.path / "rest.arrow").exists():
            rest = pa.ipc.open_file(pa.memory_map(str(self.path / "rest.arrow"))).read_all()
        return {"arrays": arrays, "strings": strings, "rest": rest}

    def gather(self, positions: np.ndarray, as_tensors: set[str]) -> tuple[dict[str, Any], pa.Table]:
        """The cached columns at ``positions`` (indices into the sorted unique selection), in that order:
        null-free number and vector columns named in ``as_tensors`` straight as tensors (one numpy gather
        from the mapped file: the tensors the Arrow conversion would give), the others as an Arrow table."""
        assert self._open is not None
        arrays, strings, rest = self._open["arrays"], self._open["strings"], self._open["rest"]
        tensors: dict[str, Any] = {}
        others: list[pa.Array] = []
        names: list[str] = []
        idx = pa.array(positions)
        tidx = torch.from_numpy(np.asarray(positions, dtype=np.int64))
        for c in self.columns:
            t = self.types[c]
            if c in arrays:
                values, valid, as_tensor = arrays[c]
                if valid is None and c in as_tensors and as_tensor is not None:
                    # torch's gather releases the GIL: it overlaps the consumer's work
                    tensors[c] = torch.index_select(as_tensor, 0, tidx)
                    continue
                v = values[positions]
                mask = None if valid is None else ~np.asarray(valid[positions])
                if pa.types.is_fixed_size_list(t):
                    others.append(pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1), type=t.value_type), type=t,
                                                                    mask=None if mask is None else pa.array(mask)))
                else:
                    others.append(pa.array(v, type=t, mask=mask))
            elif c in strings and c in as_tensors:
                tensors[c] = strings_at(strings[c], positions)
                continue
            elif c in strings:
                others.append(pa.array(strings_at(strings[c], positions), type=t))
            else:
                assert rest is not None
                others.append(rest[c].take(idx))
            names.append(c)
        return tensors, pa.table(others, names=names) if names else pa.table({})

    # ---- filling -------------------------------------------------------------------------------------
    def start_fill(self, reader: Any, offsets: np.ndarray) -> None:
        """Fill the cache in a background thread unless it is published or another process fills it.
        ``reader``: a :class:`mmfs_loader.reads.fetch.BlockReader`; ``offsets``: the selected rows' offsets in
        the pinned version, in cache order."""
        if self.ready() or time.monotonic() < self._next_try or (self._filler is not None and self._filler.is_alive()):
            return
        self._next_try = time.monotonic() + RETRY_S
        if not has_room(self.node.path, self.nbytes):
            log.warning("the node cache (%d MB) does not fit %s: reading by take", self.nbytes >> 20, self.node.path)
            self._next_try = float("inf")
            return
        self._filler = threading.Thread(target=self._fill_if_free, args=(reader, offsets), name="mmfs-cache-fill", daemon=True)
        self._filler.start()

    def _fill_if_free(self, reader: Any, offsets: np.ndarray) -> None:
        try:
            with self.node.lock(self.name + ".lock", blocking=False) as mine:
                if mine and not (self.path / "meta.json").exists():
                    t0 = time.perf_counter()
                    self._fill(reader, offsets)
                    log.info("node cache of %d rows filled in %.2f s", len(offsets), time.perf_counter() - t0)
        except Exception as e:  # noqa: BLE001 - readers go on by take; the next reader tries again
            if isinstance(e, FileNotFoundError) and not self.node.path.exists():
                # the node directory was released under this thread: the dataset was closed or the process
                # is exiting (the finalizer of the last user removes the directory); nothing to warn about
                log.debug("node cache fill stopped: the node directory was released")
                return
            log.warning("node cache not filled (%s: %s); reading by take", type(e).__name__, e)

    def fill_now(self, reader: Any, offsets: np.ndarray) -> bool:
        """Fill the cache in this thread unless it cannot fit (waits for another process filling it);
        whether it is ready. A failure is logged and the reader goes on by ``take``."""
        if self.ready():
            return True
        if time.monotonic() < self._next_try:
            return False
        if not has_room(self.node.path, self.nbytes):
            log.warning("the node cache (%d MB) does not fit %s: reading by take", self.nbytes >> 20, self.node.path)
            self._next_try = float("inf")
            return False
        try:
            t0 = time.perf_counter()
            self.fill(reader, offsets)
            log.info("node cache of %d rows filled before the first batch in %.2f s", len(offsets), time.perf_counter() - t0)
        except Exception as e:  # noqa: BLE001 - readers go on by take
            self._next_try = time.monotonic() + RETRY_S
            log.warning("node cache not filled (%s: %s); reading by take", type(e).__name__, e)
        return self.ready()

    def fill(self, reader: Any, offsets: np.ndarray) -> None:
        """Fill the cache now, in this thread (it waits for another process filling it)."""
        with self.node.lock(self.name + ".lock"):
            if not (self.path / "meta.json").exists():
                self._fill(reader, offsets)

    def _fill(self, reader: Any, offsets: np.ndarray) -> None:
        self.node.path.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{self.name}.", dir=self.node.path))
        try:
            self._write(tmp, reader, offsets)
            if self.path.exists():  # left by a process that died while publishing
                shutil.rmtree(self.path)
            os.replace(tmp, self.path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _write(self, out: Path, reader: Any, offsets: np.ndarray) -> None:
        """Read the rows in pieces of ``FILL_ROWS`` consecutive cache positions, several pieces at once
        (parallel takes by offset measured faster than one scan), each written where it belongs."""
        n = len(offsets)
        stored = {c: ("npy" if _numpy_kind(self.types[c]) else "arrow") for c in self.columns}
        mats: dict[str, NpyWriter] = {}
        for k, c in enumerate(self.columns):
            kind = _numpy_kind(self.types[c])
            if kind is not None:
                mats[c] = NpyWriter(out / f"{k}.npy", np.dtype(kind[0]), (n, *kind[1]))
        valid: dict[str, np.ndarray] = {}
        rest_cols = [c for c in self.columns if stored[c] == "arrow"]

        def piece(i: int) -> pa.Table | None:
            off = np.asarray(offsets[i : i + FILL_ROWS], dtype=np.int64)
            order = None if len(off) < 2 or bool((np.diff(off) > 0).all()) else np.argsort(off, kind="stable")
            t = reader._take(off if order is None else off[order])
            if order is not None:  # back to cache order
                t = t.take(pa.array(np.argsort(order, kind="stable")))
            pos = np.arange(i, i + t.num_rows)
            for c, m in mats.items():
                col = t[c].combine_chunks()
                if col.null_count:
                    valid.setdefault(c, np.ones(n, dtype=bool))[pos] = col.is_valid().to_numpy(zero_copy_only=False)
                    col = col.fill_null(0) if not pa.types.is_fixed_size_list(col.type) else _zero_nulls(col)
                if pa.types.is_fixed_size_list(col.type):
                    m.put(pos, col.flatten().to_numpy(zero_copy_only=False).reshape(len(pos), *m.shape[1:]))
                else:
                    m.put(pos, col.to_numpy(zero_copy_only=False))
            return t.select(rest_cols) if rest_cols else None

        with ThreadPoolExecutor(FILL_THREADS, thread_name_prefix="mmfs-cache-take") as pool:
            parts = list(pool.map(piece, range(0, n, FILL_ROWS)))
        for m in mats.values():
            m.close()  # no fsync: readers map the same pages; forcing them to disk would only cost time
        for c, v in valid.items():
            np.save(out / f"{self.columns.index(c)}.valid.npy", v)
        if rest_cols:
            rest = pa.concat_tables([p for p in parts if p is not None]).combine_chunks()
            for c in rest_cols:  # short ASCII strings (ids) as fixed-width arrays: 8x faster to gather
                sa = short_strings(rest[c])
                if sa is not None:
                    np.save(out / f"{self.columns.index(c)}.npy", sa)
                    stored[c] = "strings"
                    rest = rest.drop_columns([c])
            if rest.num_columns:
                with pa.OSFile(str(out / "rest.arrow"), "wb") as f, pa.ipc.new_file(f, rest.schema) as w:
                    w.write_table(rest)
        (out / "meta.json").write_text(json.dumps({"columns": self.columns, "stored": stored, "rows": n}))


class NpyWriter:
    """An ``.npy`` file written row range by row range with ``pwrite``: rows usually arrive in order, and
    a write costs one copy, where filling a fresh memory map costs a page fault per 4 KiB."""

    def __init__(self, path: Path, dtype: np.dtype, shape: tuple[int, ...]) -> None:
        self.shape, self.dtype = shape, dtype
        self.row = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        self.f = open(path, "wb")
        np.lib.format.write_array_header_1_0(self.f, {"descr": dtype.str, "fortran_order": False, "shape": shape})
        self.f.flush()
        self.header = self.f.tell()
        self.f.truncate(self.header + self.row * shape[0])

    def put(self, pos: np.ndarray, values: np.ndarray) -> None:
        """Write ``values[i]`` at row ``pos[i]``, one ``pwrite`` per run of consecutive rows."""
        order = None if len(pos) < 2 or bool((np.diff(pos) > 0).all()) else np.argsort(pos, kind="stable")
        if order is not None:
            pos, values = pos[order], values[order]
        values = np.ascontiguousarray(values, dtype=self.dtype)
        breaks = np.flatnonzero(np.diff(pos) != 1) + 1
        for a, b in zip([0, *breaks.tolist()], [*breaks.tolist(), len(pos)]):
            os.pwrite(self.f.fileno(), values[a:b].data.cast("B"), self.header + int(pos[a]) * self.row)

    def close(self) -> None:
        self.f.close()


def _zero_nulls(col: pa.FixedSizeListArray) -> pa.FixedSizeListArray:
    """A fixed-size list column with its null entries as zero vectors (their validity is kept apart)."""
    t = col.type
    flat = np.zeros((len(col), t.list_size), dtype=t.value_type.to_pandas_dtype())
    ok = col.is_valid().to_numpy(zero_copy_only=False)
    if ok.any():
        flat[ok] = col.filter(pa.array(ok)).flatten().to_numpy(zero_copy_only=False).reshape(-1, t.list_size)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1), type=t.value_type), type=t)
