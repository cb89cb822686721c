"""CLI output: floats without binary noise, long values wrapped (never cut), the packaged dagster.yaml."""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow as pa
import pytest
from rich.console import Console

from mmfs_assets.cli.render import Format, clean_float, plain, print_arrow


def test_floats_print_without_noise():
    assert clean_float(452.79998779296875, single=True) == 452.8
    assert clean_float(24.999999999999996) == 25.0
    assert clean_float(1 / 3) == 0.333333333333
    assert plain(12.345678901) == "12.3457" and plain(7) == "7"


def test_print_arrow_cleans_floats_and_wraps_long_values(capsys):
    long_name = "drop-with-a-rather-long-name-that-does-not-fit-in-a-narrow-column-2026-12-02"
    t = pa.table({
        "drop_id": [long_name],
        "duration_s": pa.array([452.79998779296875], pa.float32()),
        "fps": pa.array([24.999999999999996], pa.float64()),
        "emb": pa.array([[0.1, 0.2]], pa.list_(pa.float32())),
    })
    buf = io.StringIO()
    print_arrow(t, Format.table, Console(file=buf, width=80))
    text = buf.getvalue()
    assert "452.8" in text and "25.0" in text and "452.79998" not in text and "24.99999" not in text
    first_cells = [line.split("│")[1].strip() for line in text.splitlines() if line.startswith("│")]
    assert "".join(first_cells) == long_name and len(first_cells) > 1  # wrapped over lines, all there
    assert "…" not in text
    print_arrow(t, Format.json, Console())
    out = capsys.readouterr().out
    assert '"duration_s": 452.8' in out and '"fps": 25.0' in out and "[0.1, 0.2]" in out


def test_packaged_instance_config_is_the_repos():
    from mmfs_assets.instance.home import DEFAULT_CONFIG

    root = Path(__file__).resolve().parents[1]
    assert DEFAULT_CONFIG.read_text() == (root / "dagster_home" / "dagster.yaml").read_text()
    assert "nux:\n  enabled: false" in DEFAULT_CONFIG.read_text()


def test_a_home_without_config_gets_mmfs_config(tmp_path):
    from mmfs_assets.instance.home import init_home

    init_home(tmp_path)
    assert (tmp_path / "dagster.yaml").read_text().count("default_limit: 1") == 1


def test_refused_drop_names_print_as_text():
    from mmfs_assets.cli.render import print_refused

    buf = io.StringIO()
    odd = b"caf\xe9".decode("utf-8", "surrogateescape")  # a Latin-1 folder name
    print_refused({"[red]x": "unsafe", odd: "unsafe"}, Console(file=buf, width=120))
    text = buf.getvalue()
    assert "[red]x" in text and "caf\\xe9" in text  # no markup applied, odd bytes as \xNN


def test_error_classes():
    import pyarrow as pa

    from mmfs_assets.cli.errors import explain
    from mmfs_assets.instance.home import InstanceDamagedError, InstanceError
    from mmfs_loader.contract.table import check_tag_name

    with pytest.raises(ValueError) as ours:
        check_tag_name("bad tag!")
    assert explain(ours.value).exit_code == 2  # our own check of the request
    with pytest.raises(pa.ArrowInvalid) as theirs:
        pa.array(["not a number"]).cast(pa.int64())  # raised inside pyarrow, not by MMFS
    assert explain(theirs.value).exit_code == 1 and "unexpected error" in str(explain(theirs.value))
    assert explain(InstanceDamagedError("damaged")).exit_code == 1
    assert explain(InstanceError("DAGSTER_HOME is not set")).exit_code == 2
    lance_io = ValueError("LanceError(IO): Generic S3 error: bucket gone, /home/runner/work/lance/x.rs:12:3")
    err = explain(lance_io)
    assert err.exit_code == 1 and "cannot access the table" in str(err) and ".rs:" not in str(err)


def test_user_text_in_errors_and_sql_cells_prints_as_it_is():
    """A file name from a drop or a name typed by the user ("[/b]", ":fire:") is text, never markup: it used to
    raise rich's MarkupError (a traceback, exit 1) or turn into an emoji."""
    from mmfs_assets.cli.errors import CliUsageError, report

    buf = io.StringIO()
    code = report(CliUsageError("drop name '[/b]' and 'a:fire:' are not safe", "use 'x[/]y'"), Console(file=buf, width=120))
    text = buf.getvalue()
    assert code == 2 and "'[/b]'" in text and "'a:fire:'" in text and "'x[/]y'" in text
    buf = io.StringIO()
    print_arrow(pa.table({"file_name": ["x[/b]y.mp4", ":fire:.mp4"], "[/]": [1, 2]}), Format.table,
                Console(file=buf, width=120))
    text = buf.getvalue()
    assert "x[/b]y.mp4" in text and ":fire:.mp4" in text and "[/]" in text


