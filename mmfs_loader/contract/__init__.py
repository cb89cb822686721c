"""The table contract: what the writers (``mmfs_assets``) and the readers agree on, and table-level reads.

``schema`` (columns, Arrow types, column groups), ``table`` (``TableRef``, opening a version or tag, tag
names), ``sql`` (safe literals for Lance filters), ``query`` (DuckDB SQL over a pinned version),
``status`` (per-drop fill status), ``health`` (readable versions, orphan files), ``leases`` (versions
kept from maintenance), ``depth`` (how depth maps are stored). Nothing here imports torch.
"""
