"""The narrow interface streams and served requests use of their connection.

A :class:`Link` belongs to one :class:`grid.Connection` and lives as long as
it.  The connection keeps it current (``core``, ``generation``, the stream
tables across reconnects); grid.stream, grid._stream_callee and
grid._serve read and send through it and never see the connection itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from grid import _payloads
from grid._consts import FLAG_SUBROUTE, Op
from grid._impl import encode_message
from grid._loglimit import LogLimit
from grid.errors import GridError

if TYPE_CHECKING:
    from grid.handlers import HandlerRegistry
    from grid.trace import TracerSet

__all__ = ["Link", "Node", "HeldBytes"]

log = logging.getLogger("grid.connection")

_MUX_CONNECT_ERROR = int(Op.MUX_CONNECT_ERROR)

#: Handler exceptions logged with their traceback per peer per log interval.
HANDLER_LOG_BURST = 5

#: ``send_large(mux_id, seq, deadline_ms, handler, op, flags, payload, subroute)``
SendLarge = Callable[[int, int, int, int, int, int, bytes, "bytes | None"], None]


class HeldBytes:
    """Payload bytes of the requests a node's async handlers run or hold
    waiting, across all its peers (``max_total_request_bytes`` caps it)."""

    __slots__ = ("held",)

    def __init__(self) -> None:
        self.held = 0


class Node(Protocol):
    """The node settings streams and served requests read (a Manager's)."""

    stream_ping_interval: float
    max_message_size: int
    max_streams: int
    max_running_handlers: int
    max_queued_requests: int
    max_request_bytes: int
    max_total_request_bytes: int
    _held_requests: HeldBytes

    @property
    def draining(self) -> bool: ...


class Link:
    """One connection, as its streams and served requests see it.

    ``core`` is the live wire's ConnCore (None while down); ``callers`` and
    ``callees`` are the stream tables (mux id -> stream) the core reads too;
    ``tasks`` holds every handler task run for the peer (what a graceful
    close waits for); ``generation`` changes whenever the wire does, so a
    reply for an older wire can tell it must not be sent.
    """

    __slots__ = ("remote", "local", "loop", "base", "node", "registry", "tracers", "ids",
                 "core", "callers", "callees", "tasks", "generation", "_send_large", "_down",
                 "_connected", "_failures")

    def __init__(self, remote: str, local: str, loop: asyncio.AbstractEventLoop, base: int,
                 node: Node, registry: HandlerRegistry, tracers: TracerSet, ids: Any,
                 send_large: SendLarge, down: Callable[[], GridError],
                 connected: Callable[[], bool]) -> None:
        #: The remote node's host string.
        self.remote = remote
        #: This node's host string.
        self.local = local
        self.loop = loop
        #: Flags every message of this connection carries (§1.6).
        self.base = base
        self.node = node
        self.registry = registry
        self.tracers = tracers
        #: Caller-side mux ids (lives across reconnects).
        self.ids = ids
        self.core: Any = None
        self.callers: dict[int, Any] = {}
        self.callees: dict[int, Any] = {}
        self.tasks: set[asyncio.Task[Any]] = set()
        self.generation = 0
        self._send_large = send_large
        self._down = down
        self._connected = connected
        # Handler exceptions: the first few per interval with their
        # traceback, the rest counted (the peer decides how often they happen).
        self._failures = LogLimit(burst=HANDLER_LOG_BURST)

    @property
    def connected(self) -> bool:
        """True while the connection is up."""
        return self._connected()

    @property
    def tracing(self) -> bool:
        """True while the node has a tracer installed."""
        return bool(self.tracers.fns)

    def down(self) -> GridError:
        """The error for a call while there is no live connection."""
        return self._down()

    def send(self, msg: bytes) -> None:
        """Queue one encoded message; everything queued in this loop
        iteration leaves together (§4).  Dropped while down."""
        core = self.core
        if core is not None:
            core.send(msg)

    def send_large(self, mux_id: int, seq: int, deadline_ms: int, handler: int, op: int,
                   flags: int, payload: bytes, subroute: bytes | None) -> None:
        """Send a message of LARGE_MESSAGE bytes or more, framed off the loop
        and kept in order with everything else."""
        self._send_large(mux_id, seq, deadline_ms, handler, op, flags, payload, subroute)

    def reply(self, m: Any, op: int, payload: bytes) -> None:
        """A reply built from the received message (§2.5): its mux id, Seq,
        DeadlineMS, Handler and flags kept, op and payload replaced, the base
        flags added and FlagSubroute cleared."""
        flags = (m.flags | self.base) & ~FLAG_SUBROUTE & 0xFF
        self.send(encode_message(m.mux_id, m.seq, m.deadline_ms, m.handler, op, flags, payload))

    def reply_mux_error(self, m: Any, text: str) -> None:
        """Answer ``m`` with a MuxConnectError carrying ``text``."""
        self.reply(m, _MUX_CONNECT_ERROR, _payloads.encode_mux_connect_error(text))

    def handler_failed(self, m: Any, exc: BaseException) -> str:
        """Log a handler's unexpected exception (rate-limited); return the
        error text sent."""
        self.log_failure("handler", m.handler, exc)
        return f"{type(exc).__name__}: {exc}"

    def log_failure(self, kind: str, handler_id: int, exc: BaseException) -> None:
        """Log that a ``kind`` handler raised ``exc`` serving the peer: with
        its traceback for the first few per interval, then counted at DEBUG."""
        self._failures.log(logging.ERROR, "grid: %s %d for %s raised %s: %s", kind, handler_id,
                           self.remote, type(exc).__name__, exc, logger=log, exc=exc)
