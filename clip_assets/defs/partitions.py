"""Partitioning shared by the per-drop assets."""

import dagster as dg

# One partition per complete drop folder in <home>/landing/, added by the landing sensor.
drops_partitions = dg.DynamicPartitionsDefinition(name="drops")

# Per-drop assets carry this tag; the process_drop job selects them by it.
DROP_GRAIN = {"grain": "drop"}
GLOBAL_GRAIN = {"grain": "global"}
