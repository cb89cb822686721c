"""Dagster resources: the shared Lance table and the drop folder, configured from the environment."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import lance

from mmfs_assets.settings import Settings


class LanceTableResource(dg.ConfigurableResource):
    """The one shared Lance table every asset writes its own columns of."""

    uri: str
    storage_options: dict[str, str] = {}
    video_storage: str = "inline"
    inline_max_bytes: int = 2 << 30  # larger files are stored as pointers (bounded ingest memory)

    def open(self) -> lance.LanceDataset:
        return lance.dataset(self.uri, storage_options=self.storage_options or None)

    @property
    def options(self) -> dict[str, str] | None:
        return self.storage_options or None


class DropFolderResource(dg.ConfigurableResource):
    """The folder whose subfolders are drops (a drop = one batch of videos = one partition)."""

    root: str
    quiet_seconds: float = 60.0

    def path(self, drop_id: str) -> Path:
        return Path(self.root) / drop_id


class ModelsResource(dg.ConfigurableResource):
    """How feature assets load their models: profile, device, per-feature settings, commit chunk size."""

    profile: str = "pretrained"
    model_dir: str = "data/models"
    device: str = "auto"
    chunk_rows: int = 256
    decode_workers: int = 0  # 0: min(4, cores)
    env: dict[str, str] = {}  # MMFS_<FEATURE>_MODEL / _FRAMES / _BATCH_SIZE


def build_resources(settings: Settings | None = None) -> dict[str, dg.ConfigurableResource]:
    s = settings or Settings.from_env()
    return {
        "lance_table": LanceTableResource(
            uri=s.table_uri,
            storage_options=s.storage_options,
            video_storage=s.video_storage,
            inline_max_bytes=s.inline_max_bytes,
        ),
        "drop_folder": DropFolderResource(root=s.drop_dir, quiet_seconds=s.drop_quiet_seconds),
        "models": ModelsResource(
            profile=s.model_profile, model_dir=s.model_dir, device=s.device, chunk_rows=s.fill_chunk_rows, env=s.feature_env
        ),
    }
