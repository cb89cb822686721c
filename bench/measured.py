"""Every benchmark checks that it measured what it set out to measure.

A rate over nothing is a number too: a loader pass over a drop that does not exist reads 0 clips in no time
and prints ``0.0 clips/s``. Each benchmark calls :func:`expect_count` with the rows (clips, videos, commits,
queries ...) it actually processed and the count it meant to process; any difference, or nothing meant at
all, stops the benchmark with :class:`NotMeasured`. A plain exception rather than ``assert``, so the check
holds under ``python -O`` too.
"""

from __future__ import annotations


class NotMeasured(RuntimeError):
    """A benchmark processed other rows than it set out to measure: its figures would be wrong."""


def expect_count(what: str, got: int, want: int) -> int:
    """``got`` when it equals ``want`` (and ``want`` is positive); otherwise raise :class:`NotMeasured`."""
    if want <= 0:
        raise NotMeasured(f"{what}: nothing to measure (meant to process {want}); check the benchmark's input")
    if got != want:
        raise NotMeasured(f"{what}: processed {got}, meant to process {want}; the figures of this run would be wrong")
    return got
