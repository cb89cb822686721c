"""The Dagster pools MMFS's assets use (limits in ``dagster.yaml``, enforced per run by the run queue).

``lance_ingest``: ingests and table maintenance, one at a time. ``gpu``: runs with feature models, one at a
time per instance (the fill engine's device lock keeps one model per device on a node, whatever the pools).
"""

INGEST_POOL = "lance_ingest"
GPU_POOL = "gpu"
POOLS = (INGEST_POOL, GPU_POOL)
