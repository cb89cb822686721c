"""Headless Chromium driven over the DevTools protocol: open a page, click a text, take a screenshot.

For UI states a plain ``--screenshot`` cannot reach (a dialog opened by a click). Chromium listens on
127.0.0.1 only, in its own process group, and is stopped by its process id.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import requests
from websockets.sync.client import connect

from tests.dagster_server import free_port


class Browser:
    def __init__(self, profile: Path, width: int = 1400, height: int = 1000):
        self.chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        if self.chromium is None:
            raise FileNotFoundError("chromium is not installed (apt-get install chromium)")
        self.port = free_port()
        self.profile, self.size = profile, (width, height)
        self.ids = itertools.count(1)

    def __enter__(self) -> Browser:
        self.proc = subprocess.Popen(
            [self.chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--remote-debugging-address=127.0.0.1", f"--remote-debugging-port={self.port}",
             "--remote-allow-origins=*", f"--user-data-dir={self.profile}",
             f"--window-size={self.size[0]},{self.size[1]}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + 30
        while True:
            try:
                pages = requests.get(f"http://127.0.0.1:{self.port}/json/list", timeout=2).json()
                page = next(p for p in pages if p.get("type") == "page")
                break
            except (requests.ConnectionError, StopIteration):
                if time.time() > deadline:
                    raise
                time.sleep(0.2)
        self.ws = connect(page["webSocketDebuggerUrl"], max_size=64 << 20)
        return self

    def call(self, method: str, **params) -> dict:
        mid = next(self.ids)
        self.ws.send(json.dumps({"id": mid, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=60))
            if msg.get("id") == mid:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def js(self, expr: str):
        return self.call("Runtime.evaluate", expression=expr, returnByValue=True).get("result", {}).get("value")

    def open(self, url: str, wait_for_text: str | None = None, timeout: float = 60) -> None:
        self.call("Page.navigate", url=url)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.js("document.readyState") == "complete" and (
                    wait_for_text is None or self.js(f"document.body.innerText.includes({json.dumps(wait_for_text)})")):
                return
            time.sleep(0.3)
        raise TimeoutError(f"{url}: {wait_for_text!r} did not appear")

    def click_text(self, text: str) -> None:
        """Click the last element whose own text is ``text``."""
        found = self.js(
            "(() => { const t = " + json.dumps(text) + "; const els = [...document.querySelectorAll('*')]"
            ".filter(e => e.childElementCount === 0 && e.textContent.trim() === t); if (!els.length) return false;"
            " els[els.length - 1].click(); return true; })()")
        if not found:
            raise LookupError(f"no element with text {text!r}")

    def wait_js(self, expr: str, timeout: float = 30) -> None:
        deadline = time.time() + timeout
        while not self.js(expr):
            if time.time() > deadline:
                raise TimeoutError(expr)
            time.sleep(0.3)

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def __exit__(self, *exc) -> None:
        try:
            self.ws.close()
        finally:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(30)
