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


def build_resources(settings: Settings | None = None) -> dict[str, dg.ConfigurableResource]:
    s = settings or Settings.from_env()
    return {
        "lance_table": LanceTableResource(
            uri=s.table_uri, storage_options=s.storage_options, video_storage=s.video_storage
        ),
        "drop_folder": DropFolderResource(root=s.drop_dir, quiet_seconds=s.drop_quiet_seconds),
    }
