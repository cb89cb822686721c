"""Dagster resources: the shared Lance table, the drop folder, the probe, the models and the check thresholds,
configured from the environment.

No secret value is ever resource config: Dagster stores resource config in run and job snapshots
(``$DAGSTER_HOME/history/runs.db``) and shows it on the UI's Resources page and in the launchpad. The
storage options are split by key (:func:`mmfs_assets.settings.split_storage_options`): the public ones
(endpoint, region, ``allow_http``) are plain config, visible in the UI; when secret ones (keys, tokens,
passwords) are present, the resource gets ``secret_storage_options = dg.EnvVar("MMFS_STORAGE_OPTIONS")``,
which Dagster stores and shows by name only and resolves in the run's process. Credentials can also come
from the standard ``AWS_*`` environment, which Lance reads itself. Never log a resource or its
``options``: both hold the resolved secrets.
"""

from __future__ import annotations

import json
import os
from typing import Optional

import dagster as dg
import lance

from mmfs_assets.ingest.drop_source import DropSource, drop_source
from mmfs_assets.settings import ENV_NAMES, STORAGE_OPTIONS_ENV, Settings, split_storage_options
from mmfs_loader.contract.table import TableRef


class StorageOptionsResource(dg.ConfigurableResource):
    """Lance storage options split into public config and a secret part read from the environment in the run."""

    storage_options: dict[str, str] = {}  # public options only (shown in the UI)
    secret_storage_options: Optional[str] = None  # dg.EnvVar(MMFS_STORAGE_OPTIONS): JSON, resolved in the run

    @property
    def options(self) -> dict[str, str] | None:
        """Every storage option: the public ones plus the secret ones from the environment variable."""
        opts = dict(self.storage_options)
        if self.secret_storage_options:
            _, secret = split_storage_options(
                {str(k): str(v) for k, v in json.loads(self.secret_storage_options).items()}
            )
            opts.update(secret)
        return opts or None

    def __repr_args__(self):  # repr() and str(): the resolved secret must not reach a log line by accident
        for name, value in super().__repr_args__():
            yield name, ("***" if name == "secret_storage_options" and value else value)


class LanceTableResource(StorageOptionsResource):
    """The one shared Lance table every asset writes its own columns of."""

    uri: str
    video_storage: str = "inline"
    inline_max_bytes: int = 2 << 30  # larger files are stored as pointers (bounded ingest memory)
    fragment_rows: int = 256  # MMFS_FRAGMENT_ROWS: a fill's shards are whole fragments, so also its parallelism

    @property
    def ref(self) -> TableRef:
        """The table's :class:`~mmfs_loader.contract.table.TableRef` (URI and every storage option, secrets included)."""
        return TableRef(self.uri, self.options)

    def open(self) -> lance.LanceDataset:
        """The latest version (clear errors when the table does not exist)."""
        return self.ref.open()


class DropFolderResource(StorageOptionsResource):
    """Where drops land (a drop = one batch of videos = one partition): a folder whose subfolders are drops,
    or an ``s3://bucket/prefix/`` whose ``<drop>/`` prefixes are, read with the table's storage options."""

    root: str
    quiet_seconds: float = 60.0

    def source(self) -> DropSource:
        return drop_source(self.root, self.options)


class ProbeResource(dg.ConfigurableResource):
    """How the metadata probe judges damage and frame sizes: more concealed/corrupt frames than
    ``max_corrupt_frames``, or frames beyond the ``max_frame_*`` / ``max_aspect_ratio`` limits, quarantine a video."""

    max_corrupt_frames: int = 0  # MMFS_MAX_CORRUPT_FRAMES
    max_frame_side: int = 16384  # MMFS_MAX_FRAME_SIDE: a larger frame width or height quarantines the video
    max_frame_pixels: int = 16384 * 16384  # MMFS_MAX_FRAME_PIXELS: more pixels per frame quarantine it
    max_aspect_ratio: float = 10.0  # MMFS_MAX_ASPECT_RATIO: a longer side / shorter side above this quarantines it
    decode_workers: int = 0  # MMFS_DECODE_WORKERS; 0: the cores this process may use
    decode_timeout_s: float = 300.0  # MMFS_DECODE_TIMEOUT_S


