"""The `mmfs` CLI: sql (pinned, formats), status, materialize, errors."""

from __future__ import annotations

import json
import re

import lance
import pyarrow as pa
from typer.testing import CliRunner

from mmfs_assets.cli.app import app
from mmfs_loader.contract.schema import producer_model
from tests.conftest import make_drop

runner = CliRunner()


def _run(*args):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_materialize_sql_status(env, fixture_dir, tmp_path, monkeypatch):
    """The CLI end to end: materialize (json), pinned SQL, snapshots, status, --force, stale and refused drops."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dh"))
    (tmp_path / "dh").mkdir()
    good = sorted((fixture_dir / "good").iterdir())
    bad = sorted((fixture_dir / "bad").iterdir())
    make_drop(env, "cli-1", good[:3] + bad[:2])
    r = _run("materialize", "--partition", "cli-1", "--select", "videos")
    assert r.exit_code == 0, r.output
    v_ingest = lance.dataset(env.table_uri).version
    r = _run("materialize", "--partition", "cli-1", "--format", "json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["success"] and report["partition"] == "cli-1"
    meta, clip = report["assets"]["video_metadata"], report["assets"]["clip_embedding"]
    assert meta["decoder"] == "cpu" and meta["videos_per_s"] > 0 and meta["frames_decoded"] > 0
    assert clip["sampling"] == "auto" and clip["decoder"] == "cpu" and clip["decode_workers"] >= 1
    assert clip["rows_sampled_keyframe"] + clip["rows_sampled_exact"] == 3  # the videos decoded, each in its mode
    # the fixture videos have fewer keyframes than 8: auto samples them exact, no frame repeats
    assert clip["frames_taken"] == 3 * 8 and clip["decode_amplification"] > 0 and clip["rows_with_repeated_frames"] == 0
    assert {"seconds_decode_wait", "seconds_compute", "seconds_write"} <= set(clip)
    assert "gpu_busy_percent" not in clip  # no GPU here
    assert report["assets"]["depth"]["sampling"] == "exact"

    r = _run("sql", "SELECT COUNT(1) AS n FROM videos WHERE metadata_error IS NULL", "--format", "json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == [{"n": 3}]
    # pinned to the ingest version: metadata columns did not exist yet
    r = _run("sql", "SELECT COUNT(1) AS n FROM videos", "--version", str(v_ingest), "--format", "json")
    assert json.loads(r.stdout) == [{"n": 5}]
    lance.dataset(env.table_uri).tags.create("snap", v_ingest)
    r = _run("sql", "SELECT * FROM videos", "--tag", "snap", "--format", "json")
    rows = json.loads(r.stdout)
    assert len(rows) == 5 and "video" not in rows[0] and "width" not in rows[0]
    r = _run("sql", "SELECT COUNT(1) FROM videos", "--version", "999")
    assert r.exit_code == 2 and "version 999 not found" in r.output
    r = _run("sql", "SELECT COUNT(1) FROM videos", "--tag", "nope")
    assert r.exit_code == 2 and "no such tag 'nope'" in r.output and "snap" in r.output
    r = _run("snapshot", "create", "snap")
    assert r.exit_code == 2 and "already names version" in r.output
    r = _run("snapshot", "create", "snap-2", "--version", "2")
    assert r.exit_code == 0 and "tagged version 2" in r.stdout
    assert _run("sql", "SELECT COUNT(1) AS n FROM videos", "--tag", "snap-2").exit_code == 0
    r = _run("sql", "SELECT COUNT(1) FROM videos WHERE height*width >= 1280*720", "--format", "csv")
    assert r.exit_code == 0 and r.stdout.splitlines()[1] == "0"

    r = _run("status", "--format", "json")
    st = json.loads(r.stdout)
    assert [(d["drop_id"], d["rows"]) for d in st["drops"]] == [("cli-1", 5)]
    assert st["stale"] == [] and st["refused_drops"] == {}
    groups = st["drops"][0]["groups"]
    assert set(groups) == {"metadata", "clip_embedding", "depth", "caption", "quality", "dup_group"}
    for name, g in groups.items():  # every feature ran: 3 good videos filled, 2 broken ones errored
        assert (g["filled"], g["errored"], g["missing"]) == (3, 2, 0), name
        assert sum(g["producers"].values()) == 5, name  # one model (the sampling may differ per row: auto)
        assert len({producer_model(p) for p in g["producers"]}) == 1, name
    for name in ("clip_embedding", "depth", "caption"):  # values of the test models say so in their producer
        assert "|profile=tiny" in next(iter(groups[name]["producers"])), name
    r = _run("status")
    assert r.exit_code == 0 and "stale: none" in r.stdout

    # a backfill without a change computes nothing; --force recomputes every row of the drop
    r = _run("materialize", "-p", "cli-1", "-s", "quality", "--format", "json")
    q = json.loads(r.stdout)["assets"]["quality"]
    assert (q["rows_already_current"], q["rows_computed"], q["commits"]) == (5, 0, 0)
    v = lance.dataset(env.table_uri).version
    r = _run("materialize", "-p", "cli-1", "-s", "quality", "--force", "--format", "json")
    assert r.exit_code == 0, r.output
    q = json.loads(r.stdout)["assets"]["quality"]
    assert (q["rows_forced"], q["rows_already_current"], q["rows_computed"], q["commits"]) == (5, 0, 3, 1)
    ds = lance.dataset(env.table_uri)
    assert ds.version == v + 1
    assert ds.read_transaction(ds.version).transaction_properties["mmfs.asset"] == "quality"

    # a settings change makes the drop's rows stale: status names the pair and the cause until a fill
    monkeypatch.setenv("MMFS_QUALITY_SAMPLING", "keyframe")
    (tmp_path / "drops" / "bad name").mkdir()
    st = json.loads(_run("status", "--format", "json").stdout)
    assert st["stale"] == [{"drop_id": "cli-1", "feature": "quality", "rows": 5, "cause": "sampling exact -> keyframe"}]
    assert list(st["refused_drops"]) == ["bad name"] and "not a safe partition key" in st["refused_drops"]["bad name"]
    r = _run("status")
    assert "sampling exact -> keyframe" in r.stdout and "refused drops" in r.stdout
    assert _run("materialize", "-p", "cli-1", "-s", "quality").exit_code == 0
    assert json.loads(_run("status", "--format", "json").stdout)["stale"] == []


def test_errors_are_clear(env, tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dh"))
    (tmp_path / "dh").mkdir()
    r = _run("sql", "SELECT 1 FROM videos")
    assert r.exit_code == 2 and "no MMFS table" in r.output
    r = _run("materialize", "--partition", "no-such-drop")
    assert r.exit_code == 2 and "no drop folder" in r.output
    make_drop(env, "x", [])
    r = _run("materialize", "--partition", "x", "--select", "nope")
    assert r.exit_code == 2 and "unknown asset" in r.output
    r = _run("materialize", "--partition", "x'; DROP TABLE videos; --")
    assert r.exit_code == 2 and "not a safe partition key" in r.output


def _one_error(r, code: int, *phrases: str) -> None:
    """The CLI's error style: the exit code, a short message with the phrases, no traceback, no Rust paths."""
    assert r.exit_code == code, r.output
    assert "Traceback" not in r.output and ".rs:" not in r.output, r.output
    assert len(r.output.strip().splitlines()) <= 8, r.output
    text = " ".join(r.output.split())  # rich wraps long lines at 80 columns here
    for p in phrases:
        assert p in text, (p, r.output)


