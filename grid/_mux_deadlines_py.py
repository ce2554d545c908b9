"""Request deadlines of one pure-Python ConnCore (the twin of
grid/_mux_deadlines.pxi): the pending requests' deadlines in arrival order
while they only grow, in a heap otherwise; entries of answered requests are
dropped once they outnumber the live ones.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from typing import Any

from grid.errors import REQUEST_TIMEOUT_TEXT

__all__ = ["track_deadline", "compact_deadlines", "expire_deadlines"]


def track_deadline(core: Any, at: float, mux_id: int) -> None:
    """ConnCore._track: remember request ``mux_id``'s deadline ``at``."""
    fifo = core._fifo
    if not fifo or at >= fifo[-1][0]:
        fifo.append((at, mux_id))
    else:
        heapq.heappush(core._deadlines, (at, mux_id))
    if len(fifo) + len(core._deadlines) > 2 * len(core.pending) + 1024:
        compact_deadlines(core)


def compact_deadlines(core: Any) -> None:
    """ConnCore._compact: forget the deadlines of answered requests."""
    # Entries of answered requests stay until they expire; drop them
    # when they outnumber the live ones, so that the bookkeeping stays
    # within a small multiple of the requests in flight.
    pending = core.pending
    core._fifo = deque(e for e in core._fifo if e[1] in pending)
    dl = [e for e in core._deadlines if e[1] in pending]
    heapq.heapify(dl)
    core._deadlines = dl


def expire_deadlines(core: Any) -> float | None:
    """ConnCore.expire: fail the requests past their deadline; the next
    deadline (monotonic) or None."""
    now = time.monotonic()
    fifo, dl = core._fifo, core._deadlines
    pending = core.pending
    while True:  # the two sources merged, earliest deadline first
        if fifo and fifo[0][0] <= now and not (dl and dl[0] < fifo[0]):
            _, mux_id = fifo.popleft()
        elif dl and dl[0][0] <= now:
            _, mux_id = heapq.heappop(dl)
        else:
            break
        fut = pending.pop(mux_id, None)
        if fut is not None and not fut.done():
            fut.set_exception(TimeoutError(REQUEST_TIMEOUT_TEXT))
    if len(fifo) + len(dl) > 2 * len(pending) + 1024:
        compact_deadlines(core)
        fifo, dl = core._fifo, core._deadlines
    if fifo and dl:
        return min(fifo[0][0], dl[0][0])  # type: ignore[no-any-return]
    return fifo[0][0] if fifo else (dl[0][0] if dl else None)
