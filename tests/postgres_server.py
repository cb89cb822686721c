"""A real PostgreSQL server for tests: Debian's binaries, a fresh cluster in a temp dir, 127.0.0.1 only.

Started with ``postgres`` directly (no system service), as the ``postgres`` user when the tests run as root
(PostgreSQL refuses to run as root), and stopped by its own process id.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def find_bin() -> Path | None:
    """The folder holding initdb and postgres (Debian keeps them under /usr/lib/postgresql/<v>/bin)."""
    for cand in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.access(os.path.join(cand, "initdb"), os.X_OK):
            return Path(cand)
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Postgres:
    def __init__(self) -> None:
        self.bin = find_bin()
        if self.bin is None:
            raise FileNotFoundError("PostgreSQL is not installed (apt-get install postgresql)")
        # its own folder under /tmp: pytest's temp folders are private to root, which postgres is not
        self.root = Path(tempfile.mkdtemp(prefix="mmfs-pg-"))
        self.data = self.root / "pgdata"
        self.sock = self.root / "pgsock"
        self.port = _free_port()
        self.proc: subprocess.Popen | None = None
        self.log = self.root / "postgres.log"

    def _as_postgres(self) -> list[str]:
        return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def __enter__(self) -> Postgres:
        for d in (self.data, self.sock):
            d.mkdir(parents=True)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
            for d in (self.data, self.sock):
                shutil.chown(d, "postgres")
            os.chmod(self.root, 0o755)
        subprocess.run([*self._as_postgres(), str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                        "--auth=trust", "-E", "UTF8", "--no-sync"], check=True, capture_output=True, timeout=120)
        logf = open(self.log, "ab")  # noqa: SIM115 - closed with the server
        self.proc = subprocess.Popen(
            [*self._as_postgres(), str(self.bin / "postgres"), "-D", str(self.data), "-h", "127.0.0.1",
             "-p", str(self.port), "-k", str(self.sock), "-c", "fsync=off"],
            stdout=logf, stderr=logf, start_new_session=True)
        deadline = time.time() + 60
        while time.time() < deadline:
            r = subprocess.run([str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                               capture_output=True)
            if r.returncode == 0:
                break
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited: {self.log.read_text()[-2000:]}")
            time.sleep(0.3)
        else:
            raise TimeoutError(f"postgres did not start: {self.log.read_text()[-2000:]}")
        self.sql("CREATE DATABASE dagster")
        return self

    def sql(self, query: str, db: str = "postgres") -> str:
        r = subprocess.run([str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                            "-d", db, "-tAc", query], capture_output=True, text=True, timeout=60, check=True)
        return r.stdout.strip()

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)  # "fast" shutdown, by the process group we started
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)
