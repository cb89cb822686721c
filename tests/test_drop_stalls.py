"""Drops that would never finish, silently: future modification times, and files added after the ingest.

(a) A drop whose files carry a modification time in the future (clock skew, ``cp -p`` from a device with a
wrong date) and no ``_READY`` is named, with why it waits, in the sensor's skip reason and ``mmfs status``,
and it is ready once the sensor has seen its listing unchanged for the quiet period (not at that date).
(b) A file copied into a drop after its ingest (``_READY`` copied before the last files) is listed by
``mmfs status``; the sensor requests the drop's ingest again once the drop is quiet, the re-run ingests it,
and the metadata fill follows.

Time is never waited for: the quiet period passes by moving modification times, or the ``first seen`` time the
sensor keeps in its cursor, into the past.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import lance
from typer.testing import CliRunner

from mmfs_assets.cli.app import app
from mmfs_assets.definitions import defs
from mmfs_assets.defs.ingest.drop_sensor import drop_sensor
from mmfs_assets.resources import DropFolderResource
from mmfs_loader.contract import schema as S
from mmfs_loader.contract.sql import equals

FUTURE = datetime(2031, 5, 1, 12, 0, tzinfo=UTC).timestamp()
QUIET = 60.0


def _tick(instance, root, cursor=None, quiet=QUIET):
    ctx = dg.build_sensor_context(
        instance=instance, cursor=cursor, definitions=defs,
        resources={"drop_folder": DropFolderResource(root=str(root), quiet_seconds=quiet)},
    )
    return drop_sensor(ctx)


def _skip(result) -> str:
    return result.skip_reason.skip_message if result.skip_reason else ""


def _flat(text: str) -> str:
    return "".join(text.split())  # rich wraps long lines anywhere


def _status(*args: str):
    return CliRunner().invoke(app, ["status", *args])


def _age(paths, seconds: float) -> None:
    t = time.time() - seconds
    for p in paths:
        os.utime(p, (t, t), follow_symlinks=False)


def test_future_modification_times_are_named_and_do_not_stall_the_drop(env, instance):
    root = Path(env.drop_dir)
    d = root / "skewed"
    d.mkdir()
    for name in ("a.mp4", "b.mp4"):
        (d / name).write_bytes(os.urandom(100))
        os.utime(d / name, (FUTURE, FUTURE))  # copied with `cp -p` from a camera set to 2031
    _age([d], 7200)

    r1 = _tick(instance, root)
    assert not r1.run_requests
    skip = _skip(r1)
    assert "drop 'skewed' waits: 2 files have modification times in the future (up to 2031-05-01 12:00:00 UTC)" in skip
    assert "'a.mp4', 'b.mp4'" in skip and "_READY" in skip
    out = _status().output  # no table yet (exit 2 says so): the waiting drop is named first, with why
    assert "skewed" in out and "waiting" in out and "2031-05-01 12:00:00 UTC" in out, out
    assert _flat("modification times in the future") in _flat(out)

    r2 = _tick(instance, root, r1.cursor)  # the same listing, seen again at once: not quiet yet
    assert not r2.run_requests and "skewed" in _skip(r2)
    cursor = json.loads(r2.cursor)
    sig, since = cursor["scan"]["seen"]["skewed"]
    assert since <= time.time()  # the quiet period runs from when a tick first saw this listing, not from 2031

    # a change to the listing starts the quiet period again
    cursor["scan"]["seen"]["skewed"] = [sig, since - QUIET - 1]
    (d / "c.mp4").write_bytes(b"c")
    os.utime(d / "c.mp4", (FUTURE, FUTURE))
    _age([d], 7200)
    r3 = _tick(instance, root, json.dumps(cursor))
    assert not r3.run_requests and "3 files have modification times in the future" in _skip(r3)

    # the same listing for the quiet period: ready now, not in 2031
    cursor = json.loads(r3.cursor)
    sig, since = cursor["scan"]["seen"]["skewed"]
    cursor["scan"]["seen"]["skewed"] = [sig, since - QUIET - 1]
    r4 = _tick(instance, root, json.dumps(cursor))
    assert [(q.partition_key, q.run_key) for q in r4.run_requests] == [("skewed", "ingest:skewed")]
    assert "seen" not in json.loads(r4.cursor)["scan"]  # nothing left to remember


def test_bucket_drops_judge_future_times_by_the_same_rule():
    """The object-store twin: a LastModified ahead of the server's Date is not waited for either."""
    from mmfs_assets.ingest.drops import ScanState
    from mmfs_assets.ingest.object_drops import ObjectDrops

    server_now = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    date = "Thu, 01 Jan 2026 00:00:00 GMT"  # the server's clock, in every listing's Date header
    objects = [{"Key": "incoming/cam/v.mp4", "Size": 5, "ETag": '"e1"',
                "LastModified": datetime(2031, 5, 1, 12, 0, tzinfo=UTC)}]

    class NotFound(Exception):
        response = {"Error": {"Code": "404"}}

    class Client:  # what the listing and the _READY check ask of the server
        def head_object(self, **kw):
            raise NotFound()

        def get_paginator(self, name):
            class Pages:
                def paginate(self, **kw):
                    meta = {"ResponseMetadata": {"HTTPHeaders": {"date": date}}}
                    if kw.get("Delimiter"):
                        return iter([{**meta, "CommonPrefixes": [{"Prefix": "incoming/cam/"}]}])
                    return iter([{**meta, "Contents": objects}])
            return Pages()

    src = ObjectDrops("s3://bucket/incoming/", {})
    src._client = Client()
    scan, state = src.scan(set(), QUIET, ScanState(), now=server_now)
    assert scan.waiting == ["cam"] and "1 file has a modification time in the future" in scan.why["cam"].why
    assert "'v.mp4'" in scan.why["cam"].why
    scan, state = src.scan(set(), QUIET, state, now=server_now)  # seen again, at the same server time
    assert scan.waiting == ["cam"]
    sig, since = state.seen["cam"]
    state.seen["cam"] = [sig, since - QUIET - 1]  # the listing stayed the same for the quiet period
    scan, _ = src.scan(set(), QUIET, ScanState.of(state.record()), now=server_now)
    assert scan.ready == ["cam"]


