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
    from mmfs_loader.table import check_tag_name

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
