"""Operating the store: snapshots with manifests, rollback, lineage, maintenance and search."""
