"""Starting the real `dagster dev` (through the project's launcher) for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
BACKFILL_LAUNCH = """mutation($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
  __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } ... on InvalidSubsetError { message } } }"""
BACKFILL_STATUS = "query($id: String!) { partitionBackfillOrError(backfillId: $id) { ... on PartitionBackfill { status } } }"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DagsterDev:
    """`python -m mmfs_assets.launch_ui` (or ``command`` + ``-h 127.0.0.1 -p PORT``, e.g. a team's own
    `dagster dev -w their-workspace.yaml`) in its own process group, stopped by its process id."""

    def __init__(self, env: dict[str, str], log_path: Path, command: list[str] | None = None, cwd: Path = ROOT):
        self.command, self.cwd = command, cwd
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **env, "MMFS_UI_PORT": str(self.port), "MMFS_UI_HOST": "127.0.0.1"}
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> DagsterDev:
        self.log = open(self.log_path, "wb")
        cmd = ([*self.command, "-h", "127.0.0.1", "-p", str(self.port)] if self.command
               else [sys.executable, "-m", "mmfs_assets.launch_ui"])
        self.proc = subprocess.Popen(
            cmd, cwd=self.cwd, env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.wait_loaded()
        return self

    def gql(self, query: str, variables: dict | None = None) -> dict:
        r = requests.post(f"{self.url}/graphql", json={"query": query, "variables": variables or {}}, timeout=30)
        r.raise_for_status()
        body = r.json()
        assert "errors" not in body, body["errors"]
        return body["data"]

    def backfill(self, assets: list[str], partitions: list[str], timeout: float) -> str:
        """Launch a partition backfill as the UI does (``launchPartitionBackfill``), wait for the daemon to
        finish it, and return its final status."""
        params = {"assetSelection": [{"path": [a]} for a in assets], "partitionNames": partitions, "fromFailure": False}
        launched = self.gql(BACKFILL_LAUNCH, {"params": params})["launchPartitionBackfill"]
        assert launched["__typename"] == "LaunchBackfillSuccess", launched
        deadline = time.time() + timeout
        while True:
            status = self.gql(BACKFILL_STATUS, {"id": launched["backfillId"]})["partitionBackfillOrError"]["status"]
            if status.startswith("COMPLETED") or status in ("FAILED", "CANCELED"):
                return status
            assert time.time() < deadline, f"backfill still {status}:\n{self.log_path.read_text()[-4000:]}"
            time.sleep(2)

    def wait_loaded(self, timeout: float = 180) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dagster dev exited with {self.proc.returncode}: {self.log_path.read_text()[-3000:]}")
            try:
                data = self.gql("{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
                                "locationOrLoadError { __typename ... on PythonError { message } } } } } }")
                entries = data["workspaceOrError"]["locationEntries"]
                if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                    for e in entries:
                        err = e["locationOrLoadError"]
                        assert err["__typename"] == "RepositoryLocation", (e["name"], err)
                    return
            except (requests.ConnectionError, requests.ReadTimeout):
                pass
            time.sleep(1)
        raise TimeoutError(f"dagster dev not ready after {timeout}s: {self.log_path.read_text()[-3000:]}")

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        # children (webserver, daemon, code server) share the process group: make sure none is left
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.log.close()
