"""Configuration from environment variables, with local defaults.

| variable               | default              | meaning                                               |
|------------------------|----------------------|-------------------------------------------------------|
| ``MMFS_TABLE_URI``     | ``data/videos.lance``| the shared Lance table (a path or an ``s3://`` URI)   |
| ``MMFS_DROP_DIR``      | ``data/drops``       | folder whose subfolders are drops, or ``s3://bucket/prefix/`` |
| ``MMFS_STORAGE_OPTIONS``| ``{}``              | JSON object of Lance storage options (object stores)  |
| ``MMFS_VIDEO_STORAGE`` | ``inline``           | ``inline`` (bytes in the table) or ``pointer`` (URI)  |
| ``MMFS_INLINE_MAX_BYTES`` | ``2147483648``    | inline files larger than this are stored as pointers (bounded ingest memory) |
| ``MMFS_MAX_CORRUPT_FRAMES`` | ``0``           | a video with more concealed/corrupt frames (or lost packets) is quarantined |
| ``MMFS_MAX_FRAME_SIDE`` | ``16384``           | a video whose frame width or height is larger is quarantined |
| ``MMFS_MAX_FRAME_PIXELS`` | ``268435456``     | a video with more pixels per frame (width x height; default 16384^2) is quarantined |
| ``MMFS_MAX_ASPECT_RATIO`` | ``10``            | a video whose long side / short side is larger (16384x2: 8192) is quarantined |
| ``MMFS_DROP_QUIET_SECONDS`` | ``60``          | a drop without ``_READY`` is ready after this long unchanged |
| ``MMFS_MODEL_PROFILE`` | ``tiny``             | ``tiny`` (random-init test models, so a fresh clone runs) or ``pretrained`` (real weights); one setting for the CLI, the demo and the UI |
| ``MMFS_MODEL_DIR``     | ``data/models``      | where tiny models are written (and a place for local weights) |
| ``MMFS_DEVICE``        | ``auto``             | ``auto`` (CUDA when available), ``cpu`` or ``cuda[:N]`` |
| ``MMFS_FILL_CHUNK_ROWS``| ``256``             | rows per feature commit (a crash loses at most one chunk) |
| ``MMFS_DECODER``       | ``auto``             | ``auto`` (NVDEC beside CPU workers when CUDA and PyNvVideoCodec are there), ``cpu``, ``nvdec`` |
| ``MMFS_DECODE_WORKERS``| cores available      | decode worker processes per fill (one FFmpeg thread each) |
| ``MMFS_DECODE_TIMEOUT_S``| ``300``            | a decode past this (a probe: plus 1 s per MB) kills its worker; the row gets an error |
| ``MMFS_LOCK_DIR``      | ``/tmp/mmfs-locks-<uid>`` | node-local folder of the device locks (one model per device, :mod:`mmfs_assets.engine.device_lock`) |
| ``MMFS_RECOMPUTE_ON_CODE_CHANGE`` | ``0``       | ``1``: the automation also recomputes every partition of a fill whose code version changed |
| ``MMFS_CHECK_MAX_ERROR_RATE`` | ``0.25``     | a partition whose share of rows with a decode/feature error is above this fails its quality check |
| ``MMFS_CHECK_MAX_DUP_RATIO`` | ``0.5``        | a partition whose share of near-duplicate rows is above this fails ``dup_groups_ratio`` (a warning) |
| ``MMFS_CHECK_NORM_TOLERANCE`` | ``0.01``      | embeddings whose L2 norm is further than this from 1 (or NaN) fail ``<feature>_values`` |
| ``MMFS_DUP_DISTANCE`` | ``0.03``              | cosine distance under which two videos' embeddings make them near-duplicates (``dup_group``) |
| ``MMFS_EXECUTOR``     | ``multiprocess``     | where steps run: ``multiprocess``, ``celery`` (``MMFS_CELERY_BROKER``) or ``k8s`` (``MMFS_K8S_IMAGE``); see :mod:`mmfs_assets.executors` |
| ``MMFS_STEP_START``   | ``forkserver``       | how the multiprocess executor starts a step: ``forkserver`` (forked from a server that imported the code location and torch once) or ``spawn`` (a fresh interpreter per step) |
| ``MMFS_<FEATURE>_MODEL``, ``_FRAMES``, ``_BATCH_SIZE``, ``_SAMPLING`` | feature defaults | per feature, e.g. ``MMFS_CLIP_MODEL``, ``MMFS_DEPTH_SAMPLING=keyframe`` |

Relative local paths are resolved against the working directory once, when the settings are read, so
every process (webserver, daemon, run workers) agrees on the same absolute location.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

STORAGE_OPTIONS_ENV = "MMFS_STORAGE_OPTIONS"
# Option names that carry credentials (AWS/GCS/Azure keys, tokens, passwords, SAS, service accounts).
_SECRET_KEY = re.compile(r"(secret|token|password|passwd|credential|sas|private|service_account|(^|_)key(_|$)|key_id)", re.I)
_URL_WITH_USER = re.compile(r"://[^/@\s]+@")


def is_secret_option(name: str, value: str = "") -> bool:
    """Whether a storage option must never be stored or shown: by its name, or a URL with a user in it."""
    return bool(_SECRET_KEY.search(name) or _URL_WITH_USER.search(value or ""))


def split_storage_options(opts: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(public options, secret options)."""
    public = {k: v for k, v in opts.items() if not is_secret_option(k, v)}
    return public, {k: v for k, v in opts.items() if k not in public}


