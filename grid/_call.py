"""The caller's side of one connection's single requests (docs/protocol.md
§7), beyond the one step in which the connection core starts the usual call
(``ConnCore.call``).

:class:`SingleCaller` makes every call the core does not start itself: while
the send queue is full or the socket paused (the call waits for room, as a
task), while tracing, or while there is no live connection (the call fails
at once).  It runs the request deadline sweep, which fails the calls whose
deadline has passed, and the tracing twin of its call, which records a
caller-side :class:`~grid.trace.CallTrace` per request.  It sees its
connection only through the connection's :class:`~grid._link.Link`; the
callee's side is grid._serve.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any

from grid._checks import check_seconds
from grid._link import Link
from grid._send import Sender
from grid.handlers import _current, check_handler_id, inherit_deadline, route_name
from grid.trace import CallTrace, error_text

__all__ = ["SingleCaller"]

_monotonic = time.monotonic  # the clock the core keeps request deadlines on


class SingleCaller:
    """Single requests of one connection that the core does not start itself.

    :param link: the connection, as its helpers see it.
    :param sender: the connection's writes (back-pressure).
    :param default_timeout: the deadline of a call given none, in seconds.
    :param queue_limit: messages the send queue holds before callers wait.
    """

    def __init__(self, link: Link, sender: Sender, default_timeout: float,
                 queue_limit: int) -> None:
        self._link = link
        self._loop = link.loop
        self._sender = sender
        self._default_timeout = default_timeout
        self._queue_limit = queue_limit
        self._sweep: asyncio.TimerHandle | None = None  # request deadline sweep
        #: When the scheduled sweep runs (``time.monotonic()``), inf for none.
        self.sweep_at = float("inf")

    def call(self, handler_id: int, payload: Any, timeout: float | None,
             sub: bytes | None) -> Awaitable[bytes | None]:
        """Start a call: no coroutine, the caller awaits the future the
        response resolves."""
        link = self._link
        core = link.core
        try:
            if core is None or not link.connected:
                raise link.down()
            if type(handler_id) is not int or not 0 < handler_id < 256:
                check_handler_id(handler_id)
            if timeout is not None and type(timeout) is not float:
                check_seconds(timeout)
            ctx = _current.get()
            if ctx is not None:  # serving a call: its deadline bounds this one
                timeout = inherit_deadline(ctx, timeout, self._loop)
            if timeout is None:
                timeout = self._default_timeout
            elif timeout < 0.001:
                raise TimeoutError("grid request deadline below 1 ms")
            if self._sender.paused or len(core.queue) >= self._queue_limit:
                # A task, so the request goes out even before it is awaited.
                return asyncio.ensure_future(
                    self._call_when_space(handler_id, payload, timeout, sub), loop=self._loop)
            fut = self._loop.create_future()
            core.request(fut, handler_id, payload, timeout, sub)
        except Exception as exc:
            return self.failed(exc)
        if self.sweep_at > _monotonic() + timeout:
            self.schedule_sweep(timeout)
        return fut

    async def _call_when_space(self, handler_id: int, payload: Any, timeout: float,
                               sub: bytes | None) -> bytes | None:
        """The slow path: wait for room in the send queue (back-pressure)."""
        await self._sender.wait_for_space()
        # The untraced call: the outer call traces.
        return await self.call(handler_id, payload, timeout, sub)

    def failed(self, exc: BaseException) -> asyncio.Future[Any]:
        """A future failed with ``exc``."""
        fut = self._loop.create_future()
        fut.set_exception(exc)
        return fut

    # -- the request deadline sweep

    def schedule_sweep(self, delay: float) -> None:
        """Run the sweep within ``delay`` seconds."""
        if self._sweep is not None:
            self._sweep.cancel()
        # At most one sweep per 10 ms: deadlines fire up to 10 ms late.
        delay = max(delay, 0.01)
        self.sweep_at = time.monotonic() + delay
        self._sweep = self._loop.call_later(delay, self._run_sweep)
        core = self._link.core
        if core is not None:
            core.sweep_at = self.sweep_at

    def _run_sweep(self) -> None:
        self._sweep = None
        self.sweep_at = float("inf")
        core = self._link.core
        if core is None:
            return
        core.sweep_at = self.sweep_at
        nxt = core.expire()
        if nxt is not None:
            self.schedule_sweep(nxt - time.monotonic())

    def reset(self) -> None:
        """The socket is gone: no sweep until the next call."""
        if self._sweep is not None:
            self._sweep.cancel()
        self._sweep = None
        self.sweep_at = float("inf")

    def disown(self) -> None:
        """In a forked child: forget the parent's sweep without touching it."""
        self._sweep = None

    # -- tracing (grid.trace)

    def call_traced(self, handler_id: int, payload: Any, timeout: float | None,
                    sub: bytes | None) -> Awaitable[bytes | None]:
        """:meth:`call`, recording a caller-side :class:`CallTrace` when it ends."""
        start = time.time()
        t0 = time.perf_counter()
        res: Any = self.call(handler_id, payload, timeout, sub)
        link = self._link
        # A task waits for room in the send queue (back-pressure): its mux id
        # is not known yet; a done future failed before it was sent.
        mux_id = 0 if isinstance(res, asyncio.Task) or res.done() else link.ids.last
        route = None if sub is None else route_name(sub)
        size = 0 if payload is None else len(payload)
        emit = link.tracers.emit

        def done(f: asyncio.Future[Any]) -> None:
            duration = time.perf_counter() - t0
            n, err = 0, None
            if f.cancelled():
                err = "cancelled"
            else:
                err = error_text(f.exception())
                if err is None:
                    r = f.result()
                    n = 0 if r is None else len(r)
            emit(CallTrace(handler_id, route, link.local, link.remote, "caller", "single",
                           mux_id, start, duration, size, n, err))

        res.add_done_callback(done)
        return res  # type: ignore[no-any-return]
