"""The text tower of the model that made a column's stored vectors, loaded from the fills' own settings."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mmfs_assets.settings import Settings
from mmfs_assets.store.search import SearchError

IDENTITY_KEYS = ("model", "weights", "profile")


def model_identity(producer: str) -> tuple[str, ...]:
    """What names the model in a producer string: feature and code version, model, weights, profile.
    Frame sampling and dtype change how videos were embedded, not the space a text query lives in."""
    head, *parts = producer.split("|")
    kv = dict(p.split("=", 1) for p in parts if "=" in p)
    return (head, *(f"{k}={kv.get(k, '')}" for k in IDENTITY_KEYS))


def settings_encoder(settings: Settings, features=None) -> Callable[[str, str], Callable[[list[str]], np.ndarray]]:
    """``encoder(column, stored producer)`` for :func:`mmfs_assets.store.search.by_text`."""

    def encoder(column: str, stored: str) -> Callable[[list[str]], np.ndarray]:
        from mmfs_assets.features import discover
        from mmfs_assets.features.models import load_model, model_context

        feature = next((f for f in (features or discover()) if column in f.group.value_columns), None)
        if feature is None:
            raise SearchError(f"no declared feature makes column {column!r}: cannot embed text for it")
        ctx = model_context(feature, profile=settings.model_profile, model_dir=settings.model_dir,
                            device=settings.device, env=settings.feature_env)
        loaded = load_model(feature, ctx)
        if model_identity(loaded.producer) != model_identity(stored):
            raise SearchError(
                f"the {column} vectors were made by {stored!r}, but this machine loads {loaded.producer!r}: set "
                f"{feature.model_env} (and MMFS_MODEL_PROFILE) to the model that made them, or search --like an id")
        if loaded.encode_text is None:
            raise SearchError(f"{feature.name}'s model has no text tower: search --like an id instead")
        return loaded.encode_text

    return encoder
