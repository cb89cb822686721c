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
