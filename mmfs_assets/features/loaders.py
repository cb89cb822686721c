"""Loading the catalog's model libraries (open_clip, transformers) from a spec, with the identity the producer records.

A spec is what ``<SETTING>_MODEL`` holds: a hub id / model name, or a local directory. These helpers
return the network as the library made it (on the CPU, in its own dtype): the engine places it
(:func:`mmfs_assets.features.models.load_model`). A local directory is named by its directory name, its
architecture and the sha256 of its weight files; a hub model by its id and the revision its files came
from, so a changed model makes another producer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mmfs_assets.engine.preprocess import Preprocess
from mmfs_assets.features.models import ModelUnavailableError, hf_identity, weights_fingerprint

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)  # open_clip's default normalisation (OpenAI CLIP's)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def quiet_transformers() -> None:
    """No download/loading progress bars or info logs from transformers inside asset runs."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def transformers_model(auto_class: str, spec: str) -> tuple[Any, str, str]:
    """(network, model id, weights id) of ``transformers.<auto_class>.from_pretrained(spec)``."""
    import transformers

    quiet_transformers()
    net = getattr(transformers, auto_class).from_pretrained(spec)
    return (net, *hf_identity(spec, net.config))


def processor_size(size, default: int) -> int:
    """The height (or shortest edge) of a transformers processor size (a dict or a ``SizeDict``)."""
    for key in ("height", "shortest_edge"):
        v = size.get(key) if isinstance(size, dict) else getattr(size, key, None)
        if v:
            return int(v)
    return int(size) if isinstance(size, int) else default


def open_clip_model(spec: str) -> tuple[Any, str, str]:
    """(network, model id, weights id) of an open_clip model: a local directory (``open_clip_config.json`` and
    ``open_clip_model.safetensors``), an ``hf-hub:ORG/REPO`` id or ``NAME:TAG`` (model and pretrained tag)."""
    import open_clip

    p = Path(spec).expanduser()
    if p.is_dir():
        model = open_clip.create_model(f"local-dir:{p}")
        cfg = json.loads((p / "open_clip_config.json").read_text())["model_cfg"]
        arch = f"clip-d{cfg.get('embed_dim')}-vit{cfg['vision_cfg'].get('layers')}x{cfg['vision_cfg'].get('width')}"
        return model, f"local:{p.name}/{arch}", f"sha256:{weights_fingerprint(p)}"
    if spec.startswith("hf-hub:"):
        return open_clip.create_model(spec), spec, spec
    name, _, tag = spec.partition(":")
    if not tag:
        raise ModelUnavailableError(f"{spec!r} names no pretrained weights: use NAME:TAG, e.g. ViT-B-32:laion2b_s34b_b79k")
    return open_clip.create_model(name, pretrained=tag), name, tag


def open_clip_preprocess(net) -> Preprocess:
    """An open_clip model's image transform as data: resize the short side, centre crop, normalise."""
    pp = getattr(net.visual, "preprocess_cfg", {}) or {}
    size = net.visual.image_size
    size = int(size[0] if isinstance(size, (tuple, list)) else size)
    return Preprocess(size, tuple(pp.get("mean", OPENAI_MEAN)), tuple(pp.get("std", OPENAI_STD)))


def open_clip_tokens(spec: str, texts: list[str]):
    """``texts`` tokenized for the open_clip model of ``spec`` (its tokenizer is looked up when text is encoded,
    not when the model loads: a fill never needs it)."""
    import open_clip

    p = Path(spec).expanduser()
    name = f"local-dir:{p}" if p.is_dir() else spec if spec.startswith("hf-hub:") else spec.partition(":")[0]
    return open_clip.get_tokenizer(name)(texts)