class ModelsResource(dg.ConfigurableResource):
    """How the fill assets load their models and run the fill engine (fields named as in
    :class:`~mmfs_assets.settings.Settings`; each set by the ``MMFS_*`` variable in its comment)."""

    model_profile: str = "tiny"  # MMFS_MODEL_PROFILE: tiny | pretrained
    model_dir: str = "data/models"  # MMFS_MODEL_DIR
    device: str = "auto"  # MMFS_DEVICE
    fill_chunk_rows: int = 256  # MMFS_FILL_CHUNK_ROWS
    decoder: str = "auto"  # MMFS_DECODER: auto | cpu | nvdec (mmfs_assets.engine.decoders)
    decode_workers: int = 0  # MMFS_DECODE_WORKERS; 0: the cores this process may use
    decode_timeout_s: float = 300.0  # MMFS_DECODE_TIMEOUT_S
    feature_env: dict[str, str] = {}  # MMFS_<FEATURE>_MODEL / _FRAMES / _BATCH_SIZE / _SAMPLING


class ChecksResource(dg.ConfigurableResource):
    """The thresholds of the partition checks, shown on the UI's Resources page (fields named as in
    :class:`~mmfs_assets.settings.Settings`; each set by the ``MMFS_*`` variable in its comment)."""

    check_max_error_rate: float = 0.25  # MMFS_CHECK_MAX_ERROR_RATE: <feature>_values, metadata_decode_failures
    check_norm_tolerance: float = 0.01  # MMFS_CHECK_NORM_TOLERANCE: <feature>_values (normalised embeddings)
    check_max_dup_ratio: float = 0.5  # MMFS_CHECK_MAX_DUP_RATIO: dup_group_ratio


def _from_env(settings: Settings, field: str):
    """The value of ``settings.<field>`` as resource config: ``dg.EnvVar`` of its variable when the variable
    is set to this very value (the UI then names the variable and the run reads it), else the value."""
    name = ENV_NAMES[field]
    value = getattr(settings, field)
    raw = os.environ.get(name)
    if not raw or isinstance(value, (float, bool)):  # Dagster's EnvVar gives str or int config only
        return value
    # only when Dagster reads the variable's text as this very value ("256.0" validates as 256 here but
    # is not an int to Dagster; a path is relative until Settings resolved it)
    if raw != str(value):
        return value
    return dg.EnvVar.int(name) if isinstance(value, int) else dg.EnvVar(name)


def build_resources(settings: Settings | None = None) -> dict[str, dg.ConfigurableResource]:
    """The code location's resources, from ``settings`` (default: the environment).

    Scalar settings are ``dg.EnvVar`` config when they come from the environment; paths are given as the
    absolute paths :class:`Settings` resolved once, so every process agrees on them whatever its working
    directory."""
    s = settings or Settings.from_env()
    public, secret = split_storage_options(s.storage_options)
    if secret and split_storage_options(Settings.from_env().storage_options)[1] != secret:
        raise ValueError(
            f"secret storage options ({', '.join(sorted(secret))}) reach runs only through the environment "
            f"variable {STORAGE_OPTIONS_ENV}: set them there (or in the standard AWS_* variables)"
        )

    def env(field: str):
        return _from_env(s, field)

    return {
        "lance_table": LanceTableResource(
            uri=s.table_uri,
            storage_options=public,
            secret_storage_options=dg.EnvVar(STORAGE_OPTIONS_ENV) if secret else None,
            video_storage=env("video_storage"),
            inline_max_bytes=env("inline_max_bytes"),
            fragment_rows=env("fragment_rows"),
        ),
        "probe": ProbeResource(
            max_corrupt_frames=env("max_corrupt_frames"), decode_workers=env("decode_workers"),
            decode_timeout_s=s.decode_timeout_s, max_frame_side=env("max_frame_side"),
            max_frame_pixels=env("max_frame_pixels"), max_aspect_ratio=s.max_aspect_ratio,
        ),
        "drop_folder": DropFolderResource(
            root=s.drop_dir, quiet_seconds=s.drop_quiet_seconds, storage_options=public,
            secret_storage_options=dg.EnvVar(STORAGE_OPTIONS_ENV) if secret else None,
        ),
        "models": ModelsResource(
            model_profile=env("model_profile"), model_dir=s.model_dir, device=env("device"),
            fill_chunk_rows=env("fill_chunk_rows"), decoder=env("decoder"), decode_workers=env("decode_workers"),
            decode_timeout_s=s.decode_timeout_s, feature_env=s.feature_env,
        ),
        "checks": ChecksResource(check_max_error_rate=s.check_max_error_rate,
                                 check_norm_tolerance=s.check_norm_tolerance,
                                 check_max_dup_ratio=s.check_max_dup_ratio),
    }
