"""The typed argument groups of :class:`mmfs_loader.FeatureDataset`.

A dataset is described by a few small objects rather than twenty keyword arguments, in the manner of
MosaicML's ``StreamingDataset(streams=[Stream(proportion=...)])``::

    FeatureDataset(
        uri, tag="train-v3", columns=["clip_embedding", "caption"],
        mixture=[Part("height >= 720", 0.7), Part("height < 720", 0.3)],
        shuffle=Shuffle(window=8192),            # or True: an exact global shuffle
        guard=Guard(drop_incomplete=True),
        reading=Reading(cache_bytes=1 << 30),
        batch_size=256,
    )

A mixture may also be given as ``(filter, weight)`` pairs or a dict. The flat keywords of 0.1.0
(``include_quarantined=...``, ``fetch_size=...``) are gone: each fails with a ``TypeError`` that names
its group (:func:`refuse_flat`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Part:
    """One component of a mixture: the rows ``filter`` selects, drawn with relative ``weight``."""

    filter: str
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.filter, str) or not self.filter.strip():
            raise ValueError(f"a mixture part needs a SQL filter, not {self.filter!r}")


@dataclass(frozen=True)
class Shuffle:
    """How an epoch is ordered.

    ``window=None`` (the default) is an exact global shuffle: every permutation of the selection is
    equally likely. It reads rows at random, which is fast when the selection fits the node cache
    (:class:`Reading`) and slow (about 10 us per row) when it does not.

    ``window=W`` is the windowed shuffle for selections larger than memory
    (:class:`mmfs_loader.reads.ordering.WindowedOrder`): the selection, in storage order, is cut into windows
    of ``W`` neighbouring rows and the windows are permuted; each rank's share is split into ``lanes``
    lanes, and each lane is read ``buffer`` rows at a time (a few runs of neighbouring rows: close to a
    sequential scan's speed) and shuffled within that buffer. Two rows can only meet in a batch when
    they sit in the buffers being served at the same time (``lanes * buffer`` rows per rank): that is
    the knob between randomness and throughput. Memory per reader is about ``lanes / workers * buffer``
    rows whatever the selection's size; reads stay sequential when the DataLoader's worker count divides
    ``lanes``.
    """

    window: int | None = None
    buffer: int = 8192
    lanes: int = 8

    def __post_init__(self) -> None:
        for name in ("window", "buffer", "lanes"):
            v = getattr(self, name)
            if v is None and name == "window":
                continue
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"Shuffle.{name} must be a positive integer, not {v!r}")

    @property
    def windowed(self) -> bool:
        return self.window is not None and self.window > 1

    @classmethod
    def parse(cls, shuffle: bool | Shuffle | None) -> Shuffle | None:
        """``True`` -> an exact global shuffle, ``False``/``None`` -> the stored order."""
        if isinstance(shuffle, Shuffle) or shuffle is None:
            return shuffle
        if isinstance(shuffle, bool):
            return cls() if shuffle else None
        raise TypeError(f"shuffle must be a bool or a Shuffle, not {type(shuffle).__name__}")


@dataclass(frozen=True)
class Guard:
    """What the provenance guard accepts (see :mod:`mmfs_loader.reads.selection`).

    ``include_quarantined``: keep rows whose video metadata failed. ``allow_mixed_producers``: accept a
    group whose selected rows come from several producers. ``drop_incomplete``: leave out rows where a
    requested group has no value or an error (else the selection is refused). ``producers``: per group,
    the producer (or producers) the rows must come from.
    """

    include_quarantined: bool = False
    allow_mixed_producers: bool = False
    drop_incomplete: bool = False
    producers: Mapping[str, str | Collection[str]] = field(default_factory=dict)

    def flags(self) -> dict[str, bool]:
        return {
            "include_quarantined": bool(self.include_quarantined),
            "allow_mixed_producers": bool(self.allow_mixed_producers),
            "drop_incomplete": bool(self.drop_incomplete),
        }


@dataclass(frozen=True)
class Reading:
    """How samples are read (never what is read: none of this enters the recipe).

    ``fetch_size``: rows per ``take`` (several blocks are read together, one group read ahead).
    ``decode_threads``: clip decoding threads per reading process. ``cache_bytes``: when the requested
    columns of the selection fit, one process per node fills a shared cache with them in the
    background and every reader gathers from it (:mod:`mmfs_loader.reads.cache`); 0 reads by ``take`` only.
    ``cache_dir``: the node directory's root (default ``MMFS_LOADER_CACHE_DIR``, ``/dev/shm`` or the
    temp directory). ``decoder``: what decodes clips, ``"auto"``, ``"cpu"`` or ``"nvdec"``
    (:mod:`mmfs_loader.decode.clip_decoders`; the frames chosen are the same, the scaling filter differs).
    ``hold_version``: rank 0 holds a lease on the pinned version while the dataset lives, so ``mmfs maintain``
    keeps it even when its snapshot is deleted (:mod:`mmfs_loader.contract.leases`; needs write access to the table's
    storage, else a warning). Off: a version removed under the reader stops it with ``VersionGoneError``.
    """

    fetch_size: int = 1024
    decode_threads: int | None = None
    cache_bytes: int = 512 << 20
    cache_dir: str | None = None
    decoder: str = "auto"
    hold_version: bool = True

    def __post_init__(self) -> None:
        for name, lo in (("fetch_size", 1), ("cache_bytes", 0), ("decode_threads", 1)):
            v = getattr(self, name)
            if v is None and name == "decode_threads":
                continue
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                what = "a positive integer" if lo else "an integer >= 0"
                raise ValueError(f"{name} must be {what}, not {v!r}")


def parse_mixture(mixture: Sequence[Part] | Sequence[tuple[str, float]] | Mapping[str, float] | None) -> list[Part] | None:
    """A mixture as :class:`Part` objects (from parts, ``(filter, weight)`` pairs or a dict)."""
    if mixture is None:
        return None
    items: list[Any] = list(mixture.items()) if isinstance(mixture, Mapping) else list(mixture)
    parts = [p if isinstance(p, Part) else Part(*p) for p in items]
    return parts or None


# The flat keywords of 0.1.0 and the group each now lives in.
FLAT_KEYWORDS = {
    "include_quarantined": "guard",
    "allow_mixed_producers": "guard",
    "drop_incomplete": "guard",
    "producers": "guard",
    "fetch_size": "reading",
    "decode_threads": "reading",
    "cache_bytes": "reading",
}


def refuse_flat(unknown: Mapping[str, Any], where: str = "FeatureDataset") -> None:
    """A ``TypeError`` for keywords ``where`` does not take: for a flat keyword of 0.1.0, naming its group."""
    if not unknown:
        return
    name = sorted(unknown, key=lambda k: (k not in FLAT_KEYWORDS, k))[0]
    group = FLAT_KEYWORDS.get(name)
    if group is None:
        raise TypeError(f"{where}() got an unexpected keyword argument {name!r}")
    cls = {"guard": "Guard", "reading": "Reading"}[group]
    raise TypeError(f"{where}({name}=...) is no longer accepted: give {group}={cls}({name}=...)")
