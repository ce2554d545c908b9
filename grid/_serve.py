"""The callee side of single requests (docs/protocol.md §7).

Requests for *sync* handlers run inline in the compiled core; what reaches
:class:`SingleServer` is a request for an ``async`` handler, for no handler
at all, or any request while tracing.  Async handlers run as tasks, at most
``max_running_handlers`` at once per peer; past that, requests wait in a
bounded FIFO (``max_queued_requests``), and past that they are answered
with :data:`~grid.errors.BUSY_TEXT`.  The payloads of the requests running
and waiting are bounded in bytes too, per peer (``max_request_bytes``) and
for the node (``max_total_request_bytes``); a request past either is
answered with :data:`~grid.errors.BUSY_BYTES_TEXT`.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from grid._link import Link
from grid.errors import (
    BUSY_BYTES_TEXT,
    BUSY_TEXT,
    CANCELED_TEXT,
    SHUTTING_DOWN_TEXT,
    RemoteError,
    bad_reply_text,
)
from grid.handlers import CallContext, _current, unknown_handler_text
from grid.trace import CallTrace

__all__ = ["SingleServer", "reply_outcome"]



def reply_outcome(result: Any, err: str | None) -> tuple[int, str | None]:
    """The size of a handler's reply and its error text: a reply must be
    bytes-like or None (the compiled core applies the same rule)."""
    if err is not None or result is None:
        return 0, err
    if isinstance(result, (bytes, bytearray, memoryview)):
        return len(result), None
    return 0, bad_reply_text(result)


class _Traced:
    """A registered ``async`` single handler, wrapped for one traced request:
    what :meth:`SingleServer._start` runs instead of the entry."""

    __slots__ = ("server", "m", "entry", "start", "t0", "route", "is_async", "done")

    def __init__(self, server: SingleServer, m: Any, entry: Any, start: float,
                 t0: float) -> None:
        self.server = server
        self.m = m
        self.entry = entry
        self.start = start
        self.t0 = t0
        self.route = entry.route
        self.is_async = True
        self.done = False

    def record(self, n: int, err: str | None) -> None:
        if not self.done:
            self.done = True
            self.server.trace(self.m, self.route, self.start, self.t0, n, err)

    async def fn(self, payload: bytes | None) -> Any:
        n, err = 0, None
        try:
            result = await self.entry.fn(payload)
        except RemoteError as exc:
            err = exc.message
            raise
        except asyncio.CancelledError:
            err = CANCELED_TEXT  # deadline passed or connection dropped
            raise
        except Exception as exc:
            err = f"{type(exc).__name__}: {exc}"
            raise
        else:
            n, err = reply_outcome(result, None)
            return result
        finally:
            self.record(n, err)


class SingleServer:
    """Serves the single requests of one connection's peer."""

    __slots__ = ("link", "running", "backlog", "tracing", "held")

    def __init__(self, link: Link) -> None:
        self.link = link
        #: Tasks of the async handlers running now, each with its request's
        #: payload bytes (their number is what max_running_handlers caps).
        self.running: dict[asyncio.Task[Any], int] = {}
        #: Requests waiting for a handler slot: (message, entry, received, bytes).
        self.backlog: deque[tuple[Any, Any, float, int]] = deque()
        #: Payload bytes of the requests running and waiting (max_request_bytes).
        self.held = 0
        #: Record a CallTrace per request (grid.trace).
        self.tracing = False

    def on_request(self, m: Any) -> None:
        """A request the core did not run inline."""
        if self.tracing:
            self._on_request_traced(m)
            return
        link = self.link
        entry = link.registry.single(m.handler, m.subroute)
        if entry is None:
            link.reply_mux_error(m, unknown_handler_text(m.handler, m.subroute))
            return
        if link.node.draining:
            link.core.respond(m.mux_id, m.seq, None, SHUTTING_DOWN_TEXT)
            return
        if not entry.is_async:  # replayed before attach: run it as the core does
            link.core.dispatch(m)
            return
        self._admit(m, entry)

    def reset(self, reason: str) -> None:
        """The connection dropped: nobody awaits the replies any more."""
        if self.backlog:
            for _m, entry, _t, size in self.backlog:
                self._release(size)
                if type(entry) is _Traced:
                    entry.record(0, reason)
            self.backlog.clear()
        # Handlers still running for the old connection cannot reply:
        # cancel them, freeing the work and their slots at once.
        for task in list(self.running):
            task.cancel()

    # -- admission

    def _admit(self, m: Any, entry: Any) -> str | None:
        """Start an async handler, queue it while max_running_handlers run, or
        answer BUSY_TEXT when the queue is full too, BUSY_BYTES_TEXT when its
        payload would take the bytes held past a cap (then return that text).
        A request is never refused for its bytes while nothing is held: a
        payload larger than a cap still runs, alone."""
        node = self.link.node
        size = 0 if m.payload is None else len(m.payload)
        total = node._held_requests
        if ((self.held and self.held + size > node.max_request_bytes)
                or (total.held and total.held + size > node.max_total_request_bytes)):
            self.link.core.respond(m.mux_id, m.seq, None, BUSY_BYTES_TEXT)
            return BUSY_BYTES_TEXT
        if len(self.running) < node.max_running_handlers:
            self._start(m, entry, time.monotonic(), size)
        elif len(self.backlog) < node.max_queued_requests:
            # Over the cap: wait in a bounded FIFO for a running handler to end.
            self.backlog.append((m, entry, time.monotonic(), size))
        else:
            self.link.core.respond(m.mux_id, m.seq, None, BUSY_TEXT)
            return BUSY_TEXT
        self.held += size
        total.held += size
        return None

    def _release(self, size: int) -> None:
        self.held -= size
        self.link.node._held_requests.held -= size

    def _start(self, m: Any, entry: Any, received: float, size: int) -> None:
        link = self.link
        loop = link.loop
        deadline = None
        if m.deadline_ms:
            deadline = loop.time() + m.deadline_ms / 1000 - (time.monotonic() - received)
        token = _current.set(CallContext(link.remote, m.handler, entry.route, m.mux_id, deadline))
        try:
            task = loop.create_task(self._run(entry.fn, m, received, link.generation))
        finally:
            _current.reset(token)
        link.tasks.add(task)
        self.running[task] = size
        task.add_done_callback(self._done)
        if deadline is not None:
            # Past its deadline the caller has given up: free the work (Go
            # lets it run and drops the reply; the wire looks the same).
            timer = loop.call_at(deadline, task.cancel)
            task.add_done_callback(lambda _t: timer.cancel())

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.link.tasks.discard(task)
        self._release(self.running.pop(task, 0))
        backlog = self.backlog
        cap = self.link.node.max_running_handlers
        while backlog and len(self.running) < cap:
            m, entry, received, size = backlog.popleft()
            if m.deadline_ms and (time.monotonic() - received) * 1000 >= m.deadline_ms:
                self._release(size)
                if type(entry) is _Traced:
                    entry.record(0, "deadline exceeded while queued")
                continue  # the caller has given up while it waited
            self._start(m, entry, received, size)

    async def _run(self, fn: Callable[..., Any], m: Any, started: float, gen: int) -> None:
        link = self.link
        err: str | None
        try:
            result = await fn(m.payload)
        except RemoteError as exc:
            result, err = None, exc.message
        except Exception as exc:
            result, err = None, link.handler_failed(m, exc)
        else:
            err = None
        if gen != link.generation or link.core is None:
            return  # the connection has dropped since
        if m.deadline_ms and (time.monotonic() - started) * 1000 > m.deadline_ms:
            return  # the caller has given up (§7 step 3)
        link.core.respond(m.mux_id, m.seq, result, err)

    # -- tracing (grid.trace)

    def trace(self, m: Any, route: str | None, start: float, t0: float, n: int,
              err: str | None) -> None:
        """Record the callee side of one request."""
        link = self.link
        payload = m.payload
        link.tracers.emit(CallTrace(
            m.handler, route, link.remote, link.local, "callee", "single", m.mux_id, start,
            time.perf_counter() - t0, 0 if payload is None else len(payload), n, err))

    def _on_request_traced(self, m: Any) -> None:
        """:meth:`on_request` for every request (sync handlers included)
        while tracing: records a callee-side CallTrace per request."""
        start = time.time()
        t0 = time.perf_counter()
        link = self.link
        entry = link.registry.single(m.handler, m.subroute)
        if entry is None:
            text = unknown_handler_text(m.handler, m.subroute)
            link.reply_mux_error(m, text)
            self.trace(m, None if m.subroute is None else bytes(m.subroute).hex(),
                       start, t0, 0, text)
            return
        if link.node.draining:
            link.core.respond(m.mux_id, m.seq, None, SHUTTING_DOWN_TEXT)
            self.trace(m, entry.route, start, t0, 0, SHUTTING_DOWN_TEXT)
            return
        if not entry.is_async:
            self._run_sync_traced(m, entry, start, t0)
            return
        traced = _Traced(self, m, entry, start, t0)
        refused = self._admit(m, traced)
        if refused is not None:
            traced.record(0, refused)

    def _run_sync_traced(self, m: Any, entry: Any, start: float, t0: float) -> None:
        """What the core's inline path does for a sync handler, timed."""
        link = self.link
        dl = m.deadline_ms
        deadline = link.loop.time() + dl / 1000 if dl else None
        token = _current.set((link.remote, m.handler, entry.route, m.mux_id, deadline))
        err: str | None
        try:
            result = entry.fn(m.payload)
        except RemoteError as exc:
            result, err = None, exc.message
        except Exception as exc:
            result, err = None, link.handler_failed(m, exc)
        else:
            err = None
        finally:
            _current.reset(token)
        n, err = reply_outcome(result, err)
        self.trace(m, entry.route, start, t0, n, err)
        if dl and (time.perf_counter() - t0) * 1000 > dl:
            return  # the caller has given up (§7 step 3)
        link.core.respond(m.mux_id, m.seq, result, err)
