"""A real Redis (Debian's redis-server) on 127.0.0.1 for tests, with a password, stopped by its pid."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from tests.dagster_server import free_port


class Redis:
    def __init__(self, root: Path, password: str):
        self.bin = shutil.which("redis-server")
        if self.bin is None:
            raise FileNotFoundError("redis-server is not installed (apt-get install redis-server)")
        self.root, self.password, self.port = root, password, free_port()

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}"

    def __enter__(self) -> Redis:
        self.root.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [self.bin, "--bind", "127.0.0.1", "--port", str(self.port), "--requirepass", self.password,
             "--save", "", "--appendonly", "no", "--dir", str(self.root)],
            stdout=open(self.root / "redis.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True)
        cli = shutil.which("redis-cli")
        deadline = time.time() + 30
        while time.time() < deadline:
            r = subprocess.run([cli, "-h", "127.0.0.1", "-p", str(self.port), "--no-auth-warning", "-a", self.password,
                                "ping"], capture_output=True, text=True) if cli else None
            if r is not None and r.stdout.strip() == "PONG":
                return self
            time.sleep(0.2)
        raise TimeoutError(f"redis did not start: {(self.root / 'redis.log').read_text()[-2000:]}")

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
