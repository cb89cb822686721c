"""One dynamic partition per drop (a batch of videos, never one video: Dagster wants well under 100k)."""

import warnings

import dagster as dg

# Partitioned asset checks (one result per drop, shown on the partition) are "preview" in Dagster 1.13.
warnings.filterwarnings("ignore", message="Specifying a partitions_def on an AssetCheckSpec")

DROPS = "drops"  # the partitions definition's name, for the instance's dynamic-partition calls
drops_partitions = dg.DynamicPartitionsDefinition(name=DROPS)
