"""Where steps run: ``MMFS_EXECUTOR=multiprocess`` (default), ``celery`` or ``k8s``.

- ``multiprocess``: Dagster's multiprocess executor, one process per step on the machine of the run. Steps
  fork from a forkserver that imported the code location, torch and the model libraries once
  (``MMFS_STEP_START=forkserver``, the default: a 9-video drop from ``_READY`` to every feature in 45 s
  instead of 195 s, ``bench/drop_latency.py``); ``MMFS_STEP_START=spawn`` starts a fresh interpreter per
  step, as Dagster does by default.
- ``celery``: dagster-celery; each step is a task on the broker ``MMFS_CELERY_BROKER`` (e.g.
  ``redis://host:6379/0``; results on ``MMFS_CELERY_BACKEND``, default the broker's ``rpc://``), executed by
  workers started with ``dagster-celery worker start -A dagster_celery.app -y deploy/celery_worker.yaml``.
  The broker URL is read from the environment by name (``EnvVar``): a password in it is never stored in
  run config or shown by the UI.
- ``k8s``: dagster-k8s; each step is a Kubernetes Job in ``MMFS_K8S_NAMESPACE`` (default ``dagster``) with
  the image ``MMFS_K8S_IMAGE``, the ``MMFS_*`` settings passed through, and the GPU steps (features whose
  model runs on the GPU) requesting ``nvidia.com/gpu`` on nodes labelled ``MMFS_K8S_GPU_NODE_SELECTOR``
  (``key=value``, default ``nvidia.com/gpu.present=true``).

Workers need what a run needs: the code (this package), the same ``MMFS_*`` settings and the same
``DAGSTER_HOME`` instance (Postgres when they run on other machines: ``deploy/dagster_postgres.yaml``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import dagster as dg

EXECUTORS = ("multiprocess", "celery", "k8s")
# what a forkserver imports once for every step it forks (MMFS_STEP_START=forkserver)
FORKSERVER_PRELOAD = ("mmfs_assets.definitions", "torch", "open_clip", "transformers")
GPU_NODE_SELECTOR = "nvidia.com/gpu.present=true"
# settings a step pod needs, passed by name (values come from the launching environment or a Secret)
PASSED_ENV = ("MMFS_TABLE_URI", "MMFS_DROP_DIR", "MMFS_VIDEO_STORAGE", "MMFS_MODEL_PROFILE", "MMFS_MODEL_DIR",
              "MMFS_DEVICE", "MMFS_DECODER", "MMFS_FILL_CHUNK_ROWS", "MMFS_FRAGMENT_ROWS", "MMFS_LOCK_DIR",
              # the fill engine: a step pod must load the definitions with the engine its run chose
              "MMFS_FILL_ENGINE", "MMFS_RAY_ADDRESS", "MMFS_RAY_REPLICAS", "MMFS_RAY_CPUS_PER_REPLICA",
              "MMFS_RAY_RUNTIME_ENV", "MMFS_FILL_FRAGMENTS_PER_SHARD", "MMFS_SHARD_RETRIES", "MMFS_BACKFILL_POLICY")


class ExecutorConfigError(ValueError):
    """The chosen executor lacks a setting; the message names it."""


def _need(name: str, why: str) -> None:
    if not os.environ.get(name):
        raise ExecutorConfigError(f"{why} needs {name}")


def gpu_step_config(node_selector: str | None = None) -> dict:
    """Pod settings of a GPU step: one ``nvidia.com/gpu`` and a node selector."""
    sel = node_selector or os.environ.get("MMFS_K8S_GPU_NODE_SELECTOR") or GPU_NODE_SELECTOR
    key, _, value = sel.partition("=")
    if not key or not value:
        raise ExecutorConfigError(f"MMFS_K8S_GPU_NODE_SELECTOR={sel!r}: use key=value")
    return {
        "container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}, "requests": {"nvidia.com/gpu": "1"}}},
        "pod_spec_config": {"node_selector": {key: value}},
    }


def k8s_config(gpu_steps: Iterable[str] = ()) -> dict:
    """The k8s_job_executor config: image and namespace from settings, ``MMFS_*`` passed through by name,
    Secrets named in ``MMFS_K8S_ENV_SECRETS`` mounted as environment, one GPU for each GPU step."""
    _need("MMFS_K8S_IMAGE", "MMFS_EXECUTOR=k8s")
    return {
        "job_image": {"env": "MMFS_K8S_IMAGE"},
        "job_namespace": os.environ.get("MMFS_K8S_NAMESPACE", "dagster"),
        "env_vars": list(PASSED_ENV),
        "env_secrets": [s for s in os.environ.get("MMFS_K8S_ENV_SECRETS", "").split(",") if s],
        "per_step_k8s_config": {step: gpu_step_config() for step in gpu_steps},
    }


def multiprocess_config(start: str) -> dict | None:
    """The multiprocess executor's config for ``MMFS_STEP_START=start`` (None: Dagster's default, spawn)."""
    if start == "spawn":
        return None
    if start == "forkserver":  # steps fork from a server that imported the code location (and torch) once
        return {"start_method": {"forkserver": {"preload_modules": list(FORKSERVER_PRELOAD)}}}
    raise ExecutorConfigError(f"MMFS_STEP_START={start!r}: choose forkserver or spawn")


def build_executor(choice: str, gpu_steps: Iterable[str] = ()) -> dg.ExecutorDefinition:
    """The executor for ``MMFS_EXECUTOR=choice``; ``gpu_steps`` are the step keys that need a GPU."""
    if choice == "multiprocess":
        config = multiprocess_config(os.environ.get("MMFS_STEP_START", "forkserver"))
        return dg.multiprocess_executor if config is None else dg.multiprocess_executor.configured(config, name="multiprocess")
    if choice == "celery":
        from dagster_celery import celery_executor

        _need("MMFS_CELERY_BROKER", "MMFS_EXECUTOR=celery")
        backend = {"env": "MMFS_CELERY_BACKEND"} if os.environ.get("MMFS_CELERY_BACKEND") else "rpc://"
        return celery_executor.configured(
            {"broker": {"env": "MMFS_CELERY_BROKER"}, "backend": backend}, name="celery")
    if choice == "k8s":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor.configured(k8s_config(gpu_steps), name="k8s")
    raise ExecutorConfigError(f"MMFS_EXECUTOR={choice!r}: choose one of {', '.join(EXECUTORS)}")
