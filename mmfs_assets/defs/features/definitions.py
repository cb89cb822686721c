"""The features domain's definitions, for a feature list (the catalog's, or a custom location file's)."""

import dagster as dg

from mmfs_assets.defs.features.automation import features_automation
from mmfs_assets.defs.features.current_checks import current_checks, staleness_sensor
from mmfs_assets.defs.features.feature_assets import feature_assets
from mmfs_assets.features.spec import Feature
from mmfs_assets.settings import Settings


def build_features_defs(features: list[Feature], settings: Settings) -> dg.Definitions:
    """One fill asset per feature (engine, backfill policy and automation from ``settings``), the
    ``<asset>_current`` checks of ``video_metadata`` and the features, and the sensors that evaluate and automate them."""
    return dg.Definitions(
        assets=feature_assets(features, settings),
        asset_checks=current_checks(features),
        sensors=[features_automation, staleness_sensor(features)],
    )
