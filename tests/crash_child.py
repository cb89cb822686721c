"""A feature fill that is slow on purpose and logs every computed row; the crash test SIGKILLs it.

Usage: python -m tests.crash_child URI DROP MODEL_DIR LOG CHUNK_ROWS
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from mmfs_assets.features import discover
from tests.features_util import fill, tiny


def main() -> None:
    uri, key, model_dir, log, chunk_rows = sys.argv[1:6]
    feature = {f.name: f for f in discover()}["quality"]
    model = tiny(feature, Path(model_dir))
    inner = model.compute
    model.batch_size = 1

    def slow(clips):
        out = inner(clips)
        time.sleep(0.4)
        with open(log, "a") as fh:  # this row's value exists now, in memory only
            fh.write("".join(f"{c.rowid}\n" for c in clips))
            fh.flush()
            os.fsync(fh.fileno())
        return out

    model.compute = slow
    fill(uri, key, feature, model, chunk_rows=int(chunk_rows))


if __name__ == "__main__":
    main()
