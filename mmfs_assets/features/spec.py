"""The declaration of a feature: what one new module under ``features/catalog/`` provides.

A :class:`Feature` names its column group (Arrow types), the setting that picks its model, its default
frame count and batch size, and a ``load`` function. ``load`` returns a :class:`Model`: the loaded
network as the library made it, its identity (model, weights: what changes the values), its
preprocessing as data and a batch ``compute``. A Feature is plain data and module-level functions (no
closures), so it pickles: the ``ray`` engine sends it to actors, which load the model themselves.

The engine does the rest. :func:`mmfs_assets.features.models.load_model` applies the
``<SETTING>_FRAMES`` / ``_BATCH_SIZE`` overrides, places the network (device, eval mode, fp16 on CUDA,
fp32 elsewhere), runs ``compute`` and ``encode_text`` under ``torch.inference_mode()``, fills the
``<name>_timestamps`` column when the group declares one and makes the :class:`LoadedModel` and its
producer string; :mod:`mmfs_assets.engine.fill` decodes, batches, writes, records provenance, resumes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmfs_assets.engine.sampling import SAMPLING_SETTINGS
from mmfs_loader.contract.schema import ColumnGroup

if TYPE_CHECKING:
    from mmfs_assets.engine.preprocess import Preprocess


class ModelUnavailableError(RuntimeError):
    """A feature's model cannot be loaded; the message names the setting to change."""


@dataclass(frozen=True)
class FrameRequest:
    """Frames a model needs: ``count`` evenly spaced frames, resized so the shorter side is ``short_side``
    (the longer side at most :data:`~mmfs_loader.decode.video.MAX_SCALED_ASPECT` times that: frames more elongated
    are squashed, so one row's frames cost at most that multiple of ``short_side``^2 whatever its shape)."""

    count: int
    short_side: int | None = None

    def describe(self) -> str:
        return f"{self.count}x{self.short_side or 'native'}"


@dataclass
class Clip:
    """The decoded frames of one row: uint8 RGB ``[K, H, W, 3]`` (numpy, or a torch tensor that may
    live on the GPU when NVDEC decoded it) and their timestamps in seconds."""

    rowid: int
    frames: Any
    timestamps: np.ndarray


@dataclass
class Model:
    """What a feature's ``load`` returns: the model as loaded, before the engine places it.

    ``compute(net, clips)`` (or ``compute(net, clips, pixels)`` with ``preprocess`` declared) returns, per
    value column of the group, one value per clip, in order; it gets ``net`` placed on the device and runs
    under ``torch.inference_mode()``. It returns neither ``<name>_timestamps`` (the engine fills it from
    the clips) nor columns that ``postprocess`` makes. A module-level function, with
    :func:`functools.partial` for its options, keeps the module readable; it never travels.

    - ``model``, ``weights``: the model's identity in the producer (:mod:`~.loaders` gives them for open_clip
      and transformers models); ``details`` adds other fields that change the values (the engine adds ``dtype``).
    - ``net``: the torch module, or None for a feature without one (then ``compute`` gets None, and runs
      outside inference mode unless ``preprocess`` is declared). The engine moves it to the device.
    - ``preprocess``: how frames become ``pixels`` on the device; its size is the frames' short side.
      ``short_side``: the frames' short side without ``preprocess`` (None: native).
    - ``max_frames``: the most frames per clip the model takes (a larger request is refused); also the
      frame count of a feature that declares none.
    - ``postprocess``: see :class:`LoadedModel`. ``encode_text(net, texts)``: text -> vectors in the space
      of the stored values (embedding features with a text tower: search).
    """

    model: str
    weights: str
    compute: Callable[..., dict[str, list[Any]]]
    net: Any = None
    preprocess: Preprocess | None = None
    short_side: int | None = None
    max_frames: int | None = None
    details: dict[str, str] = field(default_factory=dict)
    postprocess: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    encode_text: Callable[[Any, list[str]], np.ndarray] | None = None


