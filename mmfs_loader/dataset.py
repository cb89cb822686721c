"""FeatureDataset: a pinned, filtered, shuffled, sharded and resumable PyTorch view of the MMFS table.

Construction (in the launching process, once): resolve the version or tag, run the SQL filter (and the
mixture's filters) into sorted row ids, count producers and refuse mixed or incomplete selections, and
write the selection into the node directory (:mod:`mmfs_loader.reads.node`).
Iteration (in every reader process): map the selection, get the epoch's order (a pure function of the
recipe and the epoch, :mod:`mmfs_loader.reads.ordering`; a global one is computed once per node and mapped),
take this rank's and this worker's share from the resume position, and read it in blocks: from the
node cache when the selection fits it (:mod:`mmfs_loader.reads.cache`), by projected ``take`` until then
or otherwise (:mod:`mmfs_loader.reads.fetch`), one read ahead.

Nothing big is pickled into DataLoader workers: they map the node's files.

Resume: the position is the number of samples this rank has handed out in the epoch. Iterating the
dataset in the main process counts it (:meth:`FeatureDataset.state_dict`); a DataLoader counts what it
hands out and asks :meth:`FeatureDataset.state_at` (:class:`mmfs_loader.dataloader.FeatureDataLoader`
does). Epoch and start position live in a small shared-memory tensor so persistent DataLoader workers
see ``set_epoch`` and ``load_state_dict`` too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import IterableDataset, get_worker_info

from mmfs_loader import recipe as R
from mmfs_loader.contract import leases
from mmfs_loader.contract.table import TableRef, open_table
from mmfs_loader.dataloader import FeatureDataLoader
from mmfs_loader.decode.clip_decoders import check_clip_decoder
from mmfs_loader.decode.clips import ClipSpec
from mmfs_loader.options import Guard, Part, Reading, Shuffle, parse_mixture, refuse_flat
from mmfs_loader.reads.block_reads import read_blocks
from mmfs_loader.reads.cache import ColumnCache, row_bytes
from mmfs_loader.reads.columns import resolve_columns
from mmfs_loader.reads.convert import batch_of_block, list_keys_for, rows_of_block
from mmfs_loader.reads.fetch import BlockReader, read_columns
from mmfs_loader.reads.node import key_of
from mmfs_loader.reads.node_selection import NodeSelection
from mmfs_loader.reads.ordering import RankOrder, WindowedOrder, epoch_sequence, per_rank, worker_blocks
from mmfs_loader.reads.selection import GroupCounts, and_filters, check, select

log = logging.getLogger(__name__)

Mixture = Sequence[Part] | Sequence[tuple[str, float]] | Mapping[str, float]


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
    """Clear errors for sizes that make no sense (0 or negative batches, epochs)."""
    for name, lo in [("batch_size", 1), ("samples_per_epoch", 0)]:
        v = kw[name]
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            what = "a positive integer" if lo else "an integer >= 0"
            raise ValueError(f"{name} must be {what} (or None), not {v!r}")


class FeatureDataset(IterableDataset):
    """Samples (dicts of column -> value, always with ``id``) of a pinned table version.

    What is read: ``columns`` (column or group names; a group gives its value columns; default all
    but the video blob), ``filter`` (SQL over the pinned version), ``mixture`` (weighted subsets,
    ``[Part("height >= 720", 0.7), Part("height < 720", 0.3)]``, combined with ``filter``; an epoch then
    holds ``samples_per_epoch`` samples, default the selected rows, in exactly those proportions) and
    ``clip`` (``ClipSpec(frames, size, stride, crop)`` adds ``frames`` uint8 ``[T, C, H, W]``,
    ``frame_times`` and ``clip_ok``). ``guard``: what the provenance guard accepts (:class:`Guard`).

    In which order: ``shuffle`` (``True`` or ``Shuffle()``: exact global shuffle; ``Shuffle(window=...)``:
    the windowed shuffle for selections larger than memory), ``seed``; sharded over ``rank`` of
    ``world_size`` (from torch.distributed when initialised), ``uneven="pad"`` (repeat a few samples) or
    ``"drop"`` so every rank yields the same count.

    How it comes out: ``batch_size`` (yield collated batches instead of samples: numbers ``[B]`` and vectors
    ``[B, D]`` as tensors; ``depth`` always a list of float32 ``[K, H, W]`` tensors, one per sample at its
    video's resolution, whatever the batch's mix of resolutions), ``transform`` (applied to each sample or batch), ``reading`` (:class:`Reading`: fetch size, decode threads, cache).

    ``len(dataset)`` is what one pass over this rank yields: batches with ``batch_size``, else samples;
    :attr:`samples_per_rank` counts samples either way. The flat keywords of 0.1.0
    (``include_quarantined``, ``allow_mixed_producers``, ``drop_incomplete``, ``producers``: now in
    ``guard=Guard(...)``; ``fetch_size``, ``decode_threads``, ``cache_bytes``: now in ``reading=Reading(...)``)
    fail with a ``TypeError`` that says so.
    """

    def __init__(
        self,
        uri: str,
        *,
        version: int | None = None,
        tag: str | None = None,
        columns: Sequence[str] | None = None,
        filter: str | None = None,
        mixture: Mixture | None = None,
        samples_per_epoch: int | None = None,
        shuffle: bool | Shuffle = False,
        seed: int = 0,
        guard: Guard | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        uneven: str = "pad",
        clip: ClipSpec | Mapping[str, Any] | None = None,
        batch_size: int | None = None,
        transform: Callable[[Any], Any] | None = None,
        reading: Reading | None = None,
        storage_options: dict[str, str] | None = None,
        **unknown: Any,
    ) -> None:
        refuse_flat(unknown)  # the flat keywords of 0.1.0: a TypeError naming the group to use
        super().__init__()
        _check_args(batch_size=batch_size, samples_per_epoch=samples_per_epoch)
        self.guard: Guard = guard if guard is not None else Guard()
        self.reading: Reading = reading if reading is not None else Reading()
        self.order: Shuffle | None = Shuffle.parse(shuffle)
        table = open_table(uri, version=version, tag=tag, storage_options=storage_options)
        self.uri, self.tag, self.version = uri, tag, int(table.version)
        self.storage_options = storage_options
        self.clip = ClipSpec.parse(clip)
        self.list_keys = list_keys_for(self.clip)  # batch keys that are always per-sample lists
        self.columns, groups = resolve_columns(table.schema, columns, clip=self.clip is not None)
        self._types = {c: table.schema.field(c).type for c in self.columns}
        self.filter, self.seed = filter, int(seed)
        self.batch_size = None if batch_size is None else int(batch_size)
        self.uneven = uneven
        self.transform = transform
        parts = parse_mixture(mixture) or []
        self.mixture = [(p.filter, float(p.weight)) for p in parts] or None
        if self.mixture and self.order is not None and self.order.windowed:
            raise ValueError("a windowed shuffle does not combine with a mixture yet: use shuffle=True")
        self.options = self.guard.flags()
        self._filters = [and_filters(filter, p) for p, _ in self.mixture] if self.mixture else [filter]
        self._groups = groups
        sels = self._select(table)
        self.group_counts = _merge([s.groups for s in sels], groups)
        check(self.group_counts, allow_mixed_producers=self.guard.allow_mixed_producers, expected=dict(self.guard.producers or {}))
        self.quarantined = sum(s.quarantined for s in sels)
        self.dropped_incomplete = sum(s.dropped_incomplete for s in sels)
        self._sizes = [len(s.row_ids) for s in sels]
        self.samples_per_epoch = int(samples_per_epoch) if samples_per_epoch is not None else sum(self._sizes)
        # Validates the mixture (weights, empty components) now rather than in a worker.
        if self.mixture or self.samples_per_epoch != self.num_rows:
            epoch_sequence(self._sizes, self.seed, 0, self.shuffle, self._weights, self.samples_per_epoch)
        self.rank, self.world_size = _dist_rank_world(rank, world_size)
        self._lease = None  # one lease per job (rank 0) keeps the pinned version from maintenance
        if self.reading.hold_version and self.rank == 0:
            self._lease = leases.hold(self, TableRef(uri, storage_options), self.version)
        per_rank(self.samples_per_epoch, self.world_size, uneven)  # validates `uneven`
        self._sel = NodeSelection(
            {"uri": self.uri, "version": self.version, "filters": self._filters, "groups": self._groups,
             "include_quarantined": self.guard.include_quarantined, "drop_incomplete": self.guard.drop_incomplete},
            np.concatenate([s.row_ids for s in sels]) if sels else np.zeros(0, np.uint64),
            np.concatenate([s.offsets for s in sels]) if sels else np.zeros(0, np.uint64),
            mixture=bool(self.mixture), root=self.reading.cache_dir, reselect=self._reselect,
        )
        self._node = self._sel.node
        cols = read_columns(table.schema.names, self.columns, self.clip)
        n_unique = len(self.selected[0])
        est = sum(row_bytes(table.schema.field(c).type) for c in cols) * n_unique
        cache = None
        if self._node is not None and self.reading.cache_bytes and est <= self.reading.cache_bytes and n_unique:
            cache = ColumnCache(self._node, table.schema, cols, n_unique)
        if self.clip is not None:
            check_clip_decoder(self.reading.decoder)
        self._reader = BlockReader(
            uri, self.version, self.columns, clip=self.clip, seed=self.seed,
            storage_options=storage_options, decode_threads=self.reading.decode_threads, cache=cache,
            decoder=self.reading.decoder,
        )
        self._recipe = self._make_recipe()
        self.fingerprint = R.fingerprint(self._recipe)
        # [epoch, start position, block]; shared memory so persistent workers see changes.
        self._shared = torch.tensor([0, 0, self.batch_size or 1], dtype=torch.int64).share_memory_()
        self._position = 0  # samples of this rank yielded so far in the epoch (main process)
        self._orders: dict[tuple[int, int], RankOrder] = {}

    # ---- selection and node files --------------------------------------------------------------------
    def _select(self, table=None) -> list:
        table = table if table is not None else open_table(self.uri, version=self.version, storage_options=self.storage_options)
        return [
            select(table, f, self._groups, include_quarantined=self.guard.include_quarantined,
                   drop_incomplete=self.guard.drop_incomplete)
            for f in self._filters
        ]

    def _reselect(self) -> tuple[np.ndarray, np.ndarray]:
        """The selection again (when its node files were removed under a reader)."""
        sels = self._select()
        return np.concatenate([s.row_ids for s in sels]), np.concatenate([s.offsets for s in sels])

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_orders": {}, "_lease": None}  # workers read under the main process's lease

    @property
    def row_ids(self) -> np.ndarray:
        """The selection: stable row ids, component after component (sorted within each)."""
        return self._sel.row_ids

    @property
    def offsets(self) -> np.ndarray:
        """Each selected row's offset in the pinned version (parallel to :attr:`row_ids`)."""
        return self._sel.offsets

    @property
    def selected(self) -> tuple[np.ndarray, np.ndarray]:
        """The sorted unique row ids of the selection and their offsets (what the node cache holds)."""
        return self._sel.selected

    # ---- sizes -------------------------------------------------------------------------------------
    @property
    def shuffle(self) -> bool:
        return self.order is not None

    @property
    def _weights(self) -> list[float] | None:
        return [w for _, w in self.mixture] if self.mixture else None

    @property
    def num_rows(self) -> int:
        """Rows selected (over all mixture components)."""
        return int(sum(self._sizes))

    @property
    def samples_per_rank(self) -> int:
        """Samples this rank yields per epoch."""
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

    @property
    def block_size(self) -> int:
        """Samples per block: each DataLoader worker reads whole blocks, dealt round-robin, so a loader
        yields the rank's order whatever its worker count. Set it to the loader's batch size (the
        dataset's ``batch_size`` when it batches); a windowed shuffle's order depends on it."""
        return int(self._shared[2])

    @block_size.setter
    def block_size(self, block: int) -> None:
        if self.batch_size and int(block) != self.batch_size:
            raise ValueError(f"the dataset yields batches of {self.batch_size}: its block size is that")
        self._shared[2] = max(1, int(block))

    @property
    def resume_position(self) -> int:
        """Where the next pass over the current epoch starts (samples of this rank)."""
        return int(self._shared[1])

    # ---- order -------------------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` from its beginning (call before iterating, as with DistributedSampler)."""
        self._shared[0], self._shared[1] = int(epoch), 0
        self._position = 0

    def _order(self, epoch: int, block: int) -> RankOrder:
        key = (int(epoch), int(block) if self.order is not None and self.order.windowed else 0)
        if key not in self._orders:
            self._orders.clear()
            self._orders[key] = self._make_order(*key)
        return self._orders[key]

    def _make_order(self, epoch: int, block: int) -> RankOrder:
        n = self.samples_per_epoch
        if self.order is not None and self.order.windowed:
            return WindowedOrder(n, self.rank, self.world_size, self.uneven, seed=self.seed, epoch=epoch,
                                 window=int(self.order.window or 1), buffer=self.order.buffer, lanes=self.order.lanes,
                                 block=block)
        if not self.shuffle and not self.mixture:
            return RankOrder(None, n, self.rank, self.world_size, self.uneven)

        def compute() -> np.ndarray:
            return epoch_sequence(self._sizes, self.seed, epoch, self.shuffle, self._weights, n)

        if self._node is None:
            return RankOrder(compute(), n, self.rank, self.world_size, self.uneven)
        okey = key_of({"seed": self.seed, "shuffle": self.shuffle, "mixture": self.mixture, "n": n})
        seq = self._node.shared_array(f"order-{okey}-e{epoch}.npy", compute)
        self._node.remove_older(f"order-{okey}-e", keep={epoch - 1, epoch})  # 8 bytes a row per epoch otherwise
        return RankOrder(seq, n, self.rank, self.world_size, self.uneven)

    def rank_order(self, epoch: int | None = None) -> np.ndarray:
        """Row ids this rank yields in ``epoch`` (default: the current one), in order."""
        e = self.epoch if epoch is None else int(epoch)
        order = self._order(e, self.block_size)
        return self.row_ids[order.positions(0, len(order))]

    # ---- resume ------------------------------------------------------------------------------------
    def state_at(self, position: int) -> dict[str, Any]:
        """The state of this rank after ``position`` samples of the current epoch were handed out:
        what a DataLoader built by hand saves (it counts the samples it yielded)."""
        return {
            "fingerprint": self.fingerprint,
            "epoch": self.epoch,
            "position": int(position),
            "rank": self.rank,
            "world_size": self.world_size,
            "block_size": self.block_size,
        }

    def state_dict(self) -> dict[str, Any]:
        """Where this rank is when the dataset itself is iterated (in the main process)."""
        return self.state_at(self._position)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from ``state``: the next iteration yields what an uninterrupted run would have next."""
        if state.get("fingerprint") != self.fingerprint:
            raise ValueError("this state was saved by a different dataset (recipe fingerprints differ)")
        if state.get("world_size") != self.world_size:
            raise ValueError(f"state saved with world_size {state.get('world_size')}, this run has {self.world_size}")
        saved_block = state.get("block_size")
        if self.order is not None and self.order.windowed and saved_block not in (None, self.block_size):
            raise ValueError(f"state saved with block size {saved_block} (the batch size), this run has {self.block_size}: "
                             "a windowed shuffle's order depends on it")
        pos = int(state["position"])
        if not 0 <= pos <= self.samples_per_rank:
            raise ValueError(f"position {pos} is outside [0, {self.samples_per_rank}]")
        self._shared[0], self._shared[1] = int(state["epoch"]), pos
        self._position = pos

    # ---- iteration ---------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Start filling the node cache in the background (when the selection fits it). Iteration does
        this itself; a loader calls it before starting workers so the fill starts at once."""
        if self._reader.cache is not None:
            self._reader.start_cache(*self.selected)

    def fill_cache(self) -> bool:
        """Fill the node cache now and wait for it (another process may be filling it); whether the
        selection has a cache."""
        cache = self._reader.cache
        if cache is None:
            return False
        if not cache.ready():
            cache.fill(self._reader, self.selected[1])
        return cache.ready()

    @property
    def uses_cache(self) -> bool:
        """Whether the selection fits the node cache (it is filled on first use)."""
        return self._reader.cache is not None

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        epoch, start, block = (int(x) for x in self._shared.tolist())
        order = self._order(epoch, block)
        blocks = worker_blocks(len(order), start, block, worker, workers)
        counting = info is None
        if counting:
            self._position = start
        for (b, e), cols in read_blocks(self._reader, self._sel, order, blocks, epoch, self.reading.fetch_size):
            # The position counts a sample as soon as it is handed out (before the yield returns).
            if self.batch_size:
                batch = batch_of_block(cols, self.list_keys)
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
        if counting and self._position >= len(order):
            self._shared[1] = 0  # a finished pass: the next iteration starts the epoch again

    def dataloader(self, batch_size: int | None = None, num_workers: int = 0, **kwargs: Any) -> FeatureDataLoader:
        """A resumable :class:`mmfs_loader.dataloader.FeatureDataLoader` (a ``torch.utils.data.DataLoader``
        with spawned workers, ``state_dict`` and ``load_state_dict``) over this dataset."""
        return FeatureDataLoader(self, batch_size=batch_size, num_workers=num_workers, **kwargs)

    # ---- recipe ------------------------------------------------------------------------------------
    def _make_recipe(self) -> dict[str, Any]:
        recipe = {
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
        if self.order is not None and self.order.windowed:  # only then: older recipes keep their fingerprints
            recipe["shuffle_window"] = {"window": self.order.window, "buffer": self.order.buffer, "lanes": self.order.lanes}
        return recipe

    def recipe(self) -> dict[str, Any]:
        """Everything that determines what this dataset yields, as JSON-serialisable data."""
        return dict(self._recipe)

    @classmethod
    def from_recipe(cls, recipe: Mapping[str, Any], **kwargs: Any) -> FeatureDataset:
        """Rebuild the dataset of ``recipe`` (``storage_options``, ``rank``, ``world_size``, ``transform``
        and ``reading`` may be given). Fails with ``VersionNotFoundError`` when the
        version is gone and ``RecipeMismatchError`` when it no longer selects the same rows."""
        r = dict(recipe)
        R.check_format(r)
        mix = [Part(m["filter"], m["weight"]) for m in r["mixture"]] if r.get("mixture") else None
        win = r.get("shuffle_window")
        shuffle: bool | Shuffle = Shuffle(**win) if win else bool(r["shuffle"])
        guard = Guard(
            include_quarantined=r["include_quarantined"], allow_mixed_producers=r["allow_mixed_producers"],
            drop_incomplete=r["drop_incomplete"], producers={g: list(p) for g, p in r["producers"].items()},
        )
        ds = cls(
            r["uri"], version=r["version"], columns=r["columns"], filter=r["filter"], shuffle=shuffle,
            seed=r["seed"], clip=r["clip"], batch_size=r["batch_size"], uneven=r["uneven"], mixture=mix,
            samples_per_epoch=r["rows_per_epoch"], guard=guard, **kwargs,
        )
        R.compare(r, ds.recipe())
        ds.tag = ds._recipe["tag"] = r.get("tag")
        return ds


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
