"""The order of an epoch: which row references, in which order, on which rank and DataLoader worker.

Everything here is a pure function of integers (seed, epoch, sizes, weights, rank, world size), so the
same recipe gives the same order on any machine, any day. Permutations come from sorting SplitMix64
hashes of (seed, epoch, stream, index) rather than from ``numpy.random``, whose streams are not promised
to stay the same across NumPy releases: a run must be reproducible months later.

The steps, from the dataset's selection (``sizes[i]`` rows per component) to one worker's share:

1. :func:`epoch_sequence` -> positions into the selection for the whole epoch (a permutation, or for a
   weighted mixture exact per-component counts drawn from each component's own reshuffled cycles).
2. :func:`rank_sequence` -> rank ``r`` takes every ``world``-th element after padding (repeat the
   sequence's start) or dropping (cut the tail) to a multiple of ``world``: equal counts per rank.
3. :func:`worker_blocks` -> the rank sequence from a resume position, cut into blocks of the batch size,
   dealt round-robin to DataLoader workers. PyTorch's DataLoader takes batches from its workers
   round-robin, so the loader yields the rank sequence in order whatever the number of workers: that
   is what makes a resume with a different worker count exact.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser, vectorised (uint64 arithmetic wraps, which is what the hash wants)."""
    with np.errstate(over="ignore"):
        z = (x + np.uint64(0x9E3779B97F4A7C15)) & _M64
        z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _M64
        z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _M64
        return z ^ (z >> np.uint64(31))


def stream_key(*parts: int) -> np.uint64:
    """One 64-bit key from small integers (seed, epoch, stream...)."""
    k = np.uint64(0x6A09E667F3BCC908)
    for p in parts:
        k = _splitmix64(np.asarray([k ^ np.uint64(int(p) & 0xFFFFFFFFFFFFFFFF)], dtype=np.uint64))[0]
    return k


def hashes(key: np.uint64, values: np.ndarray) -> np.ndarray:
    """Per value, a uint64 hash under ``key``."""
    return _splitmix64(np.asarray(values, dtype=np.uint64) ^ key)


def permutation(n: int, *parts: int) -> np.ndarray:
    """A permutation of ``range(n)`` determined by ``parts`` (e.g. seed, epoch, stream)."""
    keys = hashes(stream_key(*parts), np.arange(n, dtype=np.uint64))
    return np.argsort(keys, kind="stable").astype(np.int64)


def uniform(*parts: int) -> float:
    """A number in [0, 1) determined by ``parts``."""
    return float(stream_key(*parts) >> np.uint64(11)) / float(1 << 53)


def clip_draw(seed: int, epoch: int, row_id: int) -> float:
    """The clip position draw of a row in an epoch (``u`` of :meth:`mmfs_loader.decode.clips.ClipSpec.times`)."""
    return uniform(seed, epoch, 0xC11B, row_id)


def mixture_counts(weights: Sequence[float], total: int) -> np.ndarray:
    """Exact per-component counts summing to ``total``, proportional to ``weights`` (largest remainder)."""
    w = np.asarray(weights, dtype=np.float64)
    if (w < 0).any() or not np.isfinite(w).all() or w.sum() <= 0:
        raise ValueError(f"mixture weights must be finite, non-negative and not all zero: {list(weights)}")
    exact = w / w.sum() * total
    counts = np.floor(exact).astype(np.int64)
    rest = total - int(counts.sum())
    order = np.argsort(-(exact - counts), kind="stable")  # ties: the earlier component first
    counts[order[:rest]] += 1
    return counts


