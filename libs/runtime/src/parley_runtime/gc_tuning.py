"""The garbage collector of a serving process, set once its startup is done.

What startup built (modules, settings, clients, caches) lives as long as the process:
``gc.freeze`` keeps it out of every later collection, whose pauses would otherwise grow with
it. The young generation is then collected every 10,000 net allocations instead of 700:
under load nearly everything young is the state of requests and streams in flight,
traversed again by every collection (measured in bench/results/2026-12-04-quiet-host-tail.md
and 2026-12-04-methods-wrapped-once.md).
"""

from __future__ import annotations

import gc

GC_YOUNG_THRESHOLD = 10_000


def settle_after_startup() -> None:
    """Freeze what startup made and collect the young generation less often."""
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 10, 10)
