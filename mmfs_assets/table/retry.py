"""Retrying commits that lost a race against another writer."""

from __future__ import annotations

import random
import time

from lance.commit import CommitConflictError


def is_conflict(exc: BaseException) -> bool:
    """True for Lance commit conflicts, including the plain OSError compaction raises."""
    if isinstance(exc, CommitConflictError):
        return True
    return isinstance(exc, OSError) and "conflict" in str(exc).lower()


def backoff(attempt: int) -> None:
    """Sleep a little longer after each lost race, with jitter so writers spread out."""
    time.sleep(min(2.0, 0.05 * (2**attempt)) * (0.5 + random.random()))
