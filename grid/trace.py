"""Call tracing: one :class:`CallTrace` record per call, handed to tracers.

Install a tracer with :meth:`grid.Manager.add_tracer`::

    def show(t: grid.CallTrace) -> None:
        print(t.side, t.handler_name, t.subroute, t.duration, t.error)

    mgr.add_tracer(show)

Both ends of a call record it: the caller when its request completes (or its
stream ends), the callee when its handler has finished (or its stream has
ended), so a grid of managers that all trace sees every call twice, once per
:attr:`CallTrace.side`.  A tracer runs on the event loop, synchronously, right
where the call ends: keep it short (append to a list, bump a counter, put the
record on a queue).  A tracer that raises is logged once and otherwise
ignored; the call it observed is not affected.

Tracing costs nothing while no tracer is installed: the request hot path is
the same code as without tracing.  While one is installed, requests for
plain (sync) handlers run through Python instead of the compiled core's
inline path so that they can be timed, and every call pays for one record.

This plays the part of the Go grid's trace publisher (``traceRoundtrip``),
which publishes one record per single request on the caller side; grid
records streams and the callee side as well.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from grid.errors import RemoteError
from grid.handlers import handler_name

__all__ = ["CallTrace", "Tracer", "TraceSide", "TraceKind"]

log = logging.getLogger("grid.trace")

#: Which end of the call recorded a :class:`CallTrace`.
TraceSide = Literal["caller", "callee"]
#: What kind of call a :class:`CallTrace` describes.
TraceKind = Literal["single", "stream"]


@dataclass(slots=True)
class CallTrace:
    """One finished call, as one side saw it.

    Treat it as read-only: every tracer receives the same object.  (It is
    not a frozen dataclass because building a frozen one costs several
    times as much, and one is built per call.)

    :ivar handler_id: the handler id (1..255; for an unknown-handler call,
        whatever id the caller sent).
    :ivar subroute: the static subroute (``"disk/1"``) or None.  On the
        callee, a request whose subroute matched no registration carries
        the hex subroute id instead of a name.
    :ivar caller: host string of the node that made the call.
    :ivar callee: host string of the node that served it.
    :ivar side: ``"caller"`` or ``"callee"``: which of the two recorded it.
    :ivar kind: ``"single"`` (a request) or ``"stream"``.
    :ivar mux_id: the caller's mux id of the call (0 if none was assigned,
        e.g. a request made while disconnected).
    :ivar start: wall-clock start time (``time.time()`` seconds): when the
        caller sent the request, or when the callee received it.
    :ivar duration: seconds from :attr:`start` to the end of the call: the
        reply (or error) received by the caller, the handler finished on
        the callee; for a stream, until the stream ended on that side.
    :ivar request_bytes: payload bytes the caller sent (the request body; for
        a stream, its initial payload plus every item sent to the handler).
    :ivar response_bytes: payload bytes the callee returned (the reply body,
        0 on error; for a stream, every item sent back to the caller).
    :ivar error: None on success, else the error text (the remote handler's
        text, ``"remote disconnected"``, a deadline, ...).
    """

    handler_id: int
    subroute: str | None
    caller: str
    callee: str
    side: TraceSide
    kind: TraceKind
    mux_id: int
    start: float
    duration: float
    request_bytes: int
    response_bytes: int
    error: str | None

    @property
    def handler_name(self) -> str:
        """The handler's name as Go prints it (``"LockLock"``, ``"HandlerID(200)"``)."""
        return handler_name(self.handler_id)

    @property
    def peer(self) -> str:
        """The other end's host string: the callee for the caller's record,
        the caller for the callee's."""
        return self.callee if self.side == "caller" else self.caller

    @property
    def local(self) -> str:
        """The host string of the node that recorded this."""
        return self.caller if self.side == "caller" else self.callee

    @property
    def ok(self) -> bool:
        """True when the call succeeded (:attr:`error` is None)."""
        return self.error is None


#: A tracer: called with every :class:`CallTrace`; its return value is ignored.
Tracer = Callable[[CallTrace], object]


class TracerSet:
    """A manager's tracers, and the one-time logging of failing ones."""

    __slots__ = ("fns", "_failed")

    def __init__(self) -> None:
        self.fns: tuple[Tracer, ...] = ()
        self._failed: set[int] = set()  # ids of tracers that raised (logged once)

    def add(self, fn: Tracer) -> bool:
        """Install ``fn``; True if it is the first tracer."""
        if not callable(fn):
            raise TypeError("a tracer must be callable")
        first = not self.fns
        self.fns = self.fns + (fn,)
        return first

    def remove(self, fn: Tracer) -> bool:
        """Remove ``fn`` (ValueError if absent); True if none is left."""
        fns = list(self.fns)
        fns.remove(fn)
        self.fns = tuple(fns)
        self._failed.discard(id(fn))
        return not fns

    def emit(self, rec: CallTrace) -> None:
        """Hand ``rec`` to every tracer; a failing tracer is logged once."""
        for fn in self.fns:
            try:
                fn(rec)
            except Exception:
                key = id(fn)
                if key in self._failed:
                    continue
                self._failed.add(key)
                log.exception("grid: tracer %r raised (further errors from it are not logged)",
                              fn)


def error_text(exc: BaseException | None) -> str | None:
    """The :attr:`CallTrace.error` text of an exception: a remote error's
    exact text, else the exception's message (or its type's name)."""
    if exc is None:
        return None
    if isinstance(exc, RemoteError):
        return exc.message
    return str(exc) or type(exc).__name__
