"""FeatureDataLoader: a ``torch.utils.data.DataLoader`` over a FeatureDataset that resumes mid-epoch.

It is a real DataLoader subclass, so it goes wherever one is expected (Lightning, accelerate,
torchdata's wrappers, ``isinstance`` checks), with two additions: ``state_dict()`` and
``load_state_dict()``, and ``set_epoch()``.

- Workers are always spawned: forked workers crash or hang once the parent has used Lance.
- It sets the dataset's block size to its batch size (each worker reads whole blocks, dealt
  round-robin), so the batches come out in the rank's order whatever the number of workers, and a
  resume with another worker count continues exactly.
- It counts the samples it hands out (not what workers prefetched): that count, through the dataset's
  public :meth:`~mmfs_loader.FeatureDataset.state_at`, is the state. ``len()`` is the number of batches
  of a whole epoch on this rank.
- Before its workers start it asks the dataset to start filling the node cache (when the selection
  fits it), so the fill overlaps the workers' start-up.

A DataLoader built by hand resumes the same way: give the dataset ``batch_size`` (and the DataLoader
``batch_size=None``), count the samples the loop consumed, save ``dataset.state_at(count)``, and on
restart call ``dataset.load_state_dict(state)`` before iterating.

Imports go one way: :mod:`mmfs_loader.dataset` imports this module (for ``FeatureDataset.dataloader()``),
and this module knows the dataset only by the interface below (:class:`LoaderDataset`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from functools import partial
from typing import Any, Protocol, runtime_checkable

import torch
from torch.utils.data import DataLoader, IterableDataset

from mmfs_loader.reads.convert import collate


@runtime_checkable
class LoaderDataset(Protocol):
    """What the loader uses of its dataset (:class:`mmfs_loader.FeatureDataset` has all of it)."""

    batch_size: int | None
    list_keys: frozenset[str]

    @property
    def block_size(self) -> int: ...
    @block_size.setter
    def block_size(self, block: int) -> None: ...
    @property
    def resume_position(self) -> int: ...
    @property
    def samples_per_rank(self) -> int: ...
    @property
    def epoch(self) -> int: ...
    def prepare(self) -> None: ...
    def set_epoch(self, epoch: int) -> None: ...
    def state_at(self, position: int) -> dict[str, Any]: ...
    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


def _size(batch: Any) -> int:
    if isinstance(batch, dict):
        v = batch.get("id")
        if v is not None:
            return len(v)
    if isinstance(batch, (list, tuple)):
        return len(batch)
    raise TypeError("cannot count the samples of a batch without 'id' (keep 'id' in transformed batches)")


def _as_is(batch: Any) -> Any:
    return batch


class FeatureDataLoader(DataLoader):
    """Iterate it like any DataLoader; ``state_dict``/``load_state_dict`` resume mid-epoch.

    With ``dataset.batch_size`` set, the dataset collates and this loader passes batches through;
    otherwise it batches ``batch_size`` samples (default 1) with :func:`mmfs_loader.reads.convert.collate`.
    Other keyword arguments go to ``torch.utils.data.DataLoader`` (``pin_memory``, ``prefetch_factor``,
    ``persistent_workers``...).
    """

    def __init__(self, dataset: LoaderDataset, batch_size: int | None = None, num_workers: int = 0, **kwargs: Any):
        if not (isinstance(dataset, IterableDataset) and isinstance(dataset, LoaderDataset)):
            raise TypeError(f"FeatureDataLoader reads a FeatureDataset, not {type(dataset).__name__}")
        if dataset.batch_size and batch_size and batch_size != dataset.batch_size:
            raise ValueError(f"the dataset already yields batches of {dataset.batch_size}; leave batch_size out")
        if kwargs.get("sampler") is not None or kwargs.get("batch_sampler") is not None or kwargs.get("shuffle"):
            raise ValueError("the dataset orders and shards itself: no sampler, batch_sampler or shuffle here")
        block = dataset.batch_size or batch_size or 1
        dataset.block_size = block
        opts: dict[str, Any] = dict(num_workers=num_workers, **kwargs)
        if num_workers > 0:
            opts.setdefault("multiprocessing_context", torch.multiprocessing.get_context("spawn"))
        else:
            opts.pop("persistent_workers", None)
            opts.pop("prefetch_factor", None)
        if dataset.batch_size:
            # The dataset's batches are collated already: torch's default (``default_convert``) would walk
            # every list of strings again (300 us per batch of 256 ids here).
            opts.setdefault("collate_fn", _as_is)
            super().__init__(dataset, batch_size=None, **opts)
        else:
            opts.setdefault("collate_fn", partial(collate, list_keys=dataset.list_keys))
            super().__init__(dataset, batch_size=block, **opts)
        self.samples_per_batch = block
        self._handed_out = dataset.resume_position

    @property
    def feature_dataset(self) -> LoaderDataset:
        ds = self.dataset
        assert isinstance(ds, LoaderDataset)
        return ds

    def __len__(self) -> int:
        return -(-self.feature_dataset.samples_per_rank // self.samples_per_batch)

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        ds = self.feature_dataset
        if self.num_workers:
            ds.prepare()  # fill the node cache while the workers start (in-process reads start it themselves)
        self._handed_out = ds.resume_position
        return self._counting(super().__iter__())

    def _counting(self, batches: Iterator[Any]) -> Iterator[Any]:
        ds = self.feature_dataset
        for batch in batches:
            self._handed_out += _size(batch)
            yield batch
        ds.set_epoch(ds.epoch)  # the epoch is complete: a new pass starts it again

    @property
    def samples_handed_out(self) -> int:
        """Samples of the current epoch this loader has yielded (counting from the resume position)."""
        return self._handed_out

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` from its beginning (call once per epoch, as with DistributedSampler)."""
        self.feature_dataset.set_epoch(epoch)
        self._handed_out = 0

    def state_dict(self) -> dict[str, Any]:
        return self.feature_dataset.state_at(self._handed_out)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.feature_dataset.load_state_dict(state)
        self._handed_out = self.feature_dataset.resume_position

