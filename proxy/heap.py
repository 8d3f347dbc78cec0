"""The garbage collector of a serving process, settled once it has started.

Startup leaves about a million long-lived objects on the heap (litellm's modules and price map, pydantic models,
the config). CPython's full collection walks every tracked object, so under load each one paused the event loop
for tens of milliseconds: the p99 of synchronous calls (measured, bench/RESULTS.md). Freezing the startup heap
moves those objects out of the collector's sight; what requests allocate is still collected as before.
"""

from __future__ import annotations

import gc


def settle_after_startup() -> int:
    """Collect once, then freeze what survives (`gc.freeze`). Returns how many objects are now frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
