"""Data quality per partition: check outcomes and near-duplicate groups."""
