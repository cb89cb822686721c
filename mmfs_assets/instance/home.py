"""``DAGSTER_HOME``: required (absolute), initialised once under a lock, checked and repairable.

Dagster creates its SQLite storages (``history/runs.db``, ``history/runs/index.db``,
``schedules/schedules.db``) lazily, the first time an instance is built on a home, and stamps each with
its alembic revision. Several processes doing that at once on a fresh home race: some die ("table ...
already exists", a UNIQUE error on ``alembic_version``) and the home can be left with two rows in an
``alembic_version`` table, after which every run fails ("more than one head"). MMFS therefore builds the
instance once under an exclusive ``flock`` on ``$DAGSTER_HOME/.mmfs-init.lock`` before any run (the CLI,
the demo and ``make ui`` all go through :func:`open_instance`), checks the stamps cheaply with sqlite3,
and ``mmfs home repair`` fixes a home broken before this existed (keeping its run history).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import sqlite3
import tempfile
from pathlib import Path

import dagster as dg

from mmfs_assets.pools import POOLS

LOCK_NAME = ".mmfs-init.lock"
STORAGE_DBS = ("history/runs.db", "history/runs/index.db", "schedules/schedules.db")
EPHEMERAL_ENV = "MMFS_EPHEMERAL_INSTANCE"


class InstanceError(RuntimeError):
    """The Dagster home is missing, relative or damaged; the message says what to do."""


class InstanceDamagedError(InstanceError):
    """The home's storages are damaged (a failure to repair, not a bad request)."""


def home_from_env() -> Path:
    """The absolute ``DAGSTER_HOME``, or InstanceError saying how to set it."""
    raw = os.environ.get("DAGSTER_HOME", "").strip()
    if not raw:
        raise InstanceError(
            "DAGSTER_HOME is not set. Runs are recorded there (the UI shows them) and its pools keep "
            "ingests and GPU steps from running over each other. Set it to an absolute folder, e.g. "
            "`export DAGSTER_HOME=$PWD/dagster_home` (`make` does this), or pass --ephemeral for a "
            "throwaway instance with no history and no pools."
        )
    if not os.path.isabs(raw):
        raise InstanceError(f"DAGSTER_HOME must be an absolute path, not {raw!r} (try $PWD/{raw})")
    return Path(raw)


@contextlib.contextmanager
def home_lock(home: Path):
    """An exclusive lock on the home, held while it is initialised or repaired."""
    home.mkdir(parents=True, exist_ok=True)
    with open(home / LOCK_NAME, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _stamps(db: Path) -> list[str] | None:
    """The rows of ``alembic_version`` (None: no such file or table yet)."""
    if not db.exists():
        return None
    con = sqlite3.connect(db, timeout=30)
    try:
        return [r[0] for r in con.execute("SELECT version_num FROM alembic_version")]
    except sqlite3.OperationalError:
        return None
    finally:
        con.close()


def damage(home: Path) -> dict[str, list[str]]:
    """Storage files of ``home`` whose schema stamp is not exactly one revision (empty: healthy)."""
    out = {}
    for rel in STORAGE_DBS:
        rows = _stamps(home / rel)
        if rows is not None and len(rows) != 1:
            out[rel] = rows
    return out


def _damage_message(home: Path, bad: dict[str, list[str]]) -> str:
    what = "; ".join(f"{rel} has {len(rows)} schema stamps {rows}" for rel, rows in bad.items())
    return (
        f"the Dagster home {home} is damaged ({what}), probably by several processes using it for the first "
        "time at once. Repair it with `mmfs home repair` (keeps the run history), or move it aside and "
        "start a new one."
    )


@functools.cache
def _head() -> str:
    """The schema revision this Dagster stamps a new home with: read from a throwaway home it creates (no
    private Dagster API: the revision history is Dagster's own business), once per Dagster version (cached
    in the user's cache folder: building a home costs about a second)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mmfs" / f"dagster-{dg.__version__}-head"
    try:
        return cache.read_text().strip()
    except OSError:
        pass
    head = _fresh_head()
    with contextlib.suppress(OSError):
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}")
        tmp.write_text(head)
        os.replace(tmp, cache)
    return head


def _fresh_head() -> str:
    with tempfile.TemporaryDirectory(prefix="mmfs-head-") as d:
        (Path(d) / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        with dg.DagsterInstance.from_config(d):
            pass
        stamps = _stamps(Path(d) / STORAGE_DBS[0]) or []
    if len(stamps) != 1:
        raise InstanceError(f"cannot tell Dagster's schema revision (a new home is stamped {stamps})")
    return stamps[0]


def repair_home(home: Path) -> dict[str, list[str]]:
    """Keep one schema stamp per storage file (the current head when present); returns what was fixed."""
    with home_lock(home):
        bad = damage(home)
        head = _head() if bad else ""
        for rel, rows in bad.items():
            keep = head if head in rows else rows[0]  # an older stamp is migrated when the home is next opened
            con = sqlite3.connect(home / rel, timeout=30)
            with con:
                con.execute(
                    "DELETE FROM alembic_version WHERE rowid NOT IN "
                    "(SELECT MIN(rowid) FROM alembic_version WHERE version_num = ?)",
                    (keep,),
                )
            con.close()
        return bad


DEFAULT_CONFIG = Path(__file__).with_name("dagster.yaml")  # the same file as the repo's dagster_home/dagster.yaml


def write_default_config(home: Path) -> bool:
    """Give a home without ``dagster.yaml`` MMFS's (pools of one slot, run monitoring, no telemetry): a home
    without one runs with no pool limits, so ingests would race. Returns whether it wrote one."""
    target = home / "dagster.yaml"
    if os.path.lexists(target):  # a symlink to a config not mounted yet is the user's: never replaced
        return False
    tmp = home / f".dagster.yaml.{os.getpid()}"
    tmp.write_text(DEFAULT_CONFIG.read_text())
    os.replace(tmp, target)
    return True


def init_home(home: Path) -> None:
    """Create and stamp every storage of ``home`` once, under the lock; refuse a damaged home.

    A storage stamped with an older revision (the other outcome of the first-use race: one row, not the
    head) opens, but is migrated here to the head, as ``dagster instance migrate`` would.
    """
    with home_lock(home):
        if bad := damage(home):
            raise InstanceDamagedError(_damage_message(home, bad))
        write_default_config(home)
        # building it creates history/runs.db, history/runs/index.db and schedules/schedules.db
        with dg.DagsterInstance.from_config(str(home)) as instance:
            stamps = [_stamps(home / rel) for rel in STORAGE_DBS]
            if any(s is not None and s != [_head()] for s in stamps):
                instance.upgrade()
            # the run queue skips a pool it has never seen on the pass that first meets it (two runs of a
            # new pool could start together): give MMFS's pools their configured limit now
            storage = instance.event_log_storage
            known = storage.get_concurrency_keys()
            for pool in POOLS:
                if pool not in known:
                    storage.initialize_concurrency_limit_to_default(pool)


def open_instance(ephemeral: bool = False) -> dg.DagsterInstance:
    """The instance the UI shows ($DAGSTER_HOME, initialised), or an explicit ephemeral one."""
    if ephemeral or os.environ.get(EPHEMERAL_ENV) == "1":
        return dg.DagsterInstance.ephemeral()
    home = home_from_env()
    init_home(home)
    return dg.DagsterInstance.get()
