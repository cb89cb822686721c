"""Which engine runs a fill, and one entry point for both: ``MMFS_FILL_ENGINE=local|ray|auto``.

- ``local`` (the default): the step's process fills its partitions one after another, on one device with
  its decode workers (:func:`~mmfs_assets.engine.fill.fill_feature`). Ray is never imported.
- ``ray``: shards of whole fragments on Ray actors, one model replica per GPU (:mod:`.ray_fill`).
- ``auto``: ``ray`` where it pays and is predictable (a cluster address is set, or this machine has several
  GPUs and Ray is installed), else ``local``.

Either way the caller gets one :class:`~mmfs_assets.engine.ray_fill.FleetFill`: a report per partition
and, per partition, why it is incomplete (rows left for the next run) if it is.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence

from mmfs_assets.engine.fill_options import FillOptions, ModelSettings
from mmfs_assets.engine.report import FillIncomplete
from mmfs_assets.engine.shard_reports import FleetFill
from mmfs_assets.features.spec import Feature, LoadedModel
from mmfs_assets.settings import Settings
from mmfs_loader.contract.table import TableRef

ENGINES = ("local", "ray")


def choose_engine(settings: Settings) -> str:
    """``local`` or ``ray`` for ``MMFS_FILL_ENGINE`` (``auto`` resolved as the module docstring says)."""
    if settings.fill_engine != "auto":
        return settings.fill_engine
    try:
        if importlib.util.find_spec("ray") is None:
            return "local"
    except (ImportError, ValueError):  # a broken or blocked install counts as none
        return "local"
    if settings.ray_address:
        return "ray"
    from mmfs_assets.engine.ray_cluster import local_gpus

    return "ray" if local_gpus() > 1 else "local"


def fill_partitions(table: TableRef, feature: Feature, drop_ids: Sequence[str], *, engine: str,
                    models: ModelSettings, options: FillOptions, settings: Settings,
                    model: LoadedModel | None = None, log: Callable[[str], None] = print,
                    progress: Callable[[str], Callable[[int, int], None]] | None = None) -> FleetFill:
    """Fill ``feature`` for every partition in ``drop_ids`` with ``engine``.

    ``model``: the loaded model for ``local`` (loaded here when absent; ``ray`` loads one per actor).
    ``progress(drop_id)``: a ``(done, total)`` callback per partition (rows; with ``ray`` as its shards finish).
    """
    if engine == "ray":
        from mmfs_assets.engine.ray_fill import fill_on_ray

        return fill_on_ray(table, feature, drop_ids, models=models, options=options, settings=settings, log=log,
                           progress=progress)
    if engine != "local":
        raise ValueError(f"MMFS_FILL_ENGINE={engine!r}: choose one of {', '.join(ENGINES)} or auto")
    from mmfs_assets.engine.fill import fill_feature
    from mmfs_assets.features.models import load_model, model_context

    if model is None:
        ctx = model_context(feature, profile=models.profile, model_dir=models.model_dir, device=models.device,
                            env=models.feature_env)
        model = load_model(feature, ctx)
    out = FleetFill({}, producer=model.producer, device=model.device, replicas=1)
    for d in dict.fromkeys(drop_ids):
        try:
            out.reports[d] = fill_feature(
                table, d, feature, model, properties={**options.properties, "mmfs.partition": d},
                chunk_rows=options.chunk_rows, decode_workers=options.decode_workers, decoder=options.decoder,
                decode_timeout=options.decode_timeout, force=options.force, log=log,
                progress=progress(d) if progress else None,
            )
        except FillIncomplete as e:
            out.reports[d], out.problems[d] = e.report, str(e)
    return out