def test_permission_denied_and_full_disk_are_not_blamed_on_the_table_uri():
    from mmfs_assets.cli.errors import explain

    denied = explain(OSError("LanceError(IO): Generic LocalFileSystem error: Unable to open file /t/_refs/x: "
                             "Permission denied (os error 13)"))
    assert denied.exit_code == 1 and "cannot write the table" in str(denied) and "MMFS_TABLE_URI" not in denied.hint
    full = explain(OSError("LanceError(IO): No space left on device (os error 28)"))
    assert "free space" in full.hint


def test_wide_values_print_abbreviated_in_a_table_that_fits(capsys):
    """`mmfs sql "SELECT * FROM videos LIMIT 2"` printed 59,266 lines (every float of the vectors, every byte of
    the depth PNGs as hex): the table output names wide values ([512 floats], <png 518x924>, <blob 1.2 MB>,
    text cut with …) and fits the console, a row at a time when its columns cannot sit side by side; --format
    json and csv keep every value."""
    from tests.conftest import demo_like_table

    t = demo_like_table(2)
    png = t["depth_png"][0].as_py()[0]
    t = t.append_column("first_depth", pa.array([png, png], pa.binary()))
    t = t.append_column("video_bytes", pa.array([b"\0" * 1_200_000, None], pa.binary()))
    buf = io.StringIO()
    print_arrow(t, Format.table, Console(file=buf, width=120))
    text = buf.getvalue()
    lines = text.splitlines()
    assert max(map(len, lines)) <= 120 and len(lines) < 2 * t.num_columns + 30, len(lines)
    for shown in ("[512 floats]", "[37 floats]", "[4 × <png 518x924>]", "<png 518x924>", "<blob 1.2 MB>",
                  "row 1 of 2", "row 2 of 2", "2 row(s)"):
        assert shown in text, shown
    caption = t["caption"][0].as_py()
    assert len(caption) == 300 and caption not in " ".join(text.split()) and "…" in text  # cut, not wrapped
    assert "0.001" not in text and "89504e47" not in text  # no vector value, no PNG as hex

    narrow = t.select(["id", "height", "keyframe_times", "clip_embedding", "first_depth"])  # fits: one table
    buf = io.StringIO()
    print_arrow(narrow, Format.table, Console(file=buf, width=120))
    lines = buf.getvalue().splitlines()
    assert len(lines) <= 8 and max(map(len, lines)) <= 120 and "[512 floats]" in lines[3] and "row 1" not in buf.getvalue()

    print_arrow(t, Format.json, Console())
    rows = __import__("json").loads(capsys.readouterr().out)
    assert len(rows[0]["clip_embedding"]) == 512 and len(rows[0]["keyframe_times"]) == 37
    assert rows[0]["caption"] == caption and rows[0]["first_depth"] == png.hex()
    print_arrow(t.select(["caption", "clip_embedding"]), Format.csv, Console())
    assert caption in capsys.readouterr().out


def test_cell_text():
    from mmfs_assets.cli.render import MAX_TEXT, cell_text

    assert cell_text(None) == "∅" and cell_text([0.5, 1.0]) == "[0.5, 1.0]" and cell_text([]) == "[]"
    assert cell_text([0.25] * 37) == "[37 floats]" and cell_text([1] * 100) == "[100 ints]"
    assert cell_text(["a" * 30, "b" * 30]) == "[2 strings]" and cell_text([[1.0] * 8] * 3) == "[3 lists]"
    assert cell_text(b"\0" * 1500) == "<blob 1.5 KB>" and cell_text([b"\0", b"\0\0"]) == "[<blob 1 B>, <blob 2 B>]"
    long = "x" * (MAX_TEXT + 50)
    assert cell_text(long) == "x" * (MAX_TEXT - 1) + "…" and cell_text("y" * MAX_TEXT) == "y" * MAX_TEXT


def test_status_lists_one_producer_per_model_whatever_the_sampling():
    """Under sampling=auto a feature's rows carry ``sampling=keyframe`` or ``sampling=exact``: one model, one
    producer line in `mmfs status` (``sampling=exact/keyframe``), with the rows of both counted."""
    from io import StringIO

    from rich.console import Console

    from mmfs_assets.cli.render import Format, print_status
    from mmfs_loader.contract.status import DropStatus, GroupStatus

    base = "caption:caption-v1|model=m|weights=w|frames=4x32|sampling={}|dtype=fp32"
    gs = GroupStatus(filled=11, producers={base.format("exact"): 9, base.format("keyframe"): 2}, repeated={base.format("exact"): 1})
    buf = StringIO()
    print_status([DropStatus("d1", 11, {"caption": gs})], Format.table, Console(file=buf, width=200))
    text = buf.getvalue()
    assert "[1] caption-v1" in text and "[2]" not in text and "(9)" not in text
    assert base.format("exact/keyframe") in text
    assert "repeats: 1 filled rows took the same frame" in text
