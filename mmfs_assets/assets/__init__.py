"""The partitioned assets of the code location: ingest, metadata, and one asset per declared feature."""

from mmfs_assets.assets.drop_stats import drop_stats_asset
from mmfs_assets.assets.dup_group import dup_group
from mmfs_assets.assets.features import feature_assets
from mmfs_assets.assets.video_metadata import video_metadata
from mmfs_assets.assets.videos import videos
from mmfs_assets.features import discover

FEATURES = discover()
ALL_ASSETS = [videos, video_metadata, *feature_assets(FEATURES), dup_group, drop_stats_asset([f.name for f in FEATURES])]

__all__ = ["ALL_ASSETS", "FEATURES", "dup_group", "video_metadata", "videos"]
