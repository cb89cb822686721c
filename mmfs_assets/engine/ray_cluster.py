"""Reaching Ray for the ``ray`` fill engine: a cluster (``MMFS_RAY_ADDRESS``) or a local instance, and how
many model replicas it holds.

Without an address the step starts a local Ray for the fill and stops it afterwards: a single-node
instance whose servers all listen on 127.0.0.1, no dashboard, usage statistics off, Ray's token
authentication (on by default for a local instance in 2.60), every CPU and GPU of this machine.

Loopback only takes Ray's own switch, ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (no multi-node cluster: node
address 127.0.0.1), read when Ray is imported: ``ray.init(_node_ip_address="127.0.0.1")`` is replaced by the
machine's address, and its gRPC servers then listen on every interface (``docs/upstream.md``). A process
that imported Ray before (with the switch unset) gets a local instance on its machine address, and a warning.

Ray is an extra (``pip install -e '.[ray]'``); nothing here is imported by the local engine.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType

from mmfs_assets.settings import Settings

NAMESPACE = "mmfs"
SINGLE_NODE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray runs single-node, on 127.0.0.1
log = logging.getLogger(__name__)


class RayUnavailableError(RuntimeError):
    """The ``ray`` engine was chosen but Ray cannot be imported or reached; the message says what to do."""


def import_ray() -> ModuleType:
    try:
        import ray
    except ImportError:
        raise RayUnavailableError(
            "MMFS_FILL_ENGINE=ray needs Ray, which is an extra: pip install -e '.[ray]' (or MMFS_FILL_ENGINE=local)"
        ) from None
    return ray


def local_gpus() -> int:
    """CUDA devices this process sees (0 without torch's CUDA)."""
    try:
        import torch

        return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - a broken driver counts as no GPU
        return 0


@contextlib.contextmanager
def ray_session(settings: Settings) -> Iterator[ModuleType]:
    """Ray, connected: to ``MMFS_RAY_ADDRESS``, to a Ray this process already joined, or to a local instance
    started here (and shut down on exit, which also ends every actor the fill left)."""
    if not settings.ray_address and "ray" not in sys.modules:
        os.environ.setdefault(SINGLE_NODE_ENV, "0")  # read once, when Ray is imported
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report leaves the machine
    common = {"namespace": NAMESPACE, "configure_logging": False, "log_to_driver": False}
    try:
        with warnings.catch_warnings():
            # Ray starts its servers with a pre-exec hook: Lance's at-fork warning fires for processes that exec at once
            warnings.filterwarnings("ignore", message="lance is not fork-safe")
            if settings.ray_address:
                ray.init(address=settings.ray_address, runtime_env=settings.ray_runtime_env or None, **common)
            else:
                ray.init(address="local", num_cpus=os.cpu_count() or 1, num_gpus=local_gpus(), include_dashboard=False,
                         runtime_env=settings.ray_runtime_env or None, **common)
                if (ip := ray.util.get_node_ip_address()) != "127.0.0.1":
                    log.warning("the local Ray listens on %s, not only 127.0.0.1 (Ray was imported before MMFS could set "
                                "%s=0); its token authentication still applies", ip, SINGLE_NODE_ENV)
    except Exception as e:  # noqa: BLE001 - one message naming the setting
        where = f"MMFS_RAY_ADDRESS={settings.ray_address}" if settings.ray_address else "a local Ray instance"
        raise RayUnavailableError(f"cannot start or reach {where}: {type(e).__name__}: {str(e)[:300]}") from e
    try:
        yield ray
    finally:
        ray.shutdown()


@dataclass(frozen=True)
class Replicas:
    """How many model replicas a fill runs and what each asks Ray for."""

    count: int
    num_gpus: int  # per replica: 1 on a GPU cluster, else 0
    num_cpus: int  # per replica
    decode_workers: int  # decode worker processes beside each replica
    device: str  # "cuda" or "cpu"

    def describe(self) -> str:
        kind = "GPU" if self.num_gpus else f"{self.num_cpus}-CPU"
        return f"{self.count} {kind} replicas, {self.decode_workers} decode workers each"


def plan_replicas(ray: ModuleType, settings: Settings, device: str = "auto") -> Replicas:
    """One replica per GPU of the cluster (``MMFS_DEVICE=cpu`` or none: ``MMFS_RAY_REPLICAS`` replicas of
    ``MMFS_RAY_CPUS_PER_REPLICA`` CPUs, by default as many as the CPUs hold)."""
    res = ray.cluster_resources()
    gpus, cpus = int(res.get("GPU", 0)), int(res.get("CPU", 0))
    per_cpu = settings.ray_cpus_per_replica
    if gpus and device != "cpu":
        count = settings.ray_replicas or gpus
        workers = settings.decode_workers or max(1, (cpus - count) // max(1, count))
        return Replicas(count, 1, 1, workers, "cuda")
    if device.startswith("cuda"):
        raise RayUnavailableError(f"MMFS_DEVICE={device} but the Ray cluster has no GPU")
    count = settings.ray_replicas or max(1, cpus // per_cpu)
    return Replicas(count, 0, per_cpu, settings.decode_workers or per_cpu, "cpu")
