"""Feature variants that misbehave on purpose inside a Ray replica (imported by name in the actors).

They wrap a catalog feature's loader: the values stay the real ones, only the process's fate changes.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import signal
import time
from pathlib import Path

from mmfs_assets.features.spec import Feature, Model, ModelContext


def _first(marker: str) -> bool:
    """True for exactly one caller over every process (the marker file is created once)."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except FileExistsError:
        return False


def _load_killer(load, marker: str, at_call: int, ctx: ModelContext) -> Model:
    loaded = load(ctx)
    inner, calls = loaded.compute, [0]

    def compute(*args):
        calls[0] += 1
        if calls[0] == at_call and _first(marker):  # this replica dies in the middle of its shard, once
            os.kill(os.getpid(), signal.SIGKILL)
        return inner(*args)

    loaded.compute = compute
    return loaded


def _load_slow(load, started: str, seconds_file: str, ctx: ModelContext) -> Model:
    loaded = load(ctx)
    inner = loaded.compute

    def compute(*args):
        f = Path(seconds_file)
        seconds = float(f.read_text()) if f.exists() else 0.0
        if seconds:
            Path(started).mkdir(parents=True, exist_ok=True)
            (Path(started) / f"{os.getpid()}").write_text(str(time.time()))  # who is computing, and since when
            time.sleep(seconds)
        return inner(*args)

    loaded.compute = compute
    return loaded


def killer(feature: Feature, marker: str, at_call: int = 2) -> Feature:
    """``feature`` whose replica SIGKILLs itself at its ``at_call``-th batch, once over all replicas."""
    return dataclasses.replace(feature, load=functools.partial(_load_killer, feature.load, marker, at_call))


def slow(feature: Feature, started: str, seconds_file: str) -> Feature:
    """``feature`` whose every batch takes as many seconds more as ``seconds_file`` says (none while it is
    absent), leaving ``started/<pid>`` behind while it computes."""
    return dataclasses.replace(feature, load=functools.partial(_load_slow, feature.load, started, seconds_file))
