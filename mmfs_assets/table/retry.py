"""Retrying commits that lost a race against another writer: one helper for every write path."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from lance.commit import CommitConflictError

from mmfs_loader.contract.table import not_found

T = TypeVar("T")
MAX_ATTEMPTS = 10


#: Lance's own words for a commit that lost races until its internal retry budget ran out. "Too many
#: concurrent writers. Attempted 2 times, but failed on retry_timeout of 30.000 seconds" comes when a
#: busy machine makes each rebase slow: nothing was committed, so it is a lost race like any other
#: (CI lost a fill to it when it was not retried here).
_LOST_RACE_WORDS = ("conflict", "too many concurrent writers")


def is_conflict(exc: BaseException) -> bool:
    """True for a commit that lost a race and left the table unchanged: Lance commit conflicts, the plain
    OSError compaction raises, and Lance giving up after its own retries under contention."""
    if isinstance(exc, CommitConflictError):
        return True
    return isinstance(exc, OSError) and any(w in str(exc).lower() for w in _LOST_RACE_WORDS)


def backoff(attempt: int) -> None:
    """Sleep a little longer after each lost race, with jitter so writers spread out."""
    time.sleep(min(2.0, 0.05 * (2**attempt)) * (0.5 + random.random()))


def retry_commit(
    attempt: Callable[[int], T],
    *,
    attempts: int = MAX_ATTEMPTS,
    retry_on: Callable[[BaseException], bool] = is_conflict,
    on_retry: Callable[[int, BaseException], None] | None = None,
) -> T:
    """``attempt(n)`` for n = 0, 1, ... until it returns; an error ``retry_on`` accepts (a lost commit race)
    is retried after :func:`backoff`, up to ``attempts`` tries, then raised (``on_retry(n, error)`` hears of
    each retry). ``attempt`` re-reads the table itself, so each try starts from the version that won the race."""
    for n in range(attempts):
        try:
            return attempt(n)
        except Exception as e:
            if not retry_on(e) or n == attempts - 1:
                raise
            if on_retry is not None:  # a lost race: count it, log it
                on_retry(n, e)
            backoff(n)
    raise AssertionError("unreachable")


def is_transient(exc: BaseException) -> bool:
    """An I/O failure of the storage (network outage, throttling, a timeout) that is not a lost race: Lance
    raises these as ``OSError``s, or ``ValueError``s when opening a dataset failed ("LanceError(IO): ...")."""
    if is_conflict(exc) or not_found(exc):  # a missing file or version does not come back by waiting
        return False
    return isinstance(exc, OSError) or isinstance(exc, ValueError) and "LanceError(IO)" in str(exc)


def storage_pause(attempt: int) -> float:
    """Seconds to wait before retry ``attempt`` (0, 1, ...) of a storage failure: 0.5 s doubling to 8 s."""
    return min(8.0, 0.5 * 2**attempt)


def retry_storage(fn: Callable[[], T], *, budget_s: float, on_retry: Callable[[BaseException], None] | None = None) -> T:
    """``fn()`` retried after :func:`storage_pause` while it fails with :func:`is_transient` errors, for up to
    ``budget_s`` seconds; then the last error is raised. For reads, and for writes that may be repeated (a
    column-only commit of the same values is idempotent)."""
    deadline = time.monotonic() + budget_s
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as e:
            if not is_transient(e) or time.monotonic() + storage_pause(attempt) > deadline:
                raise
            if on_retry is not None:
                on_retry(e)
            time.sleep(storage_pause(attempt))
            attempt += 1
