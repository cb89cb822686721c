"""FeatureDataset: a pinned, filtered, shuffled, sharded and resumable PyTorch view of the MMFS table.

Construction (in the launching process, once): resolve the version or tag, run the SQL filter (and the
mixture's filters) into sorted row ids, count producers and refuse mixed or incomplete selections.
Iteration (in every reader process): compute the epoch's order from (recipe, epoch) alone
(:mod:`mmfs_loader.ordering`), take this rank's and this worker's share from the resume position, and
read it in blocks with a projected ``take`` (:mod:`mmfs_loader.fetch`), one block read ahead.

Resume: the position is the number of samples this rank has yielded in the epoch. Iterating the
dataset in the main process counts it; with DataLoader workers use :meth:`FeatureDataset.dataloader`,
which counts what the loader hands out. Epoch and position live in a small shared-memory tensor so
persistent DataLoader workers see ``set_epoch`` and ``load_state_dict`` too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import IterableDataset, get_worker_info

from mmfs_loader import recipe as R
from mmfs_loader.clips import ClipSpec
from mmfs_loader.columns import resolve_columns
from mmfs_loader.convert import batch_of_block, rows_of_block
from mmfs_loader.fetch import BlockReader
from mmfs_loader.ordering import epoch_sequence, per_rank, rank_sequence, worker_blocks
from mmfs_loader.selection import GroupCounts, and_filters, check, select
from mmfs_loader.table import open_table

Mixture = Sequence[tuple[str, float]] | Mapping[str, float]


def _dist_rank_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """Rank and world size from torch.distributed when initialised (arguments must then agree)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        r, w = torch.distributed.get_rank(), torch.distributed.get_world_size()
        if (rank is not None and rank != r) or (world_size is not None and world_size != w):
            raise ValueError(f"rank/world_size {rank}/{world_size} disagree with torch.distributed ({r}/{w})")
        return r, w
    if (rank is None) != (world_size is None):
        raise ValueError("give both rank and world_size, or neither")
    r, w = (0, 1) if rank is None else (int(rank), int(world_size))  # type: ignore[arg-type]
    if w < 1 or not 0 <= r < w:
        raise ValueError(f"rank {r} is not in [0, world_size={w})")
    return r, w


def _check_args(**kw) -> None:
    """Clear errors for sizes that make no sense (0 or negative batches, epochs, caches)."""
    for name, lo in [("batch_size", 1), ("samples_per_epoch", 0), ("fetch_size", 1), ("cache_bytes", 0)]:
        v = kw[name]
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            what = "a positive integer" if lo else "an integer >= 0"
            raise ValueError(f"{name} must be {what} (or None), not {v!r}")


