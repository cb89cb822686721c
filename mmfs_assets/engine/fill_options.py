"""What a fill of one feature needs besides the table and the feature, whichever engine runs it: the model
settings the step resolved and the options every shard (or partition) of the fill shares. Both pickle: the
``ray`` engine sends them to its replicas."""

from __future__ import annotations

from dataclasses import dataclass, field

from mmfs_assets.engine.fill import DECODE_TIMEOUT_S


@dataclass(frozen=True)
class ModelSettings:
    """What picks and places the model, as the step resolved it (``ModelsResource``)."""

    profile: str
    model_dir: str
    device: str
    feature_env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FillOptions:
    """What every shard of one fill shares (``fill_feature``'s keyword arguments)."""

    properties: dict[str, str]
    chunk_rows: int = 256
    decode_workers: int | None = None
    decoder: str = "cpu"
    decode_timeout: float | None = DECODE_TIMEOUT_S
    force: bool = False
