"""Secrets in MMFS_STORAGE_OPTIONS never reach $DAGSTER_HOME or the UI; public options stay visible.

The scan reads every file under the home, including every SQLite cell, zlib-decompressed (Dagster
stores run and job snapshots compressed, so a plain grep would miss them).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import zlib
from pathlib import Path

import lance
import pytest

from mmfs_assets.cli.run import materialize_drop
from mmfs_assets.instance.home import open_instance
from mmfs_assets.settings import Settings, split_storage_options
from tests.conftest import make_drop

ROOT = Path(__file__).resolve().parent.parent
SECRETS = {"aws_secret_access_key": "SEKRET-4f1b9c", "aws_session_token": "TOKEN-77d2e0", "aws_access_key_id": "AKID-5c3a"}
PUBLIC = {"aws_region": "eu-north-1", "allow_http": "true"}


def _hits(root: Path, needles: list[str]) -> list[tuple[str, str]]:
    found = []
    for p in root.rglob("*"):
        if not p.is_file():
            continue
        raw = p.read_bytes()
        found += [(str(p), n) for n in needles if n.encode() in raw]
        if raw[:16] != b"SQLite format 3\x00":
            continue
        con = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
        for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
            for row in con.execute(f'SELECT * FROM "{table}"'):
                for v in row:
                    if not isinstance(v, (bytes, str)):
                        continue
                    b = v if isinstance(v, bytes) else v.encode()
                    try:
                        b += zlib.decompress(b)
                    except zlib.error:
                        pass
                    found += [(f"{p}:{table}", n) for n in needles if n.encode() in b]
        con.close()
    return found


def test_options_are_split_by_name():
    public, secret = split_storage_options({**SECRETS, **PUBLIC, "proxy_url": "http://user:pw@proxy:3128"})
    assert public == PUBLIC and set(secret) == {*SECRETS, "proxy_url"}


def test_no_secret_at_rest_or_in_the_ui(env, fixture_dir, tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("MMFS_STORAGE_OPTIONS", json.dumps({**SECRETS, **PUBLIC}))
    make_drop(env, "s1", sorted((fixture_dir / "good").iterdir())[:2])
    settings = Settings.from_env()
    with open_instance() as instance:
        r = materialize_drop("s1", ["videos", "video_metadata"], instance, settings, quiet=False)
        assert r.success
        # the run really used the secret options (resolved from the environment in the run)
        used = [e for e in r.all_events if e.is_step_success]
        assert len(used) == 2
    assert lance.dataset(env.table_uri).count_rows() == 2
    assert _hits(home, list(SECRETS.values())) == []
    assert _hits(home, ["eu-north-1"])  # the public options are stored (and shown) as before

    # what the UI's Resources page and launchpad are served: the code location's repository snapshot
    from dagster._core.remote_representation.external_data import RepositorySnap
    from dagster_shared.serdes import serialize_value

    from mmfs_assets.definitions import build_definitions

    snap = serialize_value(RepositorySnap.from_def(build_definitions().get_repository_def()))
    assert not [s for s in SECRETS.values() if s in snap]
    assert "MMFS_STORAGE_OPTIONS" in snap and "eu-north-1" in snap
    resource = build_definitions().resources["lance_table"]
    assert "SEKRET" not in repr(resource)


def test_without_secrets_no_env_var_is_needed(env, monkeypatch):
    """Public options only: the resource carries no EnvVar, so nothing fails when the variable is unset."""
    from mmfs_assets.resources import build_resources

    monkeypatch.setenv("MMFS_STORAGE_OPTIONS", json.dumps(PUBLIC))
    res = build_resources(Settings.from_env())["lance_table"]
    assert res.secret_storage_options is None and res.storage_options == PUBLIC and res.options == PUBLIC
    monkeypatch.delenv("MMFS_STORAGE_OPTIONS")
    assert build_resources(Settings.from_env())["lance_table"].options is None


def test_a_resolved_resource_never_prints_its_secrets(env, fixture_dir, tmp_path, monkeypatch):
    """Inside a run the EnvVar is resolved: repr/str/f-strings of the resource must still hide it."""
    import dagster as dg

    from mmfs_assets.resources import build_resources

    monkeypatch.setenv("MMFS_STORAGE_OPTIONS", json.dumps({**SECRETS, **PUBLIC}))
    seen = {}

    @dg.asset(required_resource_keys={"lance_table"})
    def show(context) -> None:
        lance_table = context.resources.lance_table
        seen["text"] = f"{lance_table} {lance_table!r} {str(lance_table)}"
        seen["options"] = lance_table.options

    with dg.instance_for_test() as inst:
        res = build_resources(Settings.from_env())
        assert dg.materialize([show], instance=inst, resources={"lance_table": res["lance_table"]}).success
    assert seen["options"] == {**SECRETS, **PUBLIC}  # resolved in the run...
    assert not [s for s in SECRETS.values() if s in seen["text"]]  # ...and never printed
    assert "eu-north-1" in seen["text"]


def test_settings_with_secrets_must_come_from_the_environment(monkeypatch):
    from mmfs_assets.resources import build_resources

    monkeypatch.delenv("MMFS_STORAGE_OPTIONS", raising=False)
    s = Settings(storage_options={**SECRETS, **PUBLIC})
    with pytest.raises(ValueError, match="MMFS_STORAGE_OPTIONS"):
        build_resources(s)