def _not_ingested() -> list[tuple[str, str, list[str]]]:
    r = _status("--format", "json")
    assert r.exit_code == 0, r.output
    return [(a["drop_id"], a["state"], a["files"]) for a in json.loads(r.stdout)["drops_not_ingested"]]


def test_files_added_after_the_ingest_are_reported_and_ingested(env, instance, fixture_dir):
    from mmfs_assets.cli.run import materialize_drop

    root = Path(env.drop_dir)
    good = sorted((fixture_dir / "good").iterdir())
    d = root / "d1"
    d.mkdir()
    shutil.copy(good[0], d / good[0].name)
    shutil.copy(good[0], d / "copy-of-first.mp4")  # a duplicate inside the drop: accounted for, not "not ingested"
    (d / "_READY").touch()
    r = _tick(instance, root)
    assert [q.run_key for q in r.run_requests] == ["ingest:d1"]
    instance.add_dynamic_partitions("drops", ["d1"])
    assert materialize_drop("d1", ["videos"], instance, env).success
    d2 = root / "d2"  # a second drop holding a video of the first: accounted for too
    d2.mkdir()
    shutil.copy(good[0], d2 / "same-as-d1.mp4")
    (d2 / "_READY").touch()
    instance.add_dynamic_partitions("drops", ["d2"])
    assert materialize_drop("d2", ["videos"], instance, env).success
    assert materialize_drop("d1", ["video_metadata"], instance, env).success
    _age([*d.rglob("*"), d, *d2.rglob("*"), d2], 7200)
    r = _tick(instance, root, r.cursor)
    assert not r.run_requests and "d1" not in _skip(r)  # nothing added: nothing requested
    assert _not_ingested() == []
    cond = dg.evaluate_automation_conditions(defs=defs, instance=instance)

    late = d / "late" / good[1].name  # copied in after _READY and the ingest
    late.parent.mkdir()
    shutil.copy(good[1], late)
    r = _tick(instance, root, r.cursor)
    assert not r.run_requests  # still being written (changed just now): waits for the quiet period
    skip = _skip(r)
    assert f"drop 'd1' waits: 1 file(s) added after its ingest: 'late/{good[1].name}'; the drop changed" in skip
    assert "_READY" not in skip  # its _READY was used: only the quiet period counts
    assert _not_ingested() == [("d1", "files not ingested", [f"late/{good[1].name}"])]
    out = _status().output
    assert "files not ingested" in out and _flat(f"late/{good[1].name}") in _flat(out), out

    _age([late, late.parent, d], 7200)  # the drop is quiet again
    r = _tick(instance, root, r.cursor)
    requests = [(q.partition_key, q.run_key) for q in r.run_requests]
    assert len(requests) == 1 and requests[0][0] == "d1" and requests[0][1].startswith("ingest:d1:late:")
    again = _tick(instance, root, r.cursor)  # the same files: the same run key (the daemon runs it once)
    assert [q.run_key for q in again.run_requests] == [requests[0][1]]

    assert materialize_drop("d1", ["videos"], instance, env).success  # the run the sensor requested
    ds = lance.dataset(env.table_uri)
    names = ds.to_table(columns=[S.FILE_NAME], filter=equals(S.DROP_ID, "d1"))[S.FILE_NAME].to_pylist()
    assert len(names) == 2 and f"late/{good[1].name}" in names  # the late video, and no second row of the first
    r = _tick(instance, root, again.cursor)
    assert not r.run_requests and "d1" not in _skip(r)
    assert _not_ingested() == []

    # downstream follows: the automation requests d1's metadata, whose fill computes the new row
    cond = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cond.cursor)
    assert cond.get_requested_partitions(dg.AssetKey("video_metadata")) == {"d1"}
    assert materialize_drop("d1", ["video_metadata"], instance, env).success
    t = lance.dataset(env.table_uri).to_table(columns=["metadata_producer"], filter=equals(S.DROP_ID, "d1"))
    assert t.num_rows == 2 and all(p is not None for p in t["metadata_producer"].to_pylist())
