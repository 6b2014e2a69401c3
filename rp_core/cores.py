"""How many CPU threads one network call may use: the cores this process may run on, shared out among the
threads that run CPU work at once.

A video run searches the next frames on one thread while it checks the current one on another; each call of a
detector that took every core would then have its threads wait for the other's (onnxruntime's threads spin
while they wait): on a 2-core machine the 720p clip took 53-61 s of CPU that way against 37-41 s with the
cores shared out, and more wall time too (benchmarks/RESULTS.md). Code that runs CPU work on several threads
says so with `sharing_cores`; components ask `RuntimeContext.call_threads()`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_SHARE = threading.local()


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the platform has one)."""
    available = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    return len(available) if available else os.cpu_count() or 1


@contextmanager
def sharing_cores(ways: int) -> Iterator[None]:
    """On this thread, while the block runs, `ways` threads run CPU work at once (this one among them)."""
    before = getattr(_SHARE, "ways", 1)
    _SHARE.ways = max(1, ways)
    try:
        yield
    finally:
        _SHARE.ways = before


def cores_each(ways: int) -> int:
    """Each one's share of the cores when `ways` threads or processes run CPU work at once (at least one)."""
    return max(1, usable_cores() // max(1, ways))


def shared_threads(configured: int | None) -> int | None:
    """Threads for one call on this thread: `configured` when set; else this thread's share of the cores while
    threads share them (`sharing_cores`); else None (the library's own default, every core)."""
    if configured:
        return configured
    ways = getattr(_SHARE, "ways", 1)
    return cores_each(ways) if ways > 1 else None
