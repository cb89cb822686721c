"""Tag names mean one thing everywhere (issue 23, item 6): MMFS's rule is Lance's (narrowed to ASCII), a
new tag is never only digits, and ``rollback --to`` refuses a number that is also an old tag's name."""

from __future__ import annotations

import json
import random

import lance
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from mmfs_assets.cli.app import app
from mmfs_assets.store import snapshots
from mmfs_assets.table.tags import create_tag
from mmfs_loader.contract.table import check_tag_name
from tests.test_rollback_faults import mini_table

runner = CliRunner()

# Refused by Lance 14's check_valid_ref (the refs module of lance-table), each for one of its reasons.
LANCE_REFUSES = ["", "a..b", "ref..ref", "a.", "x.lock", "train.lock", ".a", "../ref", "/ref", "a/b", "nested//ref",
                 "ref/", "a b", "a\tb", "a~", "a:b", "a@b", "a\\b", "ref*", "ref?", "ref[", "ref^", "tag:x"]
# Accepted by MMFS, so they must work in Lance (created, listed, opened).
MMFS_ACCEPTS = ["v1", "train-v3", "a-b_c.d", "v1.2.3-rc4", "a.lock.b", "lock", "A", "0a", "2024-01-01", "x" * 128,
                "a.LOCK", "z_"]


def _run(*args: str):
    return runner.invoke(app, list(args))


@pytest.fixture
def plain(tmp_path) -> lance.LanceDataset:
    """A bare Lance table (one version) to ask Lance itself about names."""
    return lance.write_dataset(pa.table({"a": [1]}), str(tmp_path / "plain.lance"))


@pytest.fixture
def table(tmp_path, monkeypatch) -> str:
    uri = mini_table(tmp_path / "videos.lance")
    monkeypatch.setenv("MMFS_TABLE_URI", uri)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    return uri


def _lance_accepts(ds: lance.LanceDataset, name: str) -> bool:
    try:
        ds.tags.create(name, 1)
    except Exception:  # noqa: BLE001 - Lance's refusal (an OSError "Ref is invalid: ...")
        return False
    assert lance.dataset(ds.uri, version=name).version == 1 and name in lance.dataset(ds.uri).tags.list()
    return True


@pytest.mark.parametrize("name", LANCE_REFUSES)
def test_every_name_lance_refuses_is_a_usage_error(name, plain, table):
    assert not _lance_accepts(plain, name)
    with pytest.raises(ValueError, match="invalid tag name"):
        check_tag_name(name)
    r = _run("snapshot", "create", name)
    assert r.exit_code == 2, r.output  # was exit 1, "cannot access the table ... check MMFS_TABLE_URI"
    assert "error: invalid tag name" in r.output and "cannot access" not in r.output
    assert "a tag name is 1-128 ASCII letters" in " ".join(r.output.split())  # the rule, named
    assert name not in lance.dataset(table).tags.list()


def test_names_mmfs_accepts_work_in_lance(plain, table):
    for name in MMFS_ACCEPTS:
        assert check_tag_name(name, new=True) == name
        assert _lance_accepts(plain, name), name
    r = _run("snapshot", "create", "v1.2.3-rc4", "--format", "json")
    assert r.exit_code == 0 and json.loads(r.stdout)["version"] == lance.dataset(table).version


def test_random_names_agree_with_lance(plain):
    """Whatever MMFS accepts, Lance accepts (and opens); so whatever Lance refuses, MMFS refuses."""
    rng = random.Random(23)
    alphabet = "ab1_-./ :@~*lock"
    names = {"".join(rng.choice(alphabet) for _ in range(rng.randint(0, 7))) for _ in range(400)}
    names |= {"a.", "1..2", "x.lock", "b.lock", "lock.", "a.b", "a-b.c_1"}
    accepted, disagree = 0, []
    for name in sorted(names):
        try:
            check_tag_name(name)
        except ValueError:
            continue
        accepted += 1
        if not _lance_accepts(plain, name):
            disagree.append(name)
    assert disagree == [] and 20 < accepted < len(names) - 20


def test_a_new_tag_is_never_only_digits_and_a_number_stays_a_version(table):
    """Was: `snapshot create 16 --version 274` was accepted, and `rollback --to 16` then meant version 16."""
    r = _run("snapshot", "create", "2", "--version", "4")
    assert r.exit_code == 2, r.output
    said = " ".join(r.output.split())
    assert "error: invalid tag name '2': it is only digits (it would read as version 2)" in said
    assert "hint:" in said and "v2" in said
    for make in (lambda: snapshots.create(table, "16"), lambda: create_tag(table, "16")):
        with pytest.raises(ValueError, match="only digits"):
            make()
    assert lance.dataset(table).tags.list() == {}
    r = _run("rollback", "--to", "2", "--dry-run", "--format", "json")
    assert r.exit_code == 0 and json.loads(r.stdout)["target"] == 2


def test_an_old_digit_only_tag_makes_a_bare_number_ambiguous(table):
    """A tag named "2" made before the rule (Lance allows it): `--to 2` must not silently pick one."""
    lance.dataset(table).tags.create("2", 4)
    r = _run("rollback", "--to", "2")
    assert r.exit_code == 2, r.output
    said = " ".join(r.output.split())
    assert "error: --to 2 is ambiguous" in said
    assert "hint: say which: `--to tag:2` (the snapshot, version 4) or `--to version:2`" in said
    assert lance.dataset(table).version == 4  # nothing rolled back
    for to, target in (("tag:2", 4), ("version:2", 2), ("version:3", 3)):
        r = _run("rollback", "--to", to, "--dry-run", "--format", "json")
        assert r.exit_code == 0 and json.loads(r.stdout)["target"] == target, (to, r.output)
    for bad in ("version:x", "version:", "tag:nope", "version:99"):
        r = _run("rollback", "--to", bad, "--dry-run")
        assert r.exit_code == 2 and "error:" in r.output and "unexpected" not in r.output, (bad, r.output)
    assert _run("snapshot", "show", "2").exit_code == 0  # an old tag can still be read ...
    assert _run("snapshot", "delete", "2").exit_code == 0  # ... and deleted
    assert "2" not in lance.dataset(table).tags.list()
