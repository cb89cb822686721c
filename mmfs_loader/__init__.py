"""mmfs_loader: the read side of MMFS and the table contract. It never imports Dagster.

``FeatureDataset`` (and the other training-side names) import torch, so they load on first use:
``import mmfs_loader`` stays light for the CLI and the Dagster code location.
"""

from mmfs_loader.schema import INGEST_SCHEMA, METADATA, ColumnGroup, groups_in_schema
from mmfs_loader.table import TableNotFoundError, TableRef, VersionGoneError, VersionNotFoundError, open_table

_LAZY = {
    "FeatureDataset": "mmfs_loader.dataset",
    "FeatureDataLoader": "mmfs_loader.dataloader",
    "ResumableLoader": "mmfs_loader.dataloader",
    "Guard": "mmfs_loader.options",
    "Part": "mmfs_loader.options",
    "Reading": "mmfs_loader.options",
    "Shuffle": "mmfs_loader.options",
    "ClipSpec": "mmfs_loader.clips",
    "ProvenanceError": "mmfs_loader.selection",
    "RecipeMismatchError": "mmfs_loader.recipe",
    "collate": "mmfs_loader.convert",
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
