"""One dynamic partition per drop (a batch of videos, never one video: Dagster wants well under 100k)."""

import dagster as dg

DROPS = "drops"  # the partitions definition's name, for the instance's dynamic-partition calls
drops_partitions = dg.DynamicPartitionsDefinition(name=DROPS)