def test_one_error_style(env, fixture_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dh"))
    (tmp_path / "dh").mkdir()
    _one_error(_run("snapshot", "create", "x"), 2, "error: no MMFS table", "hint: set MMFS_TABLE_URI")
    _one_error(_run("status"), 2, "no MMFS table")
    make_drop(env, "e-1", sorted((fixture_dir / "good").iterdir())[:1])
    assert _run("materialize", "-p", "e-1", "-s", "videos", "-s", "video_metadata").exit_code == 0
    _one_error(_run("snapshot", "create", "x", "--version", "999"), 2, "version 999 not found", "latest is")
    _one_error(_run("sql", "SELECT 1 FROM videos", "--version", "999"), 2, "version 999 not found", "latest is")
    _one_error(_run("sql", "SELEC 1"), 2, "SQL error")
    _one_error(_run("snapshot", "create", "bad tag!"), 2, "invalid tag name")
    _one_error(_run("sql", "SELECT 1", "--nope"), 2, "No such option")
    _one_error(_run("materialize", "-p", "e-1", "-s", "videos", "--force"), 2, "--force recomputes fills")
    monkeypatch.setenv("MMFS_MODEL_PROFILE", "huge")
    _one_error(_run("status"), 2, "MMFS_MODEL_PROFILE='huge'")
    r = _run("--debug", "status")  # --debug adds the traceback
    assert r.exit_code == 2 and "Traceback" in r.output and "MMFS_MODEL_PROFILE='huge'" in r.output

    # pretrained weights that are not on this machine: one short message naming the settings to change
    monkeypatch.setenv("MMFS_MODEL_PROFILE", "pretrained")
    r = _run("materialize", "-p", "e-1", "-s", "clip_embedding")
    _one_error(r, 1, "models: pretrained", "clip_embedding failed for drop e-1", "is not on this machine",
               "MMFS_MODEL_PROFILE=tiny", "MMFS_CLIP_MODEL", "MMFS_MODEL_DOWNLOAD=1")


def test_demo_runs_the_whole_pipeline(env, tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dh"))
    monkeypatch.delenv("MMFS_MODEL_PROFILE")  # the default profile (tiny) is the CLI's, the demo's and the UI's
    (tmp_path / "dh").mkdir()
    r = _run("demo", "-n", "2")
    assert r.exit_code == 0, r.output
    assert "demo-001" in r.stdout and "videos_720p_or_more" in r.stdout
    assert "models: tiny random-init test models" in r.stdout and "MMFS_MODEL_PROFILE=pretrained" in r.stdout
    assert "of the 13 files: 12 new to the table, 1 duplicate(s) inside the drop" in r.stdout
    assert "tagged version" in r.stdout and "demo-001-snapshot" in r.stdout
    assert "read 3 samples (24 decoded frames)" in r.stdout  # the loader pass: 3 good videos, 8 frames each
    for asset in ("videos", "video_metadata", "clip_embedding", "depth", "caption", "quality"):
        assert f"✓ {asset}:" in r.stdout, asset
    ds = lance.dataset(env.table_uri)
    # 2 good + the 720p clip + broken files; the copy of a good file is deduplicated
    from mmfs_assets import samples

    assert ds.count_rows() == 3 + len(samples.BAD_FILES)
    assert ds.count_rows(filter="metadata_error IS NULL") == 3
    assert ds.count_rows(filter="height * width >= 1280 * 720") == 1
    for g in ("clip_embedding", "depth", "caption", "quality"):  # every feature filled the good videos
        assert ds.count_rows(filter=f"{g}_error IS NULL AND {g}_producer IS NOT NULL") == 3, g
    r = _run("demo", "-n", "1")  # a second demo makes a new drop, and says what was already in the table
    assert r.exit_code == 0
    assert re.search(r"of the 12 files: \d+ new to the table, \d+ already in it", r.stdout), r.stdout
    assert sorted(p.name for p in (tmp_path / "drops").iterdir()) == ["demo-001", "demo-002"]


def test_sql_prints_wide_rows_that_fit_the_terminal(env):
    """The first query everyone types printed 59,266 lines (15 MB) on the demo table: every float of the
    vectors and every byte of the depth PNGs. Run as a user runs it, in a 120-column terminal."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from tests.conftest import demo_like_table

    lance.write_dataset(demo_like_table(2), env.table_uri)

    def mmfs(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "mmfs_assets.cli.app", *args], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parents[1], env={**os.environ, "COLUMNS": "120"}, timeout=120)

    r = mmfs("sql", "SELECT * FROM videos LIMIT 2")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) < 120 and max(map(len, lines)) <= 120, (len(lines), max(map(len, lines)))
    for shown in ("[512 floats]", "[37 floats]", "[4 × <png 518x924>]", "…", "2 row(s)"):
        assert shown in r.stdout, shown
    r = mmfs("sql", "SELECT id, depth_png[1] AS depth, repeat('x', 1200000)::BLOB AS video FROM videos LIMIT 1")
    assert r.returncode == 0 and "<png 518x924>" in r.stdout and "<blob 1.2 MB>" in r.stdout, r.stdout
    assert len(r.stdout.splitlines()) <= 6 and max(map(len, r.stdout.splitlines())) <= 120, r.stdout
    rows = json.loads(_run("sql", "SELECT * FROM videos LIMIT 2", "--format", "json").stdout)  # every value
    assert len(rows[1]["clip_embedding"]) == 512 and len(rows[0]["keyframe_times"]) == 37
    assert len(rows[0]["caption"]) == 300 and len(rows[0]["depth_png"]) == 4
    csv_text = _run("sql", "SELECT caption, clip_embedding FROM videos", "--format", "csv").stdout
    assert rows[0]["caption"] in csv_text and csv_text.count(", ") >= 2 * 511


def test_mistakes_say_what_to_type(env, tmp_path, monkeypatch):
    """Exit code 2 and the names to use, where a typo used to print an empty table (exit 0), a bare DuckDB
    line, or an "unexpected error" (exit 1) that suggested the wrong column."""
    from tests.conftest import demo_like_table

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dh"))
    (tmp_path / "dh").mkdir()
    _one_error(_run("snapshot", "list"), 2, "error: no MMFS table at", "hint: set MMFS_TABLE_URI to the table")
    lance.write_dataset(demo_like_table(2), env.table_uri)
    r = _run("snapshot", "list")
    assert r.exit_code == 0 and "no snapshots yet" in r.stdout, r.output

    _one_error(_run("status", "--drop", "demo-01"), 2, "no drop 'demo-01' in the table",
               "did you mean 'demo-001'?", "known drops: 'demo-001'")
    _one_error(_run("status", "--drop", "demo-001", "--drop", "nope", "--format", "json"), 2, "no drop 'nope'")
    assert _run("status", "--drop", "demo-001").exit_code == 0
    make_drop(env, "new-drop", [])  # a folder not ingested yet is known: status says why it is not in the table
    r = _run("status", "--drop", "new-drop")
    assert r.exit_code == 0 and "not ingested" in r.stdout, r.output

    _one_error(_run("sql", "SELECT heigth FROM videos"), 2, 'Referenced column "heigth" not found',
               'Candidate bindings: "height", "width"')
    _one_error(_run("sql", "SELECT 1 FROM vidoes"), 2, 'Did you mean "videos"?')
    for statement, verb in (("DELETE FROM videos", "DELETE"), ("UPDATE videos SET width = 1", "UPDATE"),
                            ("INSERT INTO videos (id) VALUES ('x')", "INSERT")):
        _one_error(_run("sql", statement), 2, f"SQL over the table is read-only: {verb} cannot change `videos`",
                   "no option lets SQL change it")
    out = tmp_path / "rows.csv"
    _one_error(_run("sql", f"COPY (SELECT id FROM videos) TO '{out}'"), 2, "file system operations are disabled",
               "add --unsafe-allow-files")
    assert not out.exists()
    assert _run("sql", f"COPY (SELECT id FROM videos) TO '{out}'", "--unsafe-allow-files").exit_code == 0
    assert out.read_text().split() == ["id", "id-000", "id-001"]

    r = _run("search", "--like", "id-000", "--where", "heigth > 100")
    _one_error(r, 2, "bad filter 'heigth > 100': no column 'heigth'; did you mean height?")
    assert "unexpected" not in r.output and "width" not in r.output
    _one_error(_run("search", "--caption", "dog", "--where", "height >"), 2, "bad filter 'height >'")
    assert _run("search", "--like", "id-000", "--where", "height > 100").exit_code == 0


def test_tiny_profile_values_are_called_out(env, tmp_path, monkeypatch):
    """Issue 25.6: `mmfs search` printed confident distances and `snapshot create --require clip_embedding`
    tagged random-init values without a word. Both now say the values come from the tiny profile, and say
    nothing for values of real models."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dh"))
    (tmp_path / "dh").mkdir()
    from tests.conftest import demo_like_table

    note = "values come from MMFS_MODEL_PROFILE=tiny (random-init test models)"
    lance.write_dataset(demo_like_table(3), env.table_uri)
    r = _run("search", "--like", "id-000")
    assert r.exit_code == 0 and f"clip_embedding {note}" in r.output and "distances mean nothing" in r.output, r.output
    r = _run("search", "--like", "id-000", "--format", "json")
    assert r.exit_code == 0 and note in r.output and len(json.loads(r.stdout)) == 2, r.output  # stdout stays JSON
    r = _run("snapshot", "create", "tiny-snap", "--require", "clip_embedding")
    assert r.exit_code == 0 and "tagged version" in r.stdout and note in r.output, r.output
    assert "caption, clip_embedding, depth" in r.output and "--require checks that values exist" in r.output
    r = _run("snapshot", "show", "tiny-snap")
    assert r.exit_code == 0 and note in r.output, r.output
    r = _run("sql", "SELECT id, caption FROM videos")
    assert r.exit_code == 0 and f"caption {note}" in r.output and "clip_embedding" not in r.output, r.output
    r = _run("sql", "SELECT id, width FROM videos")  # no model-made values in the result: no note
    assert r.exit_code == 0 and note not in r.output, r.output
    r = _run("status")
    assert r.exit_code == 0 and note in r.output and "test values" in r.output, r.output

    t = demo_like_table(3)
    for name in t.column_names:  # the same table filled by real models: no note
        if name.endswith("_producer"):
            t = t.set_column(t.column_names.index(name), name,
                             pa.array([v.replace("|profile=tiny", "") for v in t[name].to_pylist()]))
    lance.write_dataset(t, env.table_uri, mode="overwrite")
    r = _run("search", "--like", "id-000")
    assert r.exit_code == 0 and note not in r.output, r.output
    r = _run("snapshot", "create", "real-snap", "--require", "clip_embedding")
    assert r.exit_code == 0 and note not in r.output, r.output
    for cmd in (("snapshot", "show", "real-snap"), ("sql", "SELECT id, caption FROM videos"), ("status",)):
        r = _run(*cmd)
        assert r.exit_code == 0 and note not in r.output, (cmd, r.output)
