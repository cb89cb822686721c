"""The ingest domain's definitions: a new drop becomes a partition, its videos rows, their metadata filled."""

import dagster as dg

from mmfs_assets.defs.ingest.drop_sensor import drop_sensor
from mmfs_assets.defs.ingest.video_metadata import video_metadata_asset
from mmfs_assets.defs.ingest.videos import videos
from mmfs_assets.settings import Settings


def build_ingest_defs(settings: Settings) -> dg.Definitions:
    return dg.Definitions(assets=[videos, video_metadata_asset(settings)], sensors=[drop_sensor])