@dataclass
class LoadedModel:
    """A loaded model, ready for batches: made by :func:`~.models.load_model` from a feature's :class:`Model`
    (or, for the metadata group, directly).

    ``compute`` takes clips and returns, per value column of the group, one value per clip (in order).
    With ``preprocess`` declared it is called as ``compute(clips, pixels)``: ``pixels`` is the clips'
    frames, preprocessed on ``device`` by the engine, ``[sum of K, 3, h, w]`` in clip order (the engine
    calls it once per frame shape). ``postprocess``, a top-level function, turns one clip's computed
    values into the stored ones in the engine's worker processes (e.g. depth PNG encoding).
    ``model``, ``weights``, ``details`` (dtype, decoding...) and ``sampling`` name what determines the
    values; the engine combines them with the feature's code version and frame request into
    ``producer``, and rows with another producer are recomputed by the next fill.
    """

    model: str
    weights: str
    frames: FrameRequest
    batch_size: int
    compute: Callable[..., dict[str, list[Any]]]
    device: str = "cpu"
    details: dict[str, str] = field(default_factory=dict)
    preprocess: Preprocess | None = None
    postprocess: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    sampling: str = "exact"  # "auto", "exact" or "keyframe" (mmfs_assets.engine.sampling)
    input: str = "frames"  # "frames" (decoded clips) or "container" (the metadata probe reads the whole file)
    dtype: Any = None  # torch dtype of ``pixels`` (None: float32)
    producer: str = ""  # set by mmfs_assets.features.models.load_model
    # text -> vectors in the same space as the stored values (embedding features with a text tower: search)
    encode_text: Callable[[list[str]], np.ndarray] | None = None


@dataclass(frozen=True)
class ModelContext:
    """What ``Feature.load`` gets: the resolved model spec and the run's device and options.

    ``frames`` and ``batch_size`` are the ``<SETTING>_FRAMES`` / ``_BATCH_SIZE`` overrides; the engine
    applies them (a loader has no need to read them)."""

    spec: str  # a hub id / model name, or a local directory
    setting: str  # the env var that chose it, for error messages
    device: str  # "cpu" or "cuda"
    frames: int | None = None  # override of the feature's default frame count
    batch_size: int | None = None  # override of the feature's default batch size
    sampling: str = "exact"  # the feature's sampling mode (its default or <setting>_SAMPLING)
    profile: str = "pretrained"  # "tiny": the spec is a random-init test model (marked in the producer)
    options: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Feature:
    """One feature column group and how to compute it.

    ``setting`` is the prefix of its environment variables: ``<setting>_MODEL`` (hub id or local dir),
    ``<setting>_FRAMES``, ``<setting>_BATCH_SIZE`` and ``<setting>_SAMPLING`` (``auto``, ``exact`` or ``keyframe``,
    default ``default_sampling``). ``frames`` and ``batch_size`` are the defaults those settings override
    (``frames`` None: the model's ``max_frames``). ``load(ctx)`` returns a :class:`Model`.
    ``build_tiny(dir)`` writes a tiny random-init model in the same on-disk format as real weights, for
    ``MMFS_MODEL_PROFILE=tiny`` and tests.

    Every callable here is a module-level function or a :func:`functools.partial` of one, so a Feature
    survives :mod:`pickle` (``tests/test_features.py`` checks the catalog's).
    """

    name: str
    group: ColumnGroup
    code_version: str
    setting: str
    default_model: str
    load: Callable[[ModelContext], Model | LoadedModel]  # LoadedModel: a ready one (the metadata probe)
    description: str
    frames: int | None = None
    batch_size: int = 16
    build_tiny: Callable[[Path], None] | None = None
    uses_gpu: bool = True
    default_sampling: str = "exact"
    normalized: bool = False  # vector values are L2-normalised: the quality check flags norms away from 1

    def __post_init__(self) -> None:
        if self.default_sampling not in SAMPLING_SETTINGS:
            raise ValueError(f"feature {self.name!r}: default_sampling must be one of {SAMPLING_SETTINGS}")

    @property
    def model_env(self) -> str:
        return f"{self.setting}_MODEL"

    @property
    def frames_env(self) -> str:
        return f"{self.setting}_FRAMES"

    @property
    def batch_env(self) -> str:
        return f"{self.setting}_BATCH_SIZE"

    @property
    def sampling_env(self) -> str:
        return f"{self.setting}_SAMPLING"


def producer_string(feature: Feature, loaded: LoadedModel) -> str:
    """The per-row provenance: ``<feature>:<code version>|model=...|weights=...|frames=KxS|sampling=...|...``."""
    parts = [
        f"{feature.name}:{feature.code_version}",
        f"model={loaded.model}",
        f"weights={loaded.weights}",
        f"frames={loaded.frames.describe()}",
        f"sampling={loaded.sampling}",
    ]
    parts += [f"{k}={v}" for k, v in sorted(loaded.details.items())]
    return "|".join(parts)
