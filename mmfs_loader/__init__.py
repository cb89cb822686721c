"""mmfs_loader: the read side of MMFS and the table contract. It never imports Dagster.

The package in four parts, each importing only the ones above it:

- :mod:`mmfs_loader.contract`: the table contract shared with the writers (``mmfs_assets``): column names,
  types and groups, opening a version or tag, safe SQL literals, DuckDB SQL, fill status, health,
  version leases, the stored depth format. No torch.
- :mod:`mmfs_loader.decode`: video decoding (PyAV on the CPU, NVDEC on the GPU) and training clips;
  shared with the fill engine.
- :mod:`mmfs_loader.reads`: what a dataset reads and in which order: columns, selection and provenance
  guard, epoch ordering, the node directory and cache, block reads, Arrow -> tensors.
- the training front, here: ``dataset`` (:class:`FeatureDataset`), ``dataloader``
  (:class:`FeatureDataLoader`), ``options`` (``Guard``, ``Part``, ``Reading``, ``Shuffle``), ``recipe``.

``FeatureDataset`` (and the other training-side names) import torch, so they load on first use:
``import mmfs_loader`` stays light for the CLI and the Dagster code location.
"""

from mmfs_loader.contract.schema import INGEST_SCHEMA, METADATA, ColumnGroup, groups_in_schema
from mmfs_loader.contract.table import TableNotFoundError, TableRef, VersionGoneError, VersionNotFoundError, open_table

_LAZY = {
    "FeatureDataset": "mmfs_loader.dataset",
    "FeatureDataLoader": "mmfs_loader.dataloader",
    "Guard": "mmfs_loader.options",
    "Part": "mmfs_loader.options",
    "Reading": "mmfs_loader.options",
    "Shuffle": "mmfs_loader.options",
    "ClipSpec": "mmfs_loader.decode.clips",
    "ProvenanceError": "mmfs_loader.reads.selection",
    "RecipeMismatchError": "mmfs_loader.recipe",
    "collate": "mmfs_loader.reads.convert",
}

__all__ = [
    "INGEST_SCHEMA",
    "METADATA",
    "ColumnGroup",
    "TableNotFoundError",
    "TableRef",
    "VersionGoneError",
    "VersionNotFoundError",
    "groups_in_schema",
    "open_table",
    *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mmfs_loader' has no attribute {name!r}")
