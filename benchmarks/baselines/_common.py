"""What the baselines share: the wait of a stream consumer for its next item,
and the timed echo loop of their standalone smoke tests.

Imported as ``._common`` when the baselines are a package and as ``_common``
when a baseline runs as a script (its folder is then on ``sys.path``).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any, Awaitable, Callable, Optional


class ParkingConsumer:
    """The consumer side of a one-connection stream: ``__anext__`` calls
    :meth:`_park` when no item is buffered, and the protocol's callbacks
    (an item arrived, the connection closed) resolve ``_waiter`` inline, one
    check per callback with no further call on the per-item path."""

    _loop: asyncio.AbstractEventLoop
    _waiter: Optional[asyncio.Future[None]] = None

    async def _park(self) -> None:
        """Wait until a callback resolves the waiter set here."""
        fut = self._loop.create_future()
        self._waiter = fut
        try:
            await fut
        finally:
            self._waiter = None


async def echo_smoke(label: str, request: Callable[[bytes], Awaitable[bytes]], requests: int,
                     concurrency: int, size: int) -> None:
    """``concurrency`` workers each send ``requests // concurrency`` (at least
    one) echo requests of ``size`` random bytes through ``request``, check
    every reply, and print the rate under ``label``."""
    payload = os.urandom(size)
    per_worker = max(1, requests // concurrency)

    async def worker() -> None:
        for _ in range(per_worker):
            if await request(payload) != payload:
                raise AssertionError("echo mismatch")

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    dt = time.perf_counter() - t0
    total = per_worker * concurrency
    print(f"{label} (same process): {total} requests, c={concurrency}: {total / dt:,.0f} req/s")


def echo_smoke_main(doc: Optional[str], smoke: Callable[[int, int, int], Awaitable[None]],
                    requests: int, concurrency: int, argv: Any = None) -> None:
    """The command line of an echo baseline's smoke test: ``--requests``,
    ``--concurrency`` (defaults given here) and ``--size`` (512), then
    ``smoke(requests, concurrency, size)`` on uvloop; ``doc``'s first line is
    the description."""
    import argparse

    import uvloop

    ap = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    ap.add_argument("--requests", type=int, default=requests)
    ap.add_argument("--concurrency", type=int, default=concurrency)
    ap.add_argument("--size", type=int, default=512)
    args = ap.parse_args(argv)
    uvloop.run(smoke(args.requests, args.concurrency, args.size))
