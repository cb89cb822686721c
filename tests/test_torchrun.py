"""Distributed loading under a real ``torchrun`` (gloo): equal counts per rank, union = selection, resume;
and the README's training example, interrupted and resumed."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmfs_loader import FeatureDataset
from tests.loader_util import make_table

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """``torchrun`` as users start it, on 127.0.0.1 (port 0 would reach the ranks as 0 and hang them)."""
    torchrun_bin = Path(sys.executable).with_name("torchrun")
    port = str(free_port())
    cmd = [str(torchrun_bin), "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", port, *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    # Its own session, so a timeout stops torchrun *and* its ranks and their workers (by process group).
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"torchrun timed out after {timeout} s:\n{stdout[-3000:]}\n{stderr[-5000:]}")
    assert proc.returncode == 0, stdout[-3000:] + stderr[-5000:]
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


@pytest.fixture
def uri(tmp_path) -> str:
    u = str(tmp_path / "t.lance")
    t = make_table(u, 251, dim=512)  # odd: ranks pad one sample
    t.tags.create("snap-1", t.version)
    return u


def test_torchrun_ranks_get_equal_shares_whose_union_is_the_selection(uri, tmp_path):
    torchrun("tests/torchrun_child.py", uri, str(tmp_path))
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [(r["rank"], r["world"]) for r in ranks] == [(0, 2), (1, 2)]
    assert len(ranks[0]["seen"]) == len(ranks[1]["seen"]) == 126
    for r in ranks:
        assert r["seen"] == r["expected"]  # the resumed run (1 worker instead of 2) continued exactly
        assert r["state"]["position"] == 80
    selection = {s["id"] for s in FeatureDataset(uri, tag="snap-1", columns=["height"])}
    union = ranks[0]["seen"] + ranks[1]["seen"]
    assert set(union) == selection and len(union) - len(selection) == 1  # one padded sample


def test_readme_training_example_resumes_mid_epoch(uri, tmp_path):
    ckpt = tmp_path / "ckpt" / "run.pt"  # its folder is created
    out = torchrun("examples/train_clip_probe.py", uri, "snap-1", str(ckpt), "3")
    first = torch.load(ckpt)
    assert first["step"] == 3 and first["data"]["epoch"] == 0 and first["data"]["position"] == 96
    lines = out.stdout.splitlines()  # progress from rank 0 only: a line per step of these short epochs
    assert lines[0].startswith("251 rows of snap-1 (version 1) on 2 ranks: 4 steps of 32 per rank and epoch; starting")
    assert [ln.split(" loss")[0] for ln in lines[1:4]] == [f"epoch 0 step {k}/4 (global step {k})" for k in (1, 2, 3)]
    assert lines[4].startswith("epoch 0 stopped: 3 steps (96 samples per rank) in this run, mean loss ")
    assert lines[5].startswith("stopped at step 3") and len(lines) == 6
    out = torchrun("examples/train_clip_probe.py", uri, "snap-1", str(ckpt))
    last = torch.load(ckpt)
    per_rank = -(-251 // 2)
    assert last["data"] == {**last["data"], "epoch": 1, "position": per_rank}
    assert last["step"] == 2 * -(-per_rank // 32)  # 3 steps before the stop + the rest: no batch twice or lost
    lines = out.stdout.splitlines()
    assert lines[0].endswith("resuming at step 3 (epoch 0, sample 96)")
    assert sum(ln.startswith("epoch 1 step ") for ln in lines) == 4 and "epoch 0 step 4/4 (global step 4) loss" in out.stdout
    assert lines[-1] == f"done: 8 steps, checkpoint {ckpt}"
    assert not list(ckpt.parent.glob("*.tmp"))
