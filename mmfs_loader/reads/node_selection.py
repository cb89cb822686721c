"""A dataset's selection as every reading process of a node sees it: mapped from the node directory.

The launching process computes the selection (:func:`mmfs_loader.reads.selection.select`) and writes the
row ids and their offsets into the node directory (:mod:`mmfs_loader.reads.node`); a DataLoader worker gets
this object pickled without the arrays and maps the files. Should the files be gone (removed under
it), the selection is computed again: the pinned version gives the same rows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from mmfs_loader.reads.node import NodeDir, default_root, key_of

log = logging.getLogger(__name__)


class NodeSelection:
    """Row ids (component after component, sorted within each), their offsets in the pinned version,
    and the sorted unique ids with their offsets (what the node cache holds)."""

    def __init__(self, key: dict[str, Any], row_ids: np.ndarray, offsets: np.ndarray, *, mixture: bool,
                 root: str | None, reselect: Callable[[], tuple[np.ndarray, np.ndarray]]) -> None:
        self.mixture = mixture
        self._reselect = reselect
        self.node = self._attach(root, key_of(key))
        self._row_ids: np.ndarray | None = self._store("selection.npy", row_ids)
        self._offsets: np.ndarray | None = self._store("offsets.npy", offsets)
        self._selected: tuple[np.ndarray, np.ndarray] | None = None
        if mixture:
            uniq, first = np.unique(row_ids, return_index=True)
            self._selected = (self._store("selected.npy", uniq), self._store("selected_offsets.npy", offsets[first]))

    @staticmethod
    def _attach(root: str | None, key: str) -> NodeDir | None:
        try:
            return NodeDir(root or default_root(), key).attach(owner=True)
        except OSError as e:
            log.warning("no node directory (%s): each reader keeps its own copy of the selection", e)
            return None

    def _store(self, name: str, arr: np.ndarray) -> np.ndarray:
        if self.node is None:
            return arr
        have = self.node.load_array(name)
        if have is not None and len(have) == len(arr) and (len(arr) == 0 or (have[0] == arr[0] and have[-1] == arr[-1])):
            return have
        return self.node.save_array(name, arr)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self.node is not None:  # mapped again in the worker, never pickled
            state["_row_ids"] = state["_offsets"] = state["_selected"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self.node is not None:
            try:
                self.node.attach()
            except OSError:
                pass

    def _load(self, name: str) -> np.ndarray | None:
        return self.node.load_array(name) if self.node is not None else None

    def _again(self) -> None:
        self._row_ids, self._offsets = self._reselect()

    def _mapped(self, attr: str, name: str) -> np.ndarray:
        """``self.<attr>``, mapped from the node file ``name`` on first use (selected again if it is gone)."""
        if getattr(self, attr) is None:
            setattr(self, attr, self._load(name))
            if getattr(self, attr) is None:
                self._again()
        return getattr(self, attr)

    @property
    def row_ids(self) -> np.ndarray:
        return self._mapped("_row_ids", "selection.npy")

    @property
    def offsets(self) -> np.ndarray:
        return self._mapped("_offsets", "offsets.npy")

    @property
    def selected(self) -> tuple[np.ndarray, np.ndarray]:
        if self._selected is None:
            if not self.mixture:
                self._selected = (self.row_ids, self.offsets)
            else:
                uniq, off = self._load("selected.npy"), self._load("selected_offsets.npy")
                if uniq is None or off is None:
                    uniq, first = np.unique(self.row_ids, return_index=True)
                    off = self.offsets[first]
                self._selected = (uniq, off)
        return self._selected