class FeatureDataset(IterableDataset):
    """Samples (dicts of column -> value, always with ``id``) of a pinned table version.

    ``columns``: column names or group names (a group gives its value columns); default all but the
    video blob. ``filter``: SQL over the pinned version. ``mixture``: weighted SQL subsets, e.g.
    ``[("height >= 720", 0.7), ("height < 720", 0.3)]``, combined with ``filter``; an epoch then holds
    ``samples_per_epoch`` samples (default: the selected rows) in exactly those proportions.
    ``uneven``: ``"pad"`` (repeat a few samples) or ``"drop"`` so every rank yields the same count.
    ``batch_size``: yield collated batches instead of samples. ``clip``: ``dict(frames, size, stride,
    crop)`` adds ``frames`` uint8 ``[T, C, H, W]``, ``frame_times`` and ``clip_ok``. ``transform`` is
    applied to each sample (or batch). The guard options are described in :mod:`mmfs_loader.selection`.
    ``cache_bytes``: when the requested columns of the selection fit, each reading process loads them
    once and serves every epoch from memory (see :mod:`mmfs_loader.fetch`); 0 always reads by ``take``.
    """

    def __init__(
        self,
        uri: str,
        *,
        version: int | None = None,
        tag: str | None = None,
        columns: Sequence[str] | None = None,
        filter: str | None = None,
        shuffle: bool = False,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        clip: ClipSpec | Mapping[str, Any] | None = None,
        storage_options: dict[str, str] | None = None,
        batch_size: int | None = None,
        uneven: str = "pad",
        mixture: Mixture | None = None,
        samples_per_epoch: int | None = None,
        include_quarantined: bool = False,
        allow_mixed_producers: bool = False,
        drop_incomplete: bool = False,
        producers: Mapping[str, str | Sequence[str]] | None = None,
        transform: Callable[[Any], Any] | None = None,
        fetch_size: int = 1024,
        decode_threads: int | None = None,
        cache_bytes: int = 512 << 20,
    ) -> None:
        super().__init__()
        _check_args(batch_size=batch_size, samples_per_epoch=samples_per_epoch, fetch_size=fetch_size,
                    cache_bytes=cache_bytes)
        table = open_table(uri, version=version, tag=tag, storage_options=storage_options)
        self.uri, self.tag, self.version = uri, tag, int(table.version)
        self.clip = ClipSpec.parse(clip)
        self.columns, groups = resolve_columns(table.schema, columns, clip=self.clip is not None)
        self._types = {c: table.schema.field(c).type for c in self.columns}
        self.filter, self.shuffle, self.seed = filter, bool(shuffle), int(seed)
        self.batch_size = None if batch_size is None else int(batch_size)
        self.uneven = uneven
        self.transform = transform
        self.fetch_size = max(1, int(fetch_size))
        parts = list(mixture.items()) if isinstance(mixture, Mapping) else list(mixture or [])
        self.options = dict(
            include_quarantined=bool(include_quarantined),
            allow_mixed_producers=bool(allow_mixed_producers),
            drop_incomplete=bool(drop_incomplete),
        )
        sels = [
            select(table, f, groups, include_quarantined=include_quarantined, drop_incomplete=drop_incomplete)
            for f in ([and_filters(filter, p) for p, _ in parts] if parts else [filter])
        ]
        self.group_counts = _merge([s.groups for s in sels], groups)
        check(self.group_counts, allow_mixed_producers=allow_mixed_producers, expected=dict(producers or {}))
        self.quarantined = sum(s.quarantined for s in sels)
        self.dropped_incomplete = sum(s.dropped_incomplete for s in sels)
        self._row_ids = np.concatenate([s.row_ids for s in sels]) if sels else np.zeros(0, np.uint64)
        self._sizes = [len(s.row_ids) for s in sels]
        self.mixture = [(p, float(w)) for p, w in parts] or None
        self.samples_per_epoch = int(samples_per_epoch) if samples_per_epoch is not None else sum(self._sizes)
        # Validates the mixture (weights, empty components) now rather than in a worker.
        epoch_sequence(self._sizes, self.seed, 0, self.shuffle, self._weights, self.samples_per_epoch)
        self.rank, self.world_size = _dist_rank_world(rank, world_size)
        per_rank(self.samples_per_epoch, self.world_size, uneven)  # validates `uneven`
        self._reader = BlockReader(
            uri, self.version, self.columns, clip=self.clip, seed=self.seed,
            storage_options=storage_options, decode_threads=decode_threads, cache_bytes=cache_bytes,
            cache_filter=_or([and_filters(filter, p) for p, _ in parts]) if parts else filter, row_ids=self._row_ids,
        )
        self._recipe = self._make_recipe()
        self.fingerprint = R.fingerprint(self._recipe)
        # [epoch, start position, block]; shared memory so persistent workers see changes.
        self._shared = torch.tensor([0, 0, self.batch_size or 1], dtype=torch.int64).share_memory_()
        self._position = 0  # samples of this rank yielded so far in the epoch (main process)
        self._counted_outside = False  # set while a ResumableLoader counts instead

    # ---- sizes -------------------------------------------------------------------------------------
    @property
    def _weights(self) -> list[float] | None:
        return [w for _, w in self.mixture] if self.mixture else None

    @property
    def num_rows(self) -> int:
        """Rows selected (over all mixture components)."""
        return int(sum(self._sizes))

    @property
    def samples_per_rank(self) -> int:
        return per_rank(self.samples_per_epoch, self.world_size, self.uneven)

    def __len__(self) -> int:
        n = self.samples_per_rank
        return -(-n // self.batch_size) if self.batch_size else n

    def column_shape(self, column: str) -> tuple[int, ...]:
        """The per-row tensor shape of a fixed-size vector column (e.g. ``(512,)``), ``()`` for scalars."""
        t = self._types[column]
        shape: list[int] = []
        while pa.types.is_fixed_size_list(t):
            shape.append(t.list_size)
            t = t.value_type
        return tuple(shape)

    @property
    def epoch(self) -> int:
        return int(self._shared[0])

    # ---- order -------------------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` from its beginning (call before iterating, as with DistributedSampler)."""
        self._shared[0], self._shared[1] = int(epoch), 0
        self._position = 0

    def rank_order(self, epoch: int | None = None) -> np.ndarray:
        """Row ids this rank yields in ``epoch`` (default: the current one), in order."""
        e = self.epoch if epoch is None else int(epoch)
        seq = epoch_sequence(self._sizes, self.seed, e, self.shuffle, self._weights, self.samples_per_epoch)
        return self._row_ids[rank_sequence(seq, self.rank, self.world_size, self.uneven)]

    def _set_block(self, block: int) -> None:
        self._shared[2] = max(1, int(block))

    # ---- resume ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Where this rank is: epoch and samples yielded so far in it, tied to the recipe's fingerprint."""
        return {
            "fingerprint": self.fingerprint,
            "epoch": self.epoch,
            "position": int(self._position),
            "rank": self.rank,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from ``state``: the next iteration yields what an uninterrupted run would have next."""
        if state.get("fingerprint") != self.fingerprint:
            raise ValueError("this state was saved by a different dataset (recipe fingerprints differ)")
        if state.get("world_size") != self.world_size:
            raise ValueError(f"state saved with world_size {state.get('world_size')}, this run has {self.world_size}")
        pos = int(state["position"])
        if not 0 <= pos <= self.samples_per_rank:
            raise ValueError(f"position {pos} is outside [0, {self.samples_per_rank}]")
        self._shared[0], self._shared[1] = int(state["epoch"]), pos
        self._position = pos

    # ---- iteration ---------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        epoch, start, block = (int(x) for x in self._shared.tolist())
        seq = self.rank_order(epoch)
        blocks = worker_blocks(len(seq), start, block, worker, workers)
        counting = info is None and not self._counted_outside
        if counting:
            self._position = start
        for (b, e), cols in self._read_ahead(seq, blocks, epoch):
            # The position counts a sample as soon as it is handed out (before the yield returns).
            if self.batch_size:
                batch = batch_of_block(cols)
                batch = self.transform(batch) if self.transform else batch
                if counting:
                    self._position = e
                yield batch
            else:
                for i, row in enumerate(rows_of_block(cols, e - b)):
                    row = self.transform(row) if self.transform else row
                    if counting:
                        self._position = b + i + 1
                    yield row
        if counting and self._position >= len(seq):
            self._shared[1] = 0  # a finished pass: the next iteration starts the epoch again

    def _read_ahead(self, seq: np.ndarray, blocks: list[tuple[int, int]], epoch: int):
        """(block, columns) pairs, reading the next group of blocks (about fetch_size rows) meanwhile."""
        groups: list[list[tuple[int, int]]] = [[]]
        for b in blocks:
            if groups[-1] and sum(e - s for s, e in groups[-1]) + (b[1] - b[0]) > self.fetch_size:
                groups.append([])
            groups[-1].append(b)
        groups = [g for g in groups if g]

        def read(g: list[tuple[int, int]]):
            ids = np.concatenate([seq[s:e] for s, e in g])
            return self._reader.read(ids, epoch)

        with ThreadPoolExecutor(1, thread_name_prefix="mmfs-fetch") as ahead:
            nxt = ahead.submit(read, groups[0]) if groups else None
            for k, g in enumerate(groups):
                assert nxt is not None  # submitted for every group
                cols = nxt.result()
                nxt = ahead.submit(read, groups[k + 1]) if k + 1 < len(groups) else None
                off = 0
                for s, e in g:
                    yield (s, e), {c: v[off : off + e - s] for c, v in cols.items()}
                    off += e - s

    def dataloader(self, batch_size: int | None = None, num_workers: int = 0, **kwargs: Any):
        """A resumable ``torch.utils.data.DataLoader`` over this dataset (spawned workers); see
        :class:`mmfs_loader.dataloader.ResumableLoader`."""
        from mmfs_loader.dataloader import ResumableLoader

        return ResumableLoader(self, batch_size=batch_size, num_workers=num_workers, **kwargs)

    # ---- recipe ------------------------------------------------------------------------------------
    def _make_recipe(self) -> dict[str, Any]:
        return {
            "format": R.FORMAT,
            "uri": self.uri,
            "version": self.version,
            "tag": self.tag,
            "columns": list(self.columns),
            "filter": self.filter,
            "shuffle": self.shuffle,
            "seed": self.seed,
            "uneven": self.uneven,
            "batch_size": self.batch_size,
            "clip": self.clip.to_dict() if self.clip else None,
            "mixture": [{"filter": p, "weight": w, "rows": n} for (p, w), n in zip(self.mixture, self._sizes)]
            if self.mixture
            else None,
            "rows_per_epoch": self.samples_per_epoch,
            **self.options,
            "producers": {g: c.producers for g, c in self.group_counts.items()},
            "rows": self.num_rows,
        }

    def recipe(self) -> dict[str, Any]:
        """Everything that determines what this dataset yields, as JSON-serialisable data."""
        return dict(self._recipe)

    @classmethod
    def from_recipe(cls, recipe: Mapping[str, Any], **kwargs: Any) -> FeatureDataset:
        """Rebuild the dataset of ``recipe`` (``storage_options``, ``rank``, ``world_size``, ``transform``,
        ``fetch_size`` and ``decode_threads`` may be given). Fails with ``VersionNotFoundError`` when the
        version is gone and ``RecipeMismatchError`` when it no longer selects the same rows."""
        r = dict(recipe)
        R.check_format(r)
        mix = [(m["filter"], m["weight"]) for m in r["mixture"]] if r.get("mixture") else None
        ds = cls(
            r["uri"], version=r["version"], columns=r["columns"], filter=r["filter"], shuffle=r["shuffle"],
            seed=r["seed"], clip=r["clip"], batch_size=r["batch_size"], uneven=r["uneven"], mixture=mix,
            samples_per_epoch=r["rows_per_epoch"], include_quarantined=r["include_quarantined"],
            allow_mixed_producers=r["allow_mixed_producers"], drop_incomplete=r["drop_incomplete"],
            producers={g: list(p) for g, p in r["producers"].items()}, **kwargs,
        )
        R.compare(r, ds.recipe())
        ds.tag = ds._recipe["tag"] = r.get("tag")
        return ds


def _or(parts: list[str | None]) -> str | None:
    return None if any(p is None for p in parts) else " OR ".join(f"({p})" for p in parts)


def _merge(per_sel: list[dict[str, GroupCounts]], groups: list[str]) -> dict[str, GroupCounts]:
    out = {g: GroupCounts() for g in groups}
    for counts in per_sel:
        for g, c in counts.items():
            o = out[g]
            for p, n in c.producers.items():
                o.producers[p] = o.producers.get(p, 0) + n
            o.missing += c.missing
            o.errors += c.errors
    for o in out.values():
        o.producers = dict(sorted(o.producers.items()))
    return out
