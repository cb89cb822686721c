"""Safe SQL literals and identifiers for Lance filters (DataFusion dialect, as Lance parses them).

Nothing user-supplied (drop names, file names, ids) is ever pasted into a filter string as is:
every value goes through :func:`literal`, which quotes strings by doubling single quotes and refuses
characters that no filter dialect handles consistently (NUL).
"""

from __future__ import annotations

import math
from collections.abc import Iterable


def literal(value: object) -> str:
    """Render ``value`` as a SQL literal that is safe to embed in a filter."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"cannot embed non-finite float {value!r} in a SQL filter")
        return repr(float(value))
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("cannot embed a string containing NUL in a SQL filter")
        return "'" + value.replace("'", "''") + "'"
    raise TypeError(f"cannot embed a {type(value).__name__} in a SQL filter")


def identifier(name: str) -> str:
    """Quote a column name the way Lance filters expect: backticks (double quotes would be a string)."""
    if not name or "\x00" in name or "`" in name:
        raise ValueError(f"invalid column name for a Lance filter: {name!r}")
    return f"`{name}`"


def equals(column: str, value: object) -> str:
    """``column = <literal>`` with the column quoted and the value escaped."""
    return f"{identifier(column)} = {literal(value)}"


def is_in(column: str, values: Iterable[object]) -> str:
    """``column IN (...)`` with every value escaped; an empty set gives a filter matching nothing."""
    vals = [literal(v) for v in values]
    if not vals:
        return "FALSE"
    return f"{identifier(column)} IN ({', '.join(vals)})"
