"""The write engine of the shared Lance table: create, append, declare column groups, replace columns.

Everything that commits to the table lives here, so every commit carries transaction properties and
every conflict is retried the same way.
"""

from mmfs_assets.table.append import append_rows, open_or_create
from mmfs_assets.table.columns import ensure_group_columns
from mmfs_assets.table.replace import ReplaceReport, replace_columns

__all__ = ["ReplaceReport", "append_rows", "ensure_group_columns", "open_or_create", "replace_columns"]
