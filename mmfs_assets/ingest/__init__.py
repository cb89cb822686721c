"""Turning a drop folder into table rows: listing, hashing, probing."""
