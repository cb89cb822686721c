"""Configuration from environment variables, with local defaults.

| variable               | default              | meaning                                               |
|------------------------|----------------------|-------------------------------------------------------|
| ``MMFS_TABLE_URI``     | ``data/videos.lance``| the shared Lance table (a path or an ``s3://`` URI)   |
| ``MMFS_DROP_DIR``      | ``data/drops``       | folder whose subfolders are drops                     |
| ``MMFS_STORAGE_OPTIONS``| ``{}``              | JSON object of Lance storage options (object stores)  |
| ``MMFS_VIDEO_STORAGE`` | ``inline``           | ``inline`` (bytes in the table) or ``pointer`` (URI)  |
| ``MMFS_DROP_QUIET_SECONDS`` | ``60``          | a drop without ``_READY`` is ready after this long unchanged |

Relative local paths are resolved against the working directory once, when the settings are read, so
every process (webserver, daemon, run workers) agrees on the same absolute location.
"""

from __future__ import annotations

import json
import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


def _abs_local(uri: str) -> str:
    return uri if "://" in uri else os.path.abspath(uri)


class Settings(BaseModel):
    model_config = ConfigDict(validate_default=True)

    table_uri: str = "data/videos.lance"
    drop_dir: str = "data/drops"
    storage_options: dict[str, str] = Field(default_factory=dict)
    video_storage: Literal["inline", "pointer"] = "inline"
    drop_quiet_seconds: float = 60.0

    @field_validator("table_uri", "drop_dir")
    @classmethod
    def _absolute(cls, v: str) -> str:
        return _abs_local(v)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        raw_opts = env.get("MMFS_STORAGE_OPTIONS", "").strip()
        try:
            opts = json.loads(raw_opts) if raw_opts else {}
        except json.JSONDecodeError as e:
            raise ValueError(f"MMFS_STORAGE_OPTIONS is not valid JSON: {e}") from e
        if not isinstance(opts, dict):
            raise ValueError("MMFS_STORAGE_OPTIONS must be a JSON object of strings")
        values: dict = {"storage_options": {str(k): str(v) for k, v in opts.items()}}
        for key, name in [
            ("table_uri", "MMFS_TABLE_URI"),
            ("drop_dir", "MMFS_DROP_DIR"),
            ("video_storage", "MMFS_VIDEO_STORAGE"),
            ("drop_quiet_seconds", "MMFS_DROP_QUIET_SECONDS"),
        ]:
            if env.get(name):
                values[key] = env[name]
        return cls(**values)
