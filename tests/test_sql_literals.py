"""Filters never paste raw strings: literals are escaped and work against Lance and DuckDB."""

from __future__ import annotations

import lance
import pyarrow as pa
import pytest

from mmfs_loader.contract.query import connect
from mmfs_loader.contract.sql import equals, identifier, is_in, literal

NASTY = ["it's", "a''b", "x' OR '1'='1", "back\\slash", "ünï «côdé»", 'dq"q', "semi;colon -- comment"]


def test_literal_rendering():
    assert literal("it's") == "'it''s'"
    assert literal(None) == "NULL" and literal(True) == "TRUE" and literal(3) == "3"
    assert identifier("drop_id") == "`drop_id`"
    assert is_in("id", []) == "FALSE"
    with pytest.raises(ValueError):
        literal("nul\x00")
    with pytest.raises(ValueError):
        literal(float("nan"))
    with pytest.raises(TypeError):
        literal(object())


def test_nasty_strings_round_trip_in_lance_and_duckdb(tmp_path):
    uri = str(tmp_path / "t.lance")
    ds = lance.write_dataset(pa.table({"name": NASTY, "n": list(range(len(NASTY)))}), uri)
    for i, s in enumerate(NASTY):
        assert ds.to_table(filter=equals("name", s))["n"].to_pylist() == [i]
    assert ds.count_rows(filter=is_in("name", NASTY[:3])) == 3
    con = connect(ds)
    for i, s in enumerate(NASTY):
        assert con.execute(f"SELECT n FROM videos WHERE name = {literal(s)}").fetchall() == [(i,)]
