"""The partitioned assets of the code location."""

from mmfs_assets.assets.video_metadata import video_metadata
from mmfs_assets.assets.videos import videos

ALL_ASSETS = [videos, video_metadata]

__all__ = ["ALL_ASSETS", "video_metadata", "videos"]
