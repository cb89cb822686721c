"""mmfs_assets: the Dagster code location (write side) of MMFS."""

import os

# Lance logs a WARN line on every DataReplacement commit ("not stable yet"); our write path validates
# those commits itself, so keep Lance's own log at errors unless the user asks for more.
os.environ.setdefault("LANCE_LOG", "error")
