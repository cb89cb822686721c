"""The blocks of one pass, read ahead of the consumer: from the node cache, by ``take``, or by windows.

:func:`read_blocks` yields ``((begin, end), columns)`` for the blocks a reading process owns, in order.
Blocks are grouped into reads of about ``fetch_size`` rows (the first block alone, so the first batch
comes soonest) with ``READ_AHEAD`` reads in flight. A windowed shuffle's blocks are gathered from
buffers that are each read whole, once (:func:`_read_windowed`).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from mmfs_loader.reads.fetch import BlockReader
from mmfs_loader.reads.node_selection import NodeSelection
from mmfs_loader.reads.ordering import RankOrder, WindowedOrder

READ_AHEAD = 2  # block groups read at once ahead of the consumer (gathers release the GIL)
BUFFERS_AHEAD = 2  # windowed-shuffle buffers loaded ahead

Block = tuple[int, int]


def read_blocks(reader: BlockReader, sel: NodeSelection, order: RankOrder, blocks: list[Block], epoch: int,
                fetch_size: int) -> Iterator[tuple[Block, dict[str, Any]]]:
    """(block, columns) pairs of ``blocks`` (ranges of ``order``), reading the next groups meanwhile."""
    cache = reader.cache
    if cache is not None and reader.remote and not cache.ready():
        cache.fill_now(reader, sel.selected[1])  # object store: one ordered read beats per-row random takes
    if isinstance(order, WindowedOrder) and not (cache is not None and cache.ready()):
        yield from _read_windowed(reader, sel, order, blocks, epoch)
        return
    groups = order.block_groups(blocks, fetch_size)
    selected = sel.selected if cache is not None else None

    def read(g: list[Block]) -> dict[str, Any]:
        pos = np.concatenate([order.positions(s, e) for s, e in g]) if len(g) > 1 else order.positions(*g[0])
        ids = sel.row_ids[pos]
        if selected is not None and cache is not None and cache.ready():
            # without a mixture, positions into the selection are positions into the cache
            return reader.read(ids, None, epoch, np.searchsorted(selected[0], ids) if sel.mixture else pos)
        cols = reader.read(ids, sel.offsets[pos], epoch)
        if selected is not None:  # after the read: the first batch does not wait for the fill to start
            reader.start_cache(*selected)
        return cols

    with ThreadPoolExecutor(READ_AHEAD, thread_name_prefix="mmfs-fetch") as ahead:
        inflight = [ahead.submit(read, g) for g in groups[:READ_AHEAD]]
        for k, g in enumerate(groups):
            cols = inflight.pop(0).result()
            if k + READ_AHEAD < len(groups):
                inflight.append(ahead.submit(read, groups[k + READ_AHEAD]))
            off = 0
            for s, e in g:
                yield (s, e), {c: v[off : off + e - s] for c, v in cols.items()}
                off += e - s


def _read_windowed(reader: BlockReader, sel: NodeSelection, order: WindowedOrder, blocks: list[Block],
                   epoch: int) -> Iterator[tuple[Block, dict[str, Any]]]:
    """Blocks of a windowed shuffle: each (lane, buffer) is read whole, once, by ``take`` of a few runs of
    neighbouring rows, held until this process's last block from it, and its blocks gathered from memory."""
    bs = order.block
    keys = [order.lane_of(b // bs) for b, _ in blocks]
    last_use = {k: i for i, k in enumerate(keys)}
    distinct = list(dict.fromkeys(keys))

    def load(key: tuple[int, int]):
        uniq = np.unique(sel.offsets[order.buffer_positions(*key)])
        return uniq, reader.load_rows(uniq)

    buffers: dict[tuple[int, int], Any] = {}
    with ThreadPoolExecutor(BUFFERS_AHEAD, thread_name_prefix="mmfs-window") as ahead:
        pending = {k: ahead.submit(load, k) for k in distinct[:BUFFERS_AHEAD]}
        nxt = BUFFERS_AHEAD
        for i, ((b, e), key) in enumerate(zip(blocks, keys)):
            if key not in buffers:
                buffers[key] = pending.pop(key).result() if key in pending else load(key)
                while nxt < len(distinct) and len(pending) < BUFFERS_AHEAD:
                    pending[distinct[nxt]] = ahead.submit(load, distinct[nxt])
                    nxt += 1
            uniq, rows = buffers[key]
            pos = order.positions(b, e)
            tensors, t = rows.gather(np.searchsorted(uniq, sel.offsets[pos]))
            yield (b, e), reader.to_columns(t, sel.row_ids[pos], epoch, tensors)
            if last_use[key] == i:
                del buffers[key]
