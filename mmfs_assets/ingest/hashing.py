"""Content ids: SHA-256 computed streaming, never holding a whole file in memory."""

from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK = 8 << 20


def sha256_file(path: Path, on_bytes=None) -> str:
    """Hex SHA-256 of a file, read in 8 MiB chunks; ``on_bytes(n)`` is called after each chunk."""
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        while n := f.readinto(buf):
            h.update(view[:n])
            if on_bytes is not None:
                on_bytes(n)
    return h.hexdigest()
