"""A model replica of the ``ray`` engine: one Ray actor that loads the feature's model once and runs shards.

The actor gets the feature declaration (a picklable :class:`~mmfs_assets.features.spec.Feature`), the
model settings and the fill options, never a loaded model or a closure of the step's process. It opens
the table itself and fills each shard with :func:`~mmfs_assets.engine.fill.fill_feature` (``fragments=``):
its decode workers run beside it, its commits go straight to the table, and only the shard's report
travels back to the driver.

Secrets never go through Ray. The table URI and the public storage options are arguments; the secret
ones are read by the actor from its own ``MMFS_STORAGE_OPTIONS`` (a local Ray inherits the step's
environment; on Kubernetes the worker pods get a Secret), checked against a digest the driver sends.
This module does not import Ray: the driver (:mod:`.ray_fill`) wraps :class:`ShardReplica` in
``ray.remote``.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from mmfs_assets.engine.decoders import default_workers
from mmfs_assets.engine.fill import decode_pool, fill_feature
from mmfs_assets.engine.fill_options import FillOptions, ModelSettings
from mmfs_assets.engine.pool import WorkerPool
from mmfs_assets.engine.report import FillIncomplete, FillReport
from mmfs_assets.engine.shards import Shard
from mmfs_assets.features.models import load_model, model_context
from mmfs_assets.features.spec import Feature
from mmfs_assets.settings import STORAGE_OPTIONS_ENV, Settings, split_storage_options
from mmfs_loader.contract.table import TableRef


def secret_digest(options: Mapping[str, str] | None) -> str:
    """sha256 of the secret storage options (what the driver sends instead of them): "" when there are none."""
    _, secret = split_storage_options(dict(options or {}))
    return hashlib.sha256(json.dumps(secret, sort_keys=True).encode()).hexdigest() if secret else ""


@dataclass(frozen=True)
class ReplicaSpec:
    feature: Feature
    version: int  # the table version the driver leased for the whole fill: every shard's rows are in it
    table_uri: str
    public_options: dict[str, str]
    secret_digest: str
    models: ModelSettings
    options: FillOptions


@dataclass
class ShardOutcome:
    shard: Shard
    report: FillReport
    incomplete: str | None = None  # FillIncomplete's message: rows left for a later run
    host: str = ""


def table_from_env(uri: str, public: Mapping[str, str], digest: str) -> TableRef:
    """The table with the public options given and the secret ones from this process's environment."""
    _, secret = split_storage_options(Settings.from_env().storage_options)
    opts = {**public, **secret}
    if secret_digest(opts) != digest:
        have = "none" if not secret else ", ".join(sorted(secret))
        raise PermissionError(
            f"this Ray worker's secret storage options ({have}, from {STORAGE_OPTIONS_ENV}) differ from the ones "
            f"the fill's step uses: give the cluster's worker pods the same {STORAGE_OPTIONS_ENV} (a Kubernetes "
            "Secret; docs/ray.md). Secrets never travel through Ray."
        )
    return TableRef(uri, opts or None)


class ShardReplica:
    """The actor's body: ``__init__`` loads the model (once) and starts its decode workers, which serve every
    shard (reading the version the driver leased): a shard costs no process start. ``run`` fills one shard."""

    def __init__(self, spec: ReplicaSpec, device: str) -> None:
        self.spec = spec
        self.table = table_from_env(spec.table_uri, spec.public_options, spec.secret_digest)
        m, o = spec.models, spec.options
        ctx = model_context(spec.feature, profile=m.profile, model_dir=m.model_dir, device=device, env=m.feature_env)
        # the decode workers start (in their own processes) while the model loads; they die with this process
        # (PR_SET_PDEATHSIG) when the driver kills it
        workers = o.decode_workers or default_workers()
        batch = ctx.batch_size or spec.feature.batch_size
        self.pool: WorkerPool = decode_pool(self.table, spec.version, spec.feature, workers,
                                            max(2 * batch, 4 * workers), o.decode_timeout)
        self.model = load_model(spec.feature, ctx)
        self.host = f"{socket.gethostname()}:{os.getpid()}"

    def info(self) -> dict[str, str]:
        return {"producer": self.model.producer, "device": self.model.device, "host": self.host}

    def run(self, shard: Shard, fragments: tuple[int, ...] | None = None) -> ShardOutcome:
        """Fill ``shard`` (or only ``fragments`` of it: a retry that skips what the killed attempt committed)."""
        o = self.spec.options
        props = {**o.properties, "mmfs.partition": shard.drop_id, "mmfs.shard": shard.label()}
        try:
            rep = fill_feature(
                self.table, shard.drop_id, self.spec.feature, self.model, properties=props, chunk_rows=o.chunk_rows,
                decode_workers=o.decode_workers, decoder=o.decoder, decode_timeout=o.decode_timeout, force=o.force,
                fragments=shard.fragments if fragments is None else fragments, pool=self.pool,
            )
        except FillIncomplete as e:
            return ShardOutcome(shard, e.report, str(e), self.host)
        return ShardOutcome(shard, rep, None, self.host)
