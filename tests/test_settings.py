"""Settings: one reader of the MMFS_* variables, resources configured the Dagster way, clear errors."""

from __future__ import annotations

import dagster as dg
import pytest

from mmfs_assets.resources import build_resources
from mmfs_assets.settings import Settings


def test_resources_name_the_variables_that_set_them(env, monkeypatch):
    monkeypatch.setenv("MMFS_MODEL_PROFILE", "pretrained")
    monkeypatch.setenv("MMFS_FILL_CHUNK_ROWS", "64")
    monkeypatch.setenv("MMFS_DECODER", "cpu")
    res = build_resources(Settings.from_env())
    models = res["models"]
    # set variables become dg.EnvVar config: the UI's resource page shows the name, the run reads the value
    assert models.model_profile == dg.EnvVar("MMFS_MODEL_PROFILE")
    assert models.fill_chunk_rows == dg.EnvVar.int("MMFS_FILL_CHUNK_ROWS")
    assert models.decoder == dg.EnvVar("MMFS_DECODER")
    assert models.device == "auto"  # unset: the default value, not an EnvVar
    # paths are the absolute paths the settings resolved once (every process agrees on them)
    assert res["lance_table"].uri == env.table_uri and env.table_uri.startswith("/")

    seen = {}

    @dg.asset(required_resource_keys={"models"})
    def read_models(context) -> None:
        m = context.resources.models
        seen.update(profile=m.model_profile, rows=m.fill_chunk_rows, decoder=m.decoder)

    assert dg.materialize([read_models], resources={"models": models}).success
    assert seen == {"profile": "pretrained", "rows": 64, "decoder": "cpu"}  # resolved in the run


def test_explicit_settings_that_differ_from_the_environment_stay_literal(env, monkeypatch):
    monkeypatch.setenv("MMFS_MODEL_PROFILE", "pretrained")
    res = build_resources(Settings.from_env().model_copy(update={"model_profile": "tiny"}))
    assert res["models"].model_profile == "tiny"


@pytest.mark.parametrize(("name", "value", "message"), [
    ("MMFS_MODEL_PROFILE", "huge", "MMFS_MODEL_PROFILE='huge': Input should be 'pretrained' or 'tiny'"),
    ("MMFS_FILL_CHUNK_ROWS", "0", "MMFS_FILL_CHUNK_ROWS='0': Input should be greater than or equal to 1"),
    ("MMFS_DECODE_WORKERS", "many", "MMFS_DECODE_WORKERS='many'"),
    ("MMFS_STORAGE_OPTIONS", "{", "MMFS_STORAGE_OPTIONS is not valid JSON"),
])
def test_bad_settings_name_the_variable(monkeypatch, name, value, message):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError) as e:
        Settings.from_env()
    assert message in str(e.value)
