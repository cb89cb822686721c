"""One dynamic partition per drop (a batch of videos, never one video: Dagster wants well under 100k)."""

import dagster as dg

drops_partitions = dg.DynamicPartitionsDefinition(name="drops")
