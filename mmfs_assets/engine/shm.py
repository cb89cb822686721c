"""Frames handed from a worker process to the model's process through POSIX shared memory.

The worker writes a decoded clip into a new shared-memory block and sends only its name; the model's
process maps it, copies it once into its own (pinned, when the model runs on CUDA) buffer, and unlinks
it. This keeps torch out of the workers (a spawned worker starts in about a second instead of four)
and the pipes small. (The engine pins the batch it gathers the clips into, not each clip.) Spawned workers share their parent's ``multiprocessing`` resource tracker, so a
block whose reader dies before unlinking it is still removed when the whole process tree ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from multiprocessing import shared_memory

import numpy as np


@dataclass(frozen=True)
class SharedFrames:
    """A uint8 (or other dtype) array in a named shared-memory block, not yet taken."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    @classmethod
    def put(cls, arr: np.ndarray) -> SharedFrames:
        shm = shared_memory.SharedMemory(create=True, size=max(1, arr.nbytes))
        try:
            np.ndarray(arr.shape, arr.dtype, buffer=shm.buf)[...] = arr
            return cls(shm.name, tuple(arr.shape), arr.dtype.str)
        finally:
            shm.close()

    def take(self):
        """The array as a torch tensor in this process's memory; the block is unlinked."""
        import torch

        shm = shared_memory.SharedMemory(name=self.name)
        try:
            src = np.ndarray(self.shape, np.dtype(self.dtype), buffer=shm.buf)
            out = torch.empty(self.shape, dtype=torch.from_numpy(src[:0]).dtype)
            out.numpy()[...] = src
            del src
            return out
        finally:
            shm.close()
            shm.unlink()

    def discard(self) -> None:
        try:
            shm = shared_memory.SharedMemory(name=self.name)
        except FileNotFoundError:
            return
        shm.close()
        shm.unlink()
