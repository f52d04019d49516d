"""iwl domain."""

import dagster as dg

defs = dg.Definitions()
