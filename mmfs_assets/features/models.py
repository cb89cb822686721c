"""Choosing and loading a feature's model: profile (pretrained or tiny), device, clear errors.

A feature's model comes from ``<SETTING>_MODEL`` (a hub id / model name, or a local directory), else the
feature's default. Hub ids are resolved from the local Hugging Face cache only (``HF_HUB_OFFLINE=1`` is
the default of this package; set ``MMFS_MODEL_DOWNLOAD=1`` to let a run download), so a model that is not
there fails at once with :class:`ModelUnavailableError` naming the setting to change, instead of
retrying the network for a minute.

``MMFS_MODEL_PROFILE=tiny`` swaps every model for a tiny random-init one of the same family, written
once under ``<MMFS_MODEL_DIR>/tiny/<feature>`` in the same format as real weights and loaded through
the same code.

:func:`load_model` is where the engine turns a feature's declaration (:class:`~.spec.Model`) into the
:class:`~.spec.LoadedModel` a fill runs: the frame-count and batch-size overrides, the network's
placement (device, eval mode, fp16 on CUDA / fp32 elsewhere) and dtype, ``torch.inference_mode()``
around ``compute`` and ``encode_text``, the ``<name>_timestamps`` column, and the producer string. A
feature module says none of this, so every feature gets it the same way.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import time
import uuid
from collections.abc import Mapping
from functools import partial
from pathlib import Path

from mmfs_assets.engine import batches
from mmfs_assets.engine.sampling import SAMPLING_SETTINGS
from mmfs_assets.features.spec import (
    Feature,
    FrameRequest,
    LoadedModel,
    Model,
    ModelContext,
    ModelUnavailableError,
    producer_string,
)

PROFILES = ("pretrained", "tiny")
_fingerprints: dict[tuple[str, int, int], str] = {}


def resolve_device(pref: str = "auto") -> str:
    import torch

    if pref == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if pref.startswith("cuda") and not torch.cuda.is_available():
        raise ModelUnavailableError(f"MMFS_DEVICE={pref} but CUDA is not available; use auto or cpu")
    return pref


def place(net, device: str):
    """The network in eval mode on ``device``: fp16 on CUDA, fp32 elsewhere. Returns (network, dtype name)."""
    half = device.startswith("cuda")
    return (net.half() if half else net.float()).to(device).eval(), ("fp16" if half else "fp32")


def weights_fingerprint(path: Path) -> str:
    """sha256 (first 12 hex) of the weight files of a local model directory or file, cached per file state."""
    files = sorted(
        p for p in ([path] if path.is_file() else path.rglob("*"))
        if p.is_file() and p.suffix in {".safetensors", ".bin", ".pt", ".pth"}
    )
    h = hashlib.sha256()
    for p in files:
        st = p.stat()
        key = (str(p), st.st_size, st.st_mtime_ns)
        if key not in _fingerprints:
            fh = hashlib.sha256()
            with open(p, "rb") as f:
                for block in iter(lambda: f.read(1 << 22), b""):
                    fh.update(block)
            _fingerprints[key] = fh.hexdigest()
        h.update(p.name.encode() + _fingerprints[key].encode())
    return h.hexdigest()[:12] if files else "none"


def hf_identity(spec: str, config) -> tuple[str, str]:
    """(model id, weights id) of a transformers model: a local dir's name and weights hash, or the hub
    id and the commit its files came from."""
    local = Path(spec).expanduser()
    if local.is_dir():
        return f"local:{local.name}/{config.model_type}", f"sha256:{weights_fingerprint(local)}"
    return spec, getattr(config, "_commit_hash", None) or "hub"


def ensure_tiny(feature: Feature, model_dir: str | Path) -> Path:
    """The feature's tiny model directory, built once (atomically, so parallel runs agree)."""
    if feature.build_tiny is None:
        raise ModelUnavailableError(f"feature {feature.name!r} has no tiny profile")
    final = Path(model_dir) / "tiny" / feature.name / feature.code_version
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".build-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        feature.build_tiny(tmp)
        try:
            tmp.rename(final)
        except OSError:
            if not final.is_dir():  # somebody else's rename won: use theirs
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def model_context(
    feature: Feature,
    *,
    profile: str,
    model_dir: str,
    device: str,
    env: Mapping[str, str],
) -> ModelContext:
    """The spec, device and overrides a feature's ``load`` gets, from the profile and the env settings."""
    if profile not in PROFILES:
        raise ModelUnavailableError(f"MMFS_MODEL_PROFILE={profile!r}: choose one of {PROFILES}")
    if profile == "tiny" and feature.build_tiny is not None:
        spec = str(ensure_tiny(feature, model_dir))
    else:
        spec = env.get(feature.model_env) or feature.default_model

    def _int(name: str) -> int | None:
        raw = env.get(name)
        if not raw:
            return None
        try:
            v = int(raw)
        except ValueError:
            raise ModelUnavailableError(f"{name}={raw!r} is not an integer") from None
        if v < 1:
            raise ModelUnavailableError(f"{name}={raw!r} must be at least 1")
        return v

    sampling = env.get(feature.sampling_env) or feature.default_sampling
    if sampling not in SAMPLING_SETTINGS:
        raise ModelUnavailableError(f"{feature.sampling_env}={sampling!r}: choose one of {', '.join(SAMPLING_SETTINGS)}")
    return ModelContext(
        spec=spec,
        sampling=sampling,
        profile=profile if feature.build_tiny is not None else "pretrained",
        setting=feature.model_env,
        device=resolve_device(device) if feature.uses_gpu else "cpu",
        frames=_int(feature.frames_env),
        batch_size=_int(feature.batch_env),
    )


