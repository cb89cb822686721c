"""A dataset's recipe: the JSON that rebuilds exactly the same dataset later, and its fingerprint."""

from __future__ import annotations

import hashlib
import json
from typing import Any

FORMAT = "mmfs.recipe/1"


class RecipeMismatchError(ValueError):
    """The table at the recipe's version no longer selects what the recipe recorded."""


def fingerprint(recipe: dict[str, Any]) -> str:
    """A short stable hash of what decides the samples and their order (the state dict carries it to
    refuse a foreign state). The tag is left out: it is only a name for the version."""
    blob = json.dumps({k: v for k, v in recipe.items() if k != "tag"}, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def check_format(recipe: dict[str, Any]) -> None:
    if not isinstance(recipe, dict) or recipe.get("format") != FORMAT:
        got = recipe.get("format") if isinstance(recipe, dict) else type(recipe).__name__
        raise ValueError(f"not an MMFS recipe (format {got!r}, expected {FORMAT!r})")


def compare(recorded: dict[str, Any], rebuilt: dict[str, Any]) -> None:
    """Raise if the rebuilt dataset selects other rows or producers than the recipe recorded."""
    diffs = [
        f"{k}: recipe {recorded.get(k)!r}, table now {rebuilt.get(k)!r}"
        for k in ("rows", "rows_per_epoch", "producers", "mixture")
        if recorded.get(k) != rebuilt.get(k)
    ]
    if diffs:
        raise RecipeMismatchError(
            f"the table at version {recorded.get('version')} of {recorded.get('uri')} does not rebuild this "
            "recipe:\n  - " + "\n  - ".join(diffs)
        )
