"""A Dagster run in the ``gpu`` pool, for the fault tests: ``python pool_holder.py hold|quick MARKER``.

``hold`` claims the pool's slot and sleeps (to be killed); ``quick`` needs the same slot and returns at once.
The instance is $DAGSTER_HOME's. MARKER is written when the step starts, MARKER.done when the run ends.
"""

import sys
import time
from pathlib import Path

import dagster as dg

MODE, MARKER = sys.argv[1], Path(sys.argv[2])


@dg.asset(pool="gpu")
def gpu_step() -> int:
    MARKER.write_text("started")
    if MODE == "hold":
        time.sleep(600)
    return 1


if __name__ == "__main__":
    result = dg.materialize([gpu_step], instance=dg.DagsterInstance.get(), raise_on_error=False)
    MARKER.with_name(MARKER.name + ".done").write_text(str(result.success))
