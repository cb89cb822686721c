"""Model placement (device, dtype), processor sizes, and quieting the model libraries.

Preprocessing itself is data run by the engine on the device: :mod:`mmfs_assets.engine.preprocess`."""

from __future__ import annotations


def place(model, device: str):
    """The model in eval mode on ``device``: fp16 on CUDA, fp32 elsewhere. Returns (model, dtype name)."""
    half = device.startswith("cuda")
    return (model.half() if half else model.float()).to(device).eval(), ("fp16" if half else "fp32")


def processor_size(size, default: int) -> int:
    """The height (or shortest edge) of a transformers processor size (a dict or a ``SizeDict``)."""
    for key in ("height", "shortest_edge"):
        v = size.get(key) if isinstance(size, dict) else getattr(size, key, None)
        if v:
            return int(v)
    return int(size) if isinstance(size, int) else default


def quiet_transformers() -> None:
    """No download/loading progress bars or info logs from transformers inside asset runs."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
