"""mmfs_assets: the Dagster code location (write side) of MMFS."""

import os

# Lance logs a WARN line on every DataReplacement commit ("not stable yet"); our write path validates
# those commits itself, so keep Lance's own log at errors unless the user asks for more.
os.environ.setdefault("LANCE_LOG", "error")
# Models load from a local directory or the local Hugging Face cache only, so a missing model fails at
# once with a clear error instead of retrying the network for a minute. MMFS_MODEL_DOWNLOAD=1 allows
# downloads (this must be decided before huggingface_hub is imported, hence here).
if os.environ.get("MMFS_MODEL_DOWNLOAD", "").lower() not in {"1", "true", "yes"}:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