def _abs_local(uri: str) -> str:
    return uri if "://" in uri else os.path.abspath(uri)


def _is_feature_setting(name: str) -> bool:
    """``MMFS_<FEATURE>_MODEL`` / ``_FRAMES`` / ``_BATCH_SIZE`` (``MMFS_MODEL_*`` are global settings)."""
    return name.startswith("MMFS_") and not name.startswith("MMFS_MODEL_") and name.endswith(("_MODEL", "_FRAMES", "_BATCH_SIZE", "_SAMPLING"))


class Settings(BaseModel):
    model_config = ConfigDict(validate_default=True)

    table_uri: str = "data/videos.lance"
    drop_dir: str = "data/drops"
    storage_options: dict[str, str] = Field(default_factory=dict)
    video_storage: Literal["inline", "pointer"] = "inline"
    inline_max_bytes: int = Field(2 << 30, ge=0)
    fragment_rows: int = Field(256, ge=1)  # rows per fragment an ingest writes: the unit of a fill's shards
    max_corrupt_frames: int = Field(0, ge=0)
    # frame limits of the metadata probe (mmfs_assets.ingest.probe.FrameLimits, where the defaults are justified)
    max_frame_side: int = Field(16384, ge=1)
    max_frame_pixels: int = Field(16384 * 16384, ge=1)
    max_aspect_ratio: float = Field(10.0, ge=1)
    drop_quiet_seconds: float = 60.0
    model_profile: Literal["pretrained", "tiny"] = "tiny"
    model_dir: str = "data/models"
    device: str = "auto"
    fill_chunk_rows: int = Field(256, ge=1)
    decoder: Literal["auto", "cpu", "nvdec"] = "auto"
    decode_workers: int = Field(0, ge=0)  # 0: the cores this process may use
    decode_timeout_s: float = Field(300.0, gt=0)
    recompute_on_code_change: bool = False
    check_max_error_rate: float = Field(0.25, ge=0, le=1)
    check_max_dup_ratio: float = Field(0.5, ge=0, le=1)
    check_norm_tolerance: float = Field(0.01, ge=0)
    dup_distance: float = Field(0.03, ge=0, le=2)
    executor: Literal["multiprocess", "celery", "k8s"] = "multiprocess"
    # fleet-scale fills (mmfs_assets.engine.engines): where shards run and how they are cut
    fill_engine: Literal["local", "ray", "auto"] = "local"
    ray_address: str = ""  # "" starts a local Ray on 127.0.0.1; else a cluster (host:port, ray://host:10001, auto)
    ray_replicas: int = Field(0, ge=0)  # 0: one per GPU of the cluster, or on a CPU-only one its CPUs / cpus per replica
    ray_cpus_per_replica: int = Field(1, ge=1)  # CPUs (decode workers) beside each replica
    ray_runtime_env: dict[str, Any] = Field(default_factory=dict)  # how the code reaches a cluster (never secrets)
    fill_fragments_per_shard: int = Field(0, ge=0)  # 0: sized so every replica gets work (engine.shards)
    shard_retries: int = Field(2, ge=0)  # a shard whose replica died runs again this many times at most
    backfill_policy: Literal["auto", "single", "multi"] = "auto"  # auto: single-run with ray, one run per drop locally
    feature_env: dict[str, str] = Field(default_factory=dict)

    @field_validator("table_uri", "drop_dir", "model_dir")
    @classmethod
    def _absolute(cls, v: str) -> str:
        return _abs_local(v)

    @field_validator("ray_runtime_env", mode="before")
    @classmethod
    def _runtime_env(cls, v: Any) -> Any:
        """JSON from the environment; never a secret: Ray writes the runtime env into its job config and logs."""
        if isinstance(v, str):
            try:
                v = json.loads(v) if v.strip() else {}
            except json.JSONDecodeError as e:
                raise ValueError(f"not valid JSON: {e}") from e
        if not isinstance(v, dict):
            raise ValueError("must be a JSON object (a Ray runtime_env)")
        secret = [k for k, val in (v.get("env_vars") or {}).items() if is_secret_option(str(k), str(val))]
        if secret:
            raise ValueError(f"env_vars {secret} look secret: Ray writes the runtime env into its job config and "
                             "session logs. Give the cluster's pods the secret (a Kubernetes Secret) instead")
        return v

    @property
    def table_ref(self):
        """The table's :class:`~mmfs_loader.contract.table.TableRef` (URI and storage options)."""
        from mmfs_loader.contract.table import TableRef

        return TableRef(self.table_uri, self.storage_options or None)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        raw_opts = env.get("MMFS_STORAGE_OPTIONS", "").strip()
        try:
            opts = json.loads(raw_opts) if raw_opts else {}
        except json.JSONDecodeError as e:
            raise ValueError(f"MMFS_STORAGE_OPTIONS is not valid JSON: {e}") from e
        if not isinstance(opts, dict):
            raise ValueError("MMFS_STORAGE_OPTIONS must be a JSON object of strings")
        values: dict = {
            "storage_options": {str(k): str(v) for k, v in opts.items()},
            "feature_env": {k: v for k, v in env.items() if _is_feature_setting(k) and v},
        }
        for key, name in ENV_NAMES.items():
            if env.get(name):
                values[key] = env[name]
        try:
            return cls(**values)
        except ValidationError as e:  # name the variable to change, not the pydantic field
            err = e.errors()[0]
            key = str(err["loc"][0]) if err["loc"] else ""
            raise ValueError(f"{ENV_NAMES.get(key, key)}={values.get(key)!r}: {err['msg']}") from None


