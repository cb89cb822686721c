"""The feature catalog: every module here that defines ``FEATURE`` (or ``FEATURES``) becomes an asset.

Adding a feature is adding one module to this package; nothing else changes.
"""
