"""The Dagster code location: `dagster dev -w workspace.yaml` loads `defs` from here.

The definitions live by domain in :mod:`mmfs_assets.defs` (ingest, features, operations); this module merges
them and adds the resources and the executor. ``mmfs materialize`` and ``mmfs demo`` run the same Definitions
(:func:`build_definitions` for their settings), as a run of its asset job.
"""

from __future__ import annotations

import dagster as dg

from mmfs_assets.defs.features.definitions import build_features_defs
from mmfs_assets.defs.ingest.definitions import build_ingest_defs
from mmfs_assets.defs.operations.definitions import build_operations_defs
from mmfs_assets.engine.engines import choose_engine
from mmfs_assets.executors import build_executor
from mmfs_assets.features import discover
from mmfs_assets.features.spec import Feature
from mmfs_assets.resources import build_resources
from mmfs_assets.settings import Settings


def build_definitions(features: list[Feature] | None = None, settings: Settings | None = None) -> dg.Definitions:
    """The code location for ``settings`` (default: the environment); ``features`` replaces the catalog's
    features (e.g. in a custom location file)."""
    features = discover() if features is None else features
    settings = settings or Settings.from_env()
    return dg.Definitions.merge(
        build_ingest_defs(settings),
        build_features_defs(features, settings),
        build_operations_defs(features, settings),
        dg.Definitions(
            resources=build_resources(settings),
            # with the ray engine a fill step only drives Ray (which places the GPUs): its pod asks for none
            executor=build_executor(settings.executor, [f.name for f in features if f.uses_gpu]
                                    if choose_engine(settings) == "local" else []),
        ),
    )


defs = build_definitions()
