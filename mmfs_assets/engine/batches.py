"""Running a feature's model on batches of decoded clips, in the process that owns the device.

:func:`run_compute`, :func:`keep_columns` and :func:`run_encode_text` are what
:func:`mmfs_assets.features.models.load_model` binds (with :func:`functools.partial`) around a feature's
declared functions: what every feature gets the same way, so no feature module says it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from mmfs_assets.engine.preprocess import pixels
from mmfs_assets.features.spec import Clip, LoadedModel


def run_compute(compute: Callable[..., dict[str, list]], net: Any, stamps: str | None, torch_mode: bool,
                clips: Sequence[Clip], *px: Any) -> dict[str, list]:
    """``compute(net, clips[, pixels])``: under ``torch.inference_mode()`` when torch is in play (a network
    or device preprocessing; no autograd state is kept, and the values are the same), then the
    ``stamps`` column (``<name>_timestamps``), when the group has one, from the clips' frame times."""
    if torch_mode:
        import torch

        with torch.inference_mode():
            out = compute(net, clips, *px)
    else:
        out = compute(net, clips, *px)
    if stamps:
        out = {**out, stamps: [c.timestamps.tolist() for c in clips]}
    return out


def keep_columns(postprocess: Callable[[dict[str, Any]], dict[str, Any]], columns: Sequence[str],
                 values: dict[str, Any]) -> dict[str, Any]:
    """A feature's post-processing (run in the engine's workers), with ``columns`` passed through as computed."""
    return {**postprocess(values), **{c: values[c] for c in columns}}


def run_encode_text(encode_text: Callable[[Any, list[str]], np.ndarray], net: Any, texts: list[str]) -> np.ndarray:
    """``encode_text(net, texts)`` under ``torch.inference_mode()``."""
    import torch

    with torch.inference_mode():
        return encode_text(net, texts)


def _batch_buffer(parts: list, device: str):
    """Where a batch of CPU frames is gathered: pinned memory when it goes to CUDA (one copy, then an
    asynchronous transfer), else an ordinary tensor."""
    import torch

    pin = str(device).startswith("cuda") and parts[0].device.type == "cpu"
    shape = (sum(p.shape[0] for p in parts), *parts[0].shape[1:])
    return torch.empty(shape, dtype=parts[0].dtype, device=parts[0].device, pin_memory=pin)


class ModelRunner:
    """The model side: batches of clips -> per-clip values, with device preprocessing and failure isolation."""

    def __init__(self, model: LoadedModel, columns: Sequence[str]) -> None:
        self.m = model
        self.columns = list(columns) if model.postprocess is None else None  # post-processing makes the columns

    def _run(self, clips: Sequence[Clip]) -> list[dict[str, Any]]:
        m = self.m
        if m.preprocess is None:
            outs = [(list(range(len(clips))), m.compute(clips))]
        else:
            import torch

            by_shape: dict[tuple, list[int]] = defaultdict(list)
            for i, c in enumerate(clips):
                by_shape[tuple(c.frames.shape[1:])].append(i)
            outs = []
            for idx in by_shape.values():
                group = [clips[i] for i in idx]
                parts = [torch.as_tensor(c.frames) for c in group]
                frames = torch.cat(parts, out=_batch_buffer(parts, m.device))
                px = pixels(frames, m.preprocess, m.device, m.dtype or torch.float32)
                outs.append((idx, m.compute(group, px)))
        rows: list[dict[str, Any] | None] = [None] * len(clips)
        for idx, out in outs:
            columns = self.columns or list(out)
            for col in columns:
                if len(out.get(col, ())) != len(idx):
                    raise ValueError(f"compute returned {len(out.get(col, ()))} values of {col!r} for {len(idx)} clips")
            for j, i in enumerate(idx):
                rows[i] = {c: out[c][j] for c in columns}
        return rows  # type: ignore[return-value]

    def __call__(self, clips: Sequence[Clip]) -> list[dict[str, Any] | str]:
        """Per clip: its values, or an error string. A failing batch is retried clip by clip to isolate
        the clip that breaks it; if every clip fails alone too, the model itself is broken and it raises."""
        try:
            return list(self._run(clips))
        except Exception as batch_error:  # noqa: BLE001
            if len(clips) == 1:
                raise
            results: list[dict[str, Any] | str] = []
            for clip in clips:
                try:
                    results.append(self._run([clip])[0])
                except Exception as e:  # noqa: BLE001
                    results.append(f"compute failed: {type(e).__name__}: {e}")
            if all(isinstance(r, str) for r in results):
                raise batch_error
            return results
