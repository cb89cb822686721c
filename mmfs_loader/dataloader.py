"""A DataLoader over a FeatureDataset that starts workers with ``spawn`` and counts for resume.

Forked workers crash or hang once the parent has used Lance, so workers are always spawned. The
loader tells the dataset its batch size (the block each worker reads), so the batches come out in the
rank's order whatever the number of workers, and it counts the samples it hands out: that count is the
dataset's resume position.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader

from mmfs_loader.convert import collate
from mmfs_loader.dataset import FeatureDataset


def _size(batch: Any) -> int:
    if isinstance(batch, dict):
        v = batch.get("id")
        if v is not None:
            return len(v)
    if isinstance(batch, (list, tuple)):
        return len(batch)
    raise TypeError("cannot count the samples of a batch without 'id' (keep 'id' in transformed batches)")


class ResumableLoader:
    """Iterate it like a DataLoader; ``state_dict``/``load_state_dict`` resume mid-epoch.

    With ``dataset.batch_size`` set, the dataset collates and this loader passes batches through;
    otherwise it batches ``batch_size`` samples (default 1) with :func:`mmfs_loader.convert.collate`.
    Other keyword arguments go to ``torch.utils.data.DataLoader`` (``pin_memory``, ``prefetch_factor``,
    ``persistent_workers``...).
    """

    def __init__(self, dataset: FeatureDataset, batch_size: int | None = None, num_workers: int = 0, **kwargs: Any):
        if dataset.batch_size and batch_size and batch_size != dataset.batch_size:
            raise ValueError(f"the dataset already yields batches of {dataset.batch_size}; leave batch_size out")
        self.dataset = dataset
        self.batch_size = dataset.batch_size or batch_size or 1
        dataset._set_block(self.batch_size)
        opts: dict[str, Any] = dict(num_workers=num_workers, **kwargs)
        if num_workers > 0:
            opts.setdefault("multiprocessing_context", torch.multiprocessing.get_context("spawn"))
        else:
            opts.pop("persistent_workers", None)
            opts.pop("prefetch_factor", None)
        if dataset.batch_size:
            self.loader = DataLoader(dataset, batch_size=None, **opts)
        else:
            opts.setdefault("collate_fn", collate)
            self.loader = DataLoader(dataset, batch_size=self.batch_size, **opts)

    def __len__(self) -> int:
        return -(-(self.dataset.samples_per_rank - self.dataset._position) // self.batch_size)

    def __iter__(self) -> Iterator[Any]:
        ds = self.dataset
        ds._counted_outside = True
        ds._position = int(ds._shared[1])
        try:
            for batch in self.loader:
                ds._position += _size(batch)
                yield batch
            ds._shared[1] = 0  # the epoch is complete: a new pass starts it again
        finally:
            ds._counted_outside = False

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def state_dict(self) -> dict[str, Any]:
        return self.dataset.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.dataset.load_state_dict(state)