def epoch_sequence(
    sizes: Sequence[int],
    seed: int,
    epoch: int,
    shuffle: bool,
    weights: Sequence[float] | None = None,
    length: int | None = None,
) -> np.ndarray:
    """Positions into the concatenated selection (component ``i`` holds ``sizes[i]`` rows) for one epoch.

    Without ``weights`` this is every row once: a permutation by (seed, epoch), or the stored order.
    With ``weights`` the epoch holds ``length`` samples (default: all rows) of which component ``i``
    contributes exactly ``mixture_counts(weights, length)[i]``, taken from its own permutation (or its
    order), cycling with a fresh permutation each time it runs out (upsampling); components are then
    interleaved, shuffled together or, without shuffle, spread evenly.
    """
    sizes = [int(s) for s in sizes]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    if weights is None:
        n = offsets[-1] if length is None else int(length)
        if n > offsets[-1]:
            raise ValueError(f"length {n} is more than the {offsets[-1]} selected rows (use a mixture to upsample)")
        seq = permutation(int(offsets[-1]), seed, epoch, 0) if shuffle else np.arange(offsets[-1], dtype=np.int64)
        return seq[:n]
    if len(weights) != len(sizes):
        raise ValueError("one weight per mixture component")
    total = int(offsets[-1]) if length is None else int(length)
    counts = mixture_counts(weights, total)
    picks: list[np.ndarray] = []
    for i, (size, count) in enumerate(zip(sizes, counts)):
        if count and not size:
            raise ValueError(f"mixture component {i} selects no rows but has weight {weights[i]}")
        cycles = []
        for c in range(-(-int(count) // size) if size else 0):
            cycles.append(permutation(size, seed, epoch, i + 1, c) if shuffle else np.arange(size, dtype=np.int64))
        own = np.concatenate(cycles)[:count] if cycles else np.zeros(0, np.int64)
        picks.append(own + offsets[i])
    seq = np.concatenate(picks) if picks else np.zeros(0, np.int64)
    if shuffle:
        return seq[permutation(len(seq), seed, epoch, 0)]
    # Even spread: the k-th pick of a component with c picks sits at (k + 0.5) / c.
    pos = np.concatenate([(np.arange(c) + 0.5) / c for c in counts if c]) if total else np.zeros(0)
    return seq[np.argsort(pos, kind="stable")]


def per_rank(length: int, world: int, uneven: str) -> int:
    """Samples each rank yields in an epoch of ``length``: ``ceil`` when padding, ``floor`` when dropping."""
    if uneven == "pad":
        return -(-length // world)
    if uneven == "drop":
        return length // world
    raise ValueError(f"uneven must be 'pad' or 'drop', not {uneven!r}")


def rank_sequence(seq: np.ndarray, rank: int, world: int, uneven: str) -> np.ndarray:
    """Rank ``rank``'s share: every ``world``-th element of the padded (or cut) sequence."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in [0, {world})")
    n = per_rank(len(seq), world, uneven) * world
    if n > len(seq):  # pad by repeating the start of the sequence (len(seq) > 0 here)
        seq = np.concatenate([seq, np.resize(seq, n - len(seq))])
    return seq[:n][rank::world]


def worker_blocks(length: int, start: int, block: int, worker: int, workers: int) -> list[tuple[int, int]]:
    """(begin, end) ranges of the rank sequence that worker ``worker`` of ``workers`` yields, in order:
    blocks of ``block`` samples starting at ``start``, dealt round-robin."""
    if block < 1:
        raise ValueError("block must be at least 1")
    starts = range(start, length, block)
    return [(b, min(b + block, length)) for k, b in enumerate(starts) if k % workers == worker]


# ---- per-rank orders, computed lazily -------------------------------------------------------------------
class RankOrder:
    """This rank's sequence for one epoch, element by element: ``positions(b, e)`` gives elements
    ``[b, e)`` as positions into the selection, without materialising the rest.

    ``seq`` is the epoch's global sequence (None: the stored order, ``0..n-1``); the rank takes every
    ``world``-th element of it, padded by wrapping around (see :func:`rank_sequence`).
    """

    def __init__(self, seq: np.ndarray | None, n: int, rank: int, world: int, uneven: str) -> None:
        self.seq, self.n, self.rank, self.world = seq, int(n if seq is None else len(seq)), rank, world
        self.length = per_rank(self.n, world, uneven) if self.n else 0

    def __len__(self) -> int:
        return self.length

    def positions(self, b: int, e: int) -> np.ndarray:
        g = self.rank + self.world * np.arange(b, e, dtype=np.int64)
        g %= max(1, self.n)
        return g if self.seq is None else np.asarray(self.seq[g], dtype=np.int64)

    def block_groups(self, blocks: list[tuple[int, int]], fetch_size: int) -> list[list[tuple[int, int]]]:
        """Blocks gathered into reads of about ``fetch_size`` rows (the first block is read alone)."""
        groups: list[list[tuple[int, int]]] = [blocks[:1]]  # the first block alone: the first batch comes soonest
        rows = fetch_size
        for b in blocks[1:]:
            if groups[-1] and rows + (b[1] - b[0]) > fetch_size:
                groups.append([])
                rows = 0
            groups[-1].append(b)
            rows += b[1] - b[0]
        return [g for g in groups if g]


_WINDOWS, _LANES = 0x57494E, 0x4C414E  # stream ids of the windowed shuffle's two permutations


class WindowedOrder(RankOrder):
    """The windowed shuffle of one rank and epoch (:class:`mmfs_loader.options.Shuffle` with a window).

    1. The selection, in storage order, is cut into windows of ``window`` rows; the windows are
       permuted by (seed, epoch). Concatenated, they give the epoch's row stream ``R`` (padded by
       wrapping around, or cut, to ``world * per_rank`` rows as for the global shuffle).
    2. Rank ``r`` takes the contiguous chunk ``R[r*m:(r+1)*m]`` (``m = per_rank``).
    3. The rank's sequence is made of blocks of ``block`` rows (its batches); block ``j`` belongs to
       lane ``j % lanes``. Lane ``l`` owns a contiguous piece of the chunk, exactly as long as its
       blocks, cut into buffers of ``buffer`` rows; each buffer's rows are permuted by (seed, epoch,
       rank, lane, buffer) and handed to the lane's blocks in turn.

    Everything depends on the block size but not on the number of DataLoader workers (which take the
    blocks round-robin), so a resume with another worker count yields the same samples. When the
    worker count divides ``lanes``, each worker owns whole lanes: every buffer it reads is a few runs
    of neighbouring rows that nobody else reads.
    """

    def __init__(self, n: int, rank: int, world: int, uneven: str, *, seed: int, epoch: int, window: int,
                 buffer: int, lanes: int, block: int) -> None:
        super().__init__(None, n, rank, world, uneven)
        self.window, self.lanes, self.block = int(window), max(1, int(lanes)), max(1, int(block))
        self.buffer = max(self.block, -(-int(buffer) // self.block) * self.block)  # whole blocks per buffer
        self.key = (int(seed), int(epoch))
        nw = -(-self.n // self.window) if self.n else 0
        self.wperm = permutation(nw, seed, epoch, _WINDOWS)
        lens = np.full(nw, self.window, dtype=np.int64)
        if nw:
            lens[-1] = self.n - (nw - 1) * self.window
        self.wstart = np.concatenate([[0], np.cumsum(lens[self.wperm])])  # offsets of the permuted windows in R
        nb = -(-self.length // self.block)
        last = self.length - (nb - 1) * self.block if nb else 0
        sizes = np.zeros(self.lanes, dtype=np.int64)
        for lane in range(self.lanes):
            count = len(range(lane, nb, self.lanes))
            sizes[lane] = count * self.block - ((self.block - last) if nb and (nb - 1) % self.lanes == lane else 0)
        self.lane_start = np.concatenate([[0], np.cumsum(sizes)])
        self._perms: dict[tuple[int, int], np.ndarray] = {}

    def _stream(self, i: np.ndarray) -> np.ndarray:
        """``R[i]``: selection positions of stream offsets ``i`` (wrapped around the selection)."""
        i = i % max(1, self.n)
        k = np.searchsorted(self.wstart, i, side="right") - 1
        return self.wperm[k] * self.window + (i - self.wstart[k])

    def lane_of(self, j: int) -> tuple[int, int]:
        """(lane, buffer) of block ``j`` of the rank sequence."""
        lane = j % self.lanes
        return lane, (j // self.lanes) * self.block // self.buffer

    def buffer_positions(self, lane: int, q: int) -> np.ndarray:
        """The selection positions in buffer ``q`` of ``lane``, in storage order."""
        lo = q * self.buffer
        hi = min(lo + self.buffer, int(self.lane_start[lane + 1] - self.lane_start[lane]))
        base = self.rank * self.length + int(self.lane_start[lane])
        return np.sort(self._stream(base + np.arange(lo, hi, dtype=np.int64)))

    def _perm(self, lane: int, q: int, size: int) -> np.ndarray:
        key = (lane, q)
        if key not in self._perms:
            if len(self._perms) > 4 * self.lanes:
                self._perms.clear()
            self._perms[key] = permutation(size, *self.key, _LANES, self.rank, lane, q)
        return self._perms[key]

    def positions(self, b: int, e: int) -> np.ndarray:
        out = np.empty(max(0, e - b), dtype=np.int64)
        p = b
        while p < e:
            j = p // self.block
            lane, q = self.lane_of(j)
            end = min(e, (j + 1) * self.block)
            off = (j // self.lanes) * self.block + (p - j * self.block) - q * self.buffer  # offset in the buffer
            lo = q * self.buffer
            size = min(self.buffer, int(self.lane_start[lane + 1] - self.lane_start[lane]) - lo)
            base = self.rank * self.length + int(self.lane_start[lane]) + lo
            perm = self._perm(lane, q, size)
            out[p - b : end - b] = self._stream(base + perm[off : off + end - p])
            p = end
        return out
