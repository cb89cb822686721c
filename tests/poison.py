"""Decode tasks that break their worker on purpose (imported by name in the engine's spawned workers)."""

from __future__ import annotations

import os
import signal
import time

from mmfs_assets.engine import tasks


def crash() -> None:
    os.kill(os.getpid(), signal.SIGSEGV)


def hang() -> None:
    time.sleep(3600)


def echo(x):
    return x


def decode_or_break(rowid, plan, times, short_side, mode):
    """A real decode, except rows whose video lasts exactly 1.3 s crash the decoder and 1.7 s ones hang."""
    if abs(plan.duration_s - 1.3) < 1e-3:
        crash()
    if abs(plan.duration_s - 1.7) < 1e-3:
        hang()
    return tasks.decode_row(rowid, plan, times, short_side, mode)