def load_model(feature: Feature, ctx: ModelContext) -> LoadedModel:
    """``feature.load(ctx)``, with every loading failure turned into one :class:`ModelUnavailableError`."""
    t0 = time.perf_counter()
    if ctx.spec.startswith(("/", "./", "../", "~")) and not Path(ctx.spec).expanduser().exists():
        raise ModelUnavailableError(
            f"{feature.name}: model directory {ctx.spec!r} does not exist. Set {ctx.setting} to a local model "
            f"directory or a hub id, or MMFS_MODEL_PROFILE=tiny for a random-init test model."
        )
    try:
        with _quiet_root_log():
            declared = feature.load(ctx)
        if isinstance(declared, LoadedModel) and declared.producer:  # ready-made (the metadata probe)
            return declared
        loaded = declared if isinstance(declared, LoadedModel) else assemble(feature, ctx, declared)
        loaded.sampling = ctx.sampling
        if ctx.profile == "tiny":  # values from random-init models must never pass for real ones
            loaded.details["profile"] = "tiny"
        loaded.producer = producer_string(feature, loaded)
        return loaded
    except ModelUnavailableError:
        raise
    except Exception as e:  # noqa: BLE001 - any loader failure is reported the same, with its cause
        if _not_downloaded(e):
            raise ModelUnavailableError(
                f"{feature.name}: model {ctx.spec!r} is not on this machine (not in the Hugging Face cache, and "
                f"downloads are off). Set MMFS_MODEL_PROFILE=tiny for the random-init test models, {ctx.setting} "
                f"to a local model directory, or MMFS_MODEL_DOWNLOAD=1 to download it."
            ) from e
        raise ModelUnavailableError(
            f"{feature.name}: cannot load model {ctx.spec!r} ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}). "
            f"Set {ctx.setting} to a hub id or a local model directory, or MMFS_MODEL_PROFILE=tiny for the "
            f"random-init test models. (failed after {time.perf_counter() - t0:.2f} s)"
        ) from e


def assemble(feature: Feature, ctx: ModelContext, m: Model) -> LoadedModel:
    """The engine's part of loading: overrides, placement, dtype, inference mode, timestamps (no producer yet)."""
    count = ctx.frames or feature.frames or m.max_frames
    if not count:
        raise ValueError(f"feature {feature.name!r} declares no frame count (Feature.frames or Model.max_frames)")
    if m.max_frames and count > m.max_frames:
        raise ModelUnavailableError(f"{ctx.spec!r} takes at most {m.max_frames} frames per video, {count} asked for")
    details, net, dtype = dict(m.details), m.net, None
    if net is not None:
        net, details["dtype"] = place(net, ctx.device)
        dtype = next((p.dtype for p in net.parameters()), None)  # the pixels' dtype (None: float32)
    stamps = f"{feature.name}_timestamps"
    stamps_column = stamps if stamps in feature.group.value_columns else None
    postprocess = m.postprocess
    if postprocess is not None and stamps_column:  # the stored values are made in the workers: pass the stamps on
        postprocess = partial(batches.keep_columns, postprocess, (stamps_column,))
    return LoadedModel(
        model=m.model,
        weights=m.weights,
        frames=FrameRequest(count, m.preprocess.decode_short_side() if m.preprocess else m.short_side),
        batch_size=ctx.batch_size or feature.batch_size,
        compute=partial(batches.run_compute, m.compute, net, stamps_column, net is not None or m.preprocess is not None),
        device=ctx.device,
        details=details,
        preprocess=m.preprocess,
        postprocess=postprocess,
        dtype=dtype,
        encode_text=None if m.encode_text is None else partial(batches.run_encode_text, m.encode_text, net),
    )


@contextlib.contextmanager
def _quiet_root_log():
    """Drop records logged on the root logger while a model loads: open_clip logs a failed weights download
    with ``logging.error`` before it raises, which would print the cause twice (the raised error says it)."""
    root = logging.getLogger()
    drop = logging.Filter("\x00none")  # a name no record has: every root record is filtered out
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


def _not_downloaded(e: BaseException) -> bool:
    """Whether ``e`` (or an error it came from) says the weights are not cached and may not be downloaded."""
    seen = 0
    cur: BaseException | None = e
    while cur is not None and seen < 10:
        name, text = type(cur).__name__, str(cur).lower()
        if name in ("LocalEntryNotFoundError", "OfflineModeIsEnabled") or "offline mode" in text or (
            os.environ.get("HF_HUB_OFFLINE") == "1" and isinstance(cur, OSError) and "download" in text
        ):
            return True
        cur, seen = cur.__cause__ or cur.__context__, seen + 1
    return False
