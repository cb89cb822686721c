"""The declaration of a feature: what one new module under ``features/catalog/`` provides.

A :class:`Feature` names its column group (Arrow types), the setting that picks its model, how many
frames it needs and a ``load`` function. ``load`` returns a :class:`LoadedModel`: the producer string
(model, weights, code version, frame sampling: everything that changes the values) and a batch
``compute`` over decoded clips. The engine (:mod:`mmfs_assets.features.fill`) does the rest: rows,
decoding, batching, writing, provenance, resume; :mod:`mmfs_assets.features.asset` makes the asset.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmfs_loader.schema import ColumnGroup


@dataclass(frozen=True)
class FrameRequest:
    """Frames a model needs: ``count`` evenly spaced frames, resized so the shorter side is ``short_side``."""

    count: int
    short_side: int | None = None

    def describe(self) -> str:
        return f"{self.count}x{self.short_side or 'native'}"


@dataclass
class Clip:
    """The decoded frames of one row: uint8 RGB ``[K, H, W, 3]`` and their timestamps in seconds."""

    rowid: int
    frames: np.ndarray
    timestamps: np.ndarray


@dataclass
class LoadedModel:
    """A loaded model, ready for batches.

    ``compute`` takes clips and returns, per value column of the group, one value per clip (in order).
    ``model``, ``weights`` and ``details`` (dtype, decoding...) name what determines the values; the
    engine combines them with the feature's code version and frame request into ``producer``, and rows
    with another producer are recomputed by the next fill.
    """

    model: str
    weights: str
    frames: FrameRequest
    batch_size: int
    compute: Callable[[Sequence[Clip]], dict[str, list[Any]]]
    device: str = "cpu"
    details: dict[str, str] = field(default_factory=dict)
    producer: str = ""  # set by mmfs_assets.features.models.load_model


@dataclass(frozen=True)
class ModelContext:
    """What ``Feature.load`` gets: the resolved model spec and the run's device and options."""

    spec: str  # a hub id / model name, or a local directory
    setting: str  # the env var that chose it, for error messages
    device: str  # "cpu" or "cuda"
    frames: int | None = None  # override of the feature's default frame count
    batch_size: int | None = None  # override of the feature's default batch size
    options: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Feature:
    """One feature column group and how to compute it.

    ``setting`` is the prefix of its environment variables: ``<setting>_MODEL`` (hub id or local dir),
    ``<setting>_FRAMES`` and ``<setting>_BATCH_SIZE``. ``build_tiny(dir)`` writes a tiny random-init model
    in the same on-disk format as real weights, for ``MMFS_MODEL_PROFILE=tiny`` and tests.
    """

    name: str
    group: ColumnGroup
    code_version: str
    setting: str
    default_model: str
    load: Callable[[ModelContext], LoadedModel]
    description: str
    build_tiny: Callable[[Path], None] | None = None
    uses_gpu: bool = True

    @property
    def model_env(self) -> str:
        return f"{self.setting}_MODEL"

    @property
    def frames_env(self) -> str:
        return f"{self.setting}_FRAMES"

    @property
    def batch_env(self) -> str:
        return f"{self.setting}_BATCH_SIZE"


def producer_string(feature: Feature, loaded: LoadedModel) -> str:
    """The per-row provenance: ``<feature>:<code version>|model=...|weights=...|frames=KxS|...``."""
    parts = [
        f"{feature.name}:{feature.code_version}",
        f"model={loaded.model}",
        f"weights={loaded.weights}",
        f"frames={loaded.frames.describe()}",
    ]
    parts += [f"{k}={v}" for k, v in sorted(loaded.details.items())]
    return "|".join(parts)
