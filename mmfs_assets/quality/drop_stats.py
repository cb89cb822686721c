"""Per-drop statistics for the UI: summary tables and histograms of resolution, duration, fps, codecs, errors.

Read from the table's metadata and error columns (never the videos), through the ``drop_id`` index.
Plots are drawn with matplotlib (Agg) into one PNG and embedded in the materialization as a markdown
image (a data URI), which the Dagster UI shows on the asset's partition.
"""

from __future__ import annotations

import base64
import io
from collections import Counter
from dataclasses import dataclass, field

import lance
import numpy as np

from mmfs_loader.contract import schema as S
from mmfs_loader.contract.sql import equals

META_COLUMNS = ["width", "height", "duration_s", "fps", "codec", "metadata_error", S.SIZE_BYTES]


@dataclass
class DropStats:
    drop_id: str
    rows: int
    width: list[int] = field(default_factory=list)
    height: list[int] = field(default_factory=list)
    duration_s: list[float] = field(default_factory=list)
    fps: list[float] = field(default_factory=list)
    codecs: Counter = field(default_factory=Counter)
    errors: dict[str, int] = field(default_factory=dict)  # column group -> rows with an error
    rows_with_errors: int = 0  # rows with an error in at least one column group (at most ``rows``)
    error_reasons: Counter = field(default_factory=Counter)  # first words of metadata errors
    bytes_total: int = 0

    def summary(self) -> dict:
        def q(v):
            return {"min": round(float(np.min(v)), 3), "median": round(float(np.median(v)), 3),
                    "max": round(float(np.max(v)), 3)} if len(v) else None

        return {"rows": self.rows, "decoded": self.rows - self.errors.get("metadata", 0), "gb": round(self.bytes_total / 1e9, 3),
                "duration_s": q(self.duration_s), "fps": q(self.fps), "width": q(self.width), "height": q(self.height),
                "codecs": dict(self.codecs.most_common()), "errors": self.errors, "rows_with_errors": self.rows_with_errors,
                "error_reasons": dict(self.error_reasons.most_common(10))}


def _reason(err: str) -> str:
    return " ".join(err.split()[:4])[:48]


def compute(ds: lance.LanceDataset, drop_id: str) -> DropStats:
    groups = S.groups_in_schema(ds.schema)
    err_cols = [f"{g}_error" for g in sorted(groups) if f"{g}_error" in ds.schema.names]
    cols = [c for c in META_COLUMNS if c in ds.schema.names] + [c for c in err_cols if c not in META_COLUMNS]
    t = ds.to_table(columns=cols, filter=equals(S.DROP_ID, drop_id)).to_pydict()
    n = len(t[cols[0]]) if cols else 0
    st = DropStats(drop_id, n)
    st.bytes_total = int(sum(x or 0 for x in t.get(S.SIZE_BYTES, [])))
    ok = [i for i in range(n) if t.get("width", [None] * n)[i] is not None]
    st.width = [t["width"][i] for i in ok]
    st.height = [t["height"][i] for i in ok]
    st.duration_s = [t["duration_s"][i] for i in ok if t["duration_s"][i] is not None]
    st.fps = [t["fps"][i] for i in ok if t["fps"][i] is not None]
    st.codecs = Counter(t["codec"][i] or "?" for i in ok) if "codec" in t else Counter()
    for c in err_cols:
        st.errors[c.removesuffix("_error")] = sum(1 for e in t[c] if e)
    st.rows_with_errors = sum(1 for i in range(n) if any(t[c][i] for c in err_cols))
    st.error_reasons = Counter(_reason(e) for e in t.get("metadata_error", []) if e)
    return st


def plot_png(st: DropStats) -> bytes:
    """One PNG: resolution scatter, duration, fps, codecs and errors per column group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 3, figsize=(12, 6.5), dpi=72)
    bad = st.errors.get("metadata", 0)
    fig.suptitle(f"drop {st.drop_id}: {st.rows} videos, {bad} quarantined (cannot be decoded)")
    a = ax[0, 0]
    if st.width:
        res = Counter(zip(st.width, st.height))
        xs, ys, ns = zip(*[(w, h, c) for (w, h), c in res.items()])
        a.scatter(xs, ys, s=[20 + 20 * c for c in ns], alpha=0.6)
    a.set(title="resolution", xlabel="width", ylabel="height")
    for a, vals, title in ((ax[0, 1], st.duration_s, "duration (s)"), (ax[0, 2], st.fps, "fps")):
        if vals:
            a.hist(vals, bins=min(20, max(3, len(set(vals)))), color="#4c72b0")
        a.set(title=title, ylabel="videos")
    a = ax[1, 0]
    if st.codecs:
        names, counts = zip(*st.codecs.most_common(8))
        a.barh(names, counts, color="#55a868")
    a.set(title="codecs", xlabel="videos")
    a = ax[1, 1]
    if st.errors:
        names, counts = zip(*sorted(st.errors.items()))
        a.barh(names, counts, color="#c44e52")
    a.set(title="errors per column group", xlabel="rows")
    a = ax[1, 2]
    if st.error_reasons:
        names, counts = zip(*st.error_reasons.most_common(6))
        a.barh([n[:28] for n in names], counts, color="#8172b2")
    a.set(title="decode errors by reason", xlabel="videos")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def markdown_image(png: bytes, alt: str) -> str:
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


def errors_per_group(st: DropStats) -> str:
    """``metadata 9 / clip_embedding 9 / ...``: rows with an error, per column group. A row that failed to decode
    has an error in every group, so these add up to more than the drop's rows; never show their sum as one count."""
    return " / ".join(f"{g} {n}" for g, n in st.errors.items()) or "none"


def summary_markdown(st: DropStats) -> str:
    s = st.summary()
    lines = ["| stat | min | median | max |", "|---|---|---|---|"]
    for k in ("width", "height", "duration_s", "fps"):
        v = s[k]
        lines.append(f"| {k} | {v['min']} | {v['median']} | {v['max']} |" if v else f"| {k} | - | - | - |")
    lines += ["", "| codec | videos |", "|---|---|"] + [f"| {c} | {n} |" for c, n in s["codecs"].items()]
    lines += ["", "| column group | rows with errors |", "|---|---|"] + [f"| {g} | {n} |" for g, n in s["errors"].items()]
    lines += [f"| any group | {s['rows_with_errors']} of {s['rows']} rows |"]
    return "\n".join(lines)
