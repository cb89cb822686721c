"""Eight writers committing at the same instant for twenty rounds, on local disk and on an S3 server:
no value lost, commit retries counted (see tests/load_writers.py)."""

from __future__ import annotations

import pytest

from tests.load_writers import run_rounds, setup
from tests.test_s3 import s3_server  # noqa: F401 - the fixture

pytestmark = pytest.mark.slow
ROUNDS, WRITERS = 20, 8


def _report(where: str, totals: dict) -> None:
    print(f"\n{where}: {totals['commits']} commits, {totals['retries']} retries "
          f"({totals['retries'] / totals['commits']:.2f} per commit, at most {totals['max_retries']} for one), "
          f"{totals['commits'] / totals['seconds']:.1f} commits/s")


def _run(uri: str, options: dict | None) -> dict:
    setup(uri, options)
    totals = run_rounds(uri, options, ROUNDS, WRITERS)
    assert totals["commits"] == ROUNDS * WRITERS
    # one pair per round fills the same column of the same partition: one of the two must lose and retry
    assert totals["retries"] >= ROUNDS
    return totals


def test_eight_writers_on_local_disk(tmp_path):
    _report("local disk", _run(str(tmp_path / "load.lance"), None))


def test_eight_writers_on_s3(s3_server):  # noqa: F811 - the fixture
    _report("S3 server", _run("s3://mmfs/load.lance", s3_server))
