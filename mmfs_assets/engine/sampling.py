"""Which frames a fill samples for each row: the ``<SETTING>_SAMPLING`` setting resolved per video.

``exact`` and ``keyframe`` apply to every row (:mod:`mmfs_loader.decode.video`). ``auto`` (the default of the
features that sample a few frames per video) chooses per row from its metadata: ``keyframe`` sampling
(about one frame decoded per frame taken) where the video's keyframes give a distinct frame for every
target, ``exact`` where they do not (most real clips have a keyframe every few seconds or a single one, so
keyframe sampling would average copies of one or two frames). The row's producer records the mode it
got (``|sampling=keyframe`` or ``|sampling=exact``), never ``auto``.

Under ``auto`` a row already filled with ``exact`` frames stays current (its frames are the ones on
screen at the targets, the same or better than keyframes), and a ``keyframe`` row is current only when
its keyframes were distinct: the fill (from the metadata) and :mod:`mmfs_assets.staleness` (from the
stored timestamps, :func:`mmfs_loader.contract.status.repeated_times`: they repeat exactly when the keyframes were too
few) agree on that.
"""

from __future__ import annotations

import numpy as np

from mmfs_loader.decode.video import SAMPLING_MODES, VideoPlan, nearest_keyframes

AUTO = "auto"
SAMPLING_SETTINGS = (AUTO, *SAMPLING_MODES)


def keyframes_suffice(plan: VideoPlan, count: int) -> bool:
    """Whether ``keyframe`` sampling gives ``count`` distinct frames at the slice centres of this video."""
    kts = plan.keyframe_times
    if not kts or len(kts) < count or count < 1:
        return False
    return len(np.unique(nearest_keyframes(kts, plan.targets(count)))) == count


def row_sampling(setting: str, plan: VideoPlan, count: int) -> str:
    """The mode one row is sampled with under ``setting`` (``auto``, ``exact`` or ``keyframe``)."""
    if setting != AUTO:
        return setting
    return "keyframe" if keyframes_suffice(plan, count) else "exact"


def row_producer(producer: str, mode: str) -> str:
    """The producer a row sampled with ``mode`` records: ``producer`` with ``|sampling=auto`` made concrete."""
    return producer.replace(f"|sampling={AUTO}", f"|sampling={mode}", 1)


def current_producers(producer: str, mode: str) -> frozenset[str]:
    """The producers that count as current for a row whose mode is ``mode`` under ``producer``'s setting:
    the row's own, and under ``auto`` also ``exact`` values (never worse than keyframes)."""
    if f"|sampling={AUTO}" not in producer:
        return frozenset({producer})
    return frozenset({row_producer(producer, mode), row_producer(producer, "exact")})