# Settings field -> the environment variable that sets it.
ENV_NAMES = {
    "table_uri": "MMFS_TABLE_URI",
    "drop_dir": "MMFS_DROP_DIR",
    "video_storage": "MMFS_VIDEO_STORAGE",
    "inline_max_bytes": "MMFS_INLINE_MAX_BYTES",
    "fragment_rows": "MMFS_FRAGMENT_ROWS",
    "max_corrupt_frames": "MMFS_MAX_CORRUPT_FRAMES",
    "max_frame_side": "MMFS_MAX_FRAME_SIDE",
    "max_frame_pixels": "MMFS_MAX_FRAME_PIXELS",
    "max_aspect_ratio": "MMFS_MAX_ASPECT_RATIO",
    "drop_quiet_seconds": "MMFS_DROP_QUIET_SECONDS",
    "model_profile": "MMFS_MODEL_PROFILE",
    "model_dir": "MMFS_MODEL_DIR",
    "device": "MMFS_DEVICE",
    "fill_chunk_rows": "MMFS_FILL_CHUNK_ROWS",
    "decoder": "MMFS_DECODER",
    "decode_workers": "MMFS_DECODE_WORKERS",
    "decode_timeout_s": "MMFS_DECODE_TIMEOUT_S",
    "recompute_on_code_change": "MMFS_RECOMPUTE_ON_CODE_CHANGE",
    "check_max_error_rate": "MMFS_CHECK_MAX_ERROR_RATE",
    "check_max_dup_ratio": "MMFS_CHECK_MAX_DUP_RATIO",
    "check_norm_tolerance": "MMFS_CHECK_NORM_TOLERANCE",
    "dup_distance": "MMFS_DUP_DISTANCE",
    "executor": "MMFS_EXECUTOR",
    "fill_engine": "MMFS_FILL_ENGINE",
    "ray_address": "MMFS_RAY_ADDRESS",
    "ray_replicas": "MMFS_RAY_REPLICAS",
    "ray_cpus_per_replica": "MMFS_RAY_CPUS_PER_REPLICA",
    "ray_runtime_env": "MMFS_RAY_RUNTIME_ENV",
    "fill_fragments_per_shard": "MMFS_FILL_FRAGMENTS_PER_SHARD",
    "shard_retries": "MMFS_SHARD_RETRIES",
    "backfill_policy": "MMFS_BACKFILL_POLICY",
}
