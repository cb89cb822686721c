"""Features: declarations (:mod:`.spec`), model loading (:mod:`.models`, :mod:`.loaders`, :mod:`.tiny`) and the catalog
of feature modules (:mod:`.catalog`); the engine that fills them is :mod:`mmfs_assets.engine`."""

from __future__ import annotations

import importlib
import pkgutil

from mmfs_assets.features.spec import Feature


def discover() -> list[Feature]:
    """Every feature declared in :mod:`mmfs_assets.features.catalog` (``FEATURE`` or ``FEATURES``), by name."""
    from mmfs_assets.features import catalog

    found: dict[str, Feature] = {}
    for mod in pkgutil.iter_modules(catalog.__path__):
        m = importlib.import_module(f"{catalog.__name__}.{mod.name}")
        for f in [getattr(m, "FEATURE", None), *getattr(m, "FEATURES", [])]:
            if f is None:
                continue
            if f.name in found:
                raise ValueError(f"feature {f.name!r} is declared twice ({mod.name})")
            found[f.name] = f
    return [found[k] for k in sorted(found)]


__all__ = ["Feature", "discover"]
