"""One grid connection per remote node, and the socket protocol under it.

:class:`Connection` is the long-lived object for one peer (created by the
Manager from its host list, never replaced).  :class:`_Wire` is one TCP/TLS
socket: the HTTP upgrade, then WebSocket frames.  A Connection owns at most
one live _Wire at a time; the dialing side makes new ones as it reconnects.

Hot path, top to bottom: ``_Wire.buffer_updated`` -> ``FrameParser`` ->
``decode_messages`` -> ``Connection._dispatch`` -> handler or caller future.
No task or queue sits in between; sync handlers run inline.  Writes go to one
bounded per-connection list flushed once per loop iteration, as one frame or
one OpMerged container (GRID-PROTOCOL.md §4).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import random
import socket
import time
import traceback
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

from grid import _payloads
from grid._consts import (
    FLAG_CRC,
    FLAG_SUBROUTE,
    LARGE_MESSAGE,
    Op,
    WS_BINARY,
    WS_CLOSE,
    WS_PING,
    WS_PONG,
    WS_TEXT,
)
from grid._impl import (
    ACCELERATED,
    MuxCore,
    MuxIdAllocator,
    decode_message,
    encode_frame,
    encode_frames,
    encode_message,
    encode_message_frame,
    subroute_id,
)
from grid import _http
from grid.errors import (
    BUSY_TEXT,
    SHUTTING_DOWN_TEXT,
    Disconnected,
    GridError,
    ProtocolError,
    Rejected,
    RemoteError,
    RemoteUnknownHandler,
)
from grid import stream as _stream
from grid.handlers import CallContext, _current, check_handler_id, join_route, unknown_handler_text
from grid.trace import CallTrace, error_text

if TYPE_CHECKING:
    from grid.manager import Manager

__all__ = ["State", "Connection", "ConnectionStats", "Subroute"]

log = logging.getLogger("grid.connection")
_monotonic = time.monotonic  # the clock MuxCore keeps request deadlines on

Payload = Union[bytes, bytearray, memoryview, None]

_REQUEST = int(Op.REQUEST)
_RESPONSE = int(Op.RESPONSE)
_PING = int(Op.PING)
_PONG = int(Op.PONG)
_MUX_CONNECT_ERROR = int(Op.MUX_CONNECT_ERROR)
_CONNECT_MUX = int(Op.CONNECT_MUX)
# Which table an op consults (§3.4).
_CALLEE_OPS = frozenset((int(Op.MUX_CLIENT_MSG), int(Op.UNBLOCK_SRV_MUX),
                         int(Op.DISCONNECT_SERVER_MUX), _PING))
_CALLER_OPS = frozenset((_MUX_CONNECT_ERROR, int(Op.ACK_MUX), int(Op.MUX_SERVER_MSG),
                         int(Op.UNBLOCK_CL_MUX), int(Op.DISCONNECT_CLIENT_MUX), _PONG))

#: Seconds between two log records of the same kind about one peer: past the
#: first, repeats go to DEBUG and are counted until the interval has passed.
LOG_INTERVAL = 30.0
_NO_PONG = "no pong for"  # how a keepalive drop's reason starts

# Subroute names by the 31 route bytes of their subroute id, for traces
# (filled by Subroute; bounded, since routes are static in practice).
_ROUTE_NAMES: dict[bytes, str] = {}
_ROUTE_NAMES_MAX = 4096


class _LogLimit:
    """Lets one log record through per :data:`LOG_INTERVAL` at its level;
    the others in between go to DEBUG, and how many there were is added to
    the next record let through, so a dead or misconfigured peer costs a
    line per interval, not one per attempt."""

    __slots__ = ("_last", "_suppressed")

    def __init__(self) -> None:
        self._last = -LOG_INTERVAL
        self._suppressed = 0

    def log(self, level: int, msg: str, *args: object, force: bool = False,
            logger: logging.Logger = log) -> None:
        now = time.monotonic()
        if force or now - self._last >= LOG_INTERVAL:
            self._last = now
            if self._suppressed:
                msg += " (%d similar messages in the last %g s logged at DEBUG)"
                args += (self._suppressed, LOG_INTERVAL)
                self._suppressed = 0
            logger.log(level, msg, *args)
        else:
            self._suppressed += 1
            logger.debug(msg, *args)


class _PeerLogLimits:
    """One :class:`_LogLimit` per key (a peer address and what happened),
    for events about sockets not yet tied to a connection; bounded."""

    __slots__ = ("_limits",)

    def __init__(self) -> None:
        self._limits: dict[object, _LogLimit] = {}

    def log(self, logger: logging.Logger, key: object, level: int, msg: str,
            *args: object) -> None:
        lim = self._limits.get(key)
        if lim is None:
            if len(self._limits) >= 1024:
                self._limits.clear()
            lim = self._limits[key] = _LogLimit()
        lim.log(level, msg, *args, logger=logger)


class State(enum.IntEnum):
    """Connection states (GRID-PROTOCOL.md §10.1); values match Go's."""

    UNCONNECTED = 0
    CONNECTING = 1
    CONNECTED = 2
    CONNECTION_ERROR = 3
    SHUTDOWN = 4


@dataclass
class ConnectionStats:
    """A snapshot of one connection's counters."""

    remote: str
    state: State
    dials: bool
    bytes_in: int
    bytes_out: int
    messages_in: int
    messages_out: int
    reconnects: int
    last_ping_rtt: float | None
    last_connect_time: float | None
    last_error: str | None
    outstanding_requests: int
    outstanding_streams: int
    send_queue_depth: int
    #: ``async`` single-request handlers this node is running for the peer.
    running_handlers: int = 0
    #: Requests from the peer waiting for a handler slot (``max_running_handlers``).
    queued_requests: int = 0


class _MaskKeys:
    """Client mask keys (RFC 6455 §5.3) cut from a pool of OS randomness:
    one urandom call per thousand frames instead of one per frame."""

    __slots__ = ("pool", "pos")

    def __init__(self) -> None:
        self.pool = b""
        self.pos = 0

    def __call__(self) -> bytes:
        pos = self.pos
        if pos + 4 > len(self.pool):
            self.pool = os.urandom(4096)
            pos = 0
        self.pos = pos + 4
        return self.pool[pos:pos + 4]


_mask_key = _MaskKeys()


def _base_flags(local: str, remote: str) -> int:
    # CRC unless both ends are TLS (§1.6).
    tls = ("https://", "wss://")
    return 0 if local.startswith(tls) and remote.startswith(tls) else FLAG_CRC


class _CoreOwner:
    """MuxCore callbacks every kind of wire hands on to its connection once
    the handshake has named the peer (``self.conn``)."""

    conn: Connection | None

    def _schedule_flush(self) -> None:
        if self.conn is not None:
            self.conn._schedule_flush()

    def _handler_failed(self, m: Any, exc: BaseException) -> str:
        if self.conn is not None:
            return self.conn._handler_failed(m, exc)
        return f"{type(exc).__name__}: {exc}"

    def _flush_early(self) -> None:
        if self.conn is not None:
            self.conn._flush_early()

    def _send_large(self, mux_id: int, seq: int, deadline_ms: int, handler: int, op: int,
                    flags: int, payload: bytes, subroute: bytes | None) -> None:
        if self.conn is not None:
            self.conn._send_large(mux_id, seq, deadline_ms, handler, op, flags, payload, subroute)


class _Wire(_CoreOwner, asyncio.BufferedProtocol):
    """One socket: HTTP upgrade, then WebSocket frames carrying grid messages."""

    #: False for a wire whose WebSocket framing another server does
    #: (grid.integrations): Connection._flush hands it whole messages.
    framed = True

    def __init__(self, manager: Manager, acceptor: bool) -> None:
        self.manager = manager
        self.acceptor = acceptor
        self.conn: Connection | None = None  # set once the handshake names the peer
        self.transport: asyncio.Transport | None = None
        self.core: Any = None  # the MuxCore once upgraded
        self._head = bytearray()
        self._head_chunk = bytearray(4096)
        self._mask = not acceptor  # the dialer is the WebSocket client
        self.closed = asyncio.get_running_loop().create_future()
        self.head_future: asyncio.Future[_http.HttpHead] | None = None
        self.first_message: asyncio.Future[Any] = self.closed.get_loop().create_future()
        self._handshake_timer: asyncio.TimerHandle | None = None
        self._ws_key = ""
        self._body_wanted = -1  # dialer: bytes of an error body still to read
        self._error_head: _http.HttpHead | None = None
        self.bytes_in = 0
        # Dialer: messages that arrive after the ConnectResponse but before the
        # connection is attached (replayed by Connection._attach).
        self._early: list[Any] = []

    # -- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        if self.acceptor:
            self._handshake_timer = asyncio.get_running_loop().call_later(
                self.manager.handshake_timeout, self._handshake_expired
            )
            self.manager._accepted.add(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        if self.core is not None:
            return self.core.get_buffer(sizehint)  # type: ignore[no-any-return]
        return memoryview(self._head_chunk)

    def buffer_updated(self, nbytes: int) -> None:
        self.bytes_in += nbytes
        try:
            if self.core is not None:
                self.core.buffer_updated(nbytes)
            else:
                self._on_http(self._head_chunk[:nbytes])
        except ProtocolError as exc:
            if self.acceptor and self.core is None:
                self._refuse_http(exc)  # still HTTP: never answer with a WebSocket frame
                return
            if self.acceptor and self.conn is None and not self.first_message.done():
                self.first_message.cancel()
                self.manager._reject(self, f"error parsing grid connect: {exc}")
                return
            self.fail(f"protocol error: {exc}")
        except Exception as exc:  # a bug must cost this connection, not the node
            log.exception("grid: unexpected error reading from %s", self._peer_name())
            self.fail(f"internal error: {exc!r}")

    def pause_writing(self) -> None:
        if self.conn is not None and self.conn._wire is self:
            self.conn._pause_writing()

    def resume_writing(self) -> None:
        if self.conn is not None and self.conn._wire is self:
            self.conn._resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
        self.manager._accepted.discard(self)
        reason = f"connection lost: {exc}" if exc else "connection closed by peer"
        for fut in (self.head_future, self.first_message):
            if fut is not None and not fut.done():
                fut.set_exception(Disconnected(reason))
                fut.exception()  # retrieved: nobody may wait on it (e.g. a refused upgrade)
        if self.conn is not None:
            self.conn._wire_lost(self, reason)
        if not self.closed.done():
            self.closed.set_result(None)

    def eof_received(self) -> bool:
        return False  # close our side too

    # -- helpers

    def _peer_ip(self) -> str:
        """The peer's address without the port (a rate-limiting key)."""
        peer = self.transport.get_extra_info("peername") if self.transport else None
        return str(peer[0]) if isinstance(peer, tuple) and peer else str(peer)

    def _peer_name(self) -> str:
        if self.conn is not None:
            return self.conn.remote
        peer = self.transport.get_extra_info("peername") if self.transport else None
        return str(peer)

    def fail(self, reason: str) -> None:
        """Drop this socket at once (no close handshake, as Go does)."""
        if self.conn is not None:
            self.conn._wire_lost(self, reason)
        else:
            self.manager._peer_log((self._peer_ip(), 0), logging.INFO,
                                   "grid: closing connection from %s: %s", self._peer_name(), reason)
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _refuse_http(self, exc: ProtocolError) -> None:
        """A malformed or oversized request head: an HTTP error, then close."""
        status = 431 if len(self._head) > _http.MAX_HEADER_BYTES else 400
        self._head = bytearray()
        self.manager._peer_log((self._peer_ip(), 0), logging.INFO,
                               "grid: refused request from %s: HTTP %d: %s", self._peer_name(), status, exc)
        if self.transport is not None:
            self.transport.write(_http.error_response(status, f"grid: {exc}"))
            self.transport.close()

    def _handshake_expired(self) -> None:
        self._handshake_timer = None
        if self.conn is None:
            self.manager._peer_log((self._peer_ip(), 0), logging.INFO,
                                   "grid: handshake timeout from %s", self._peer_name())
            if self.transport is not None:
                self.transport.abort()

    def write_frame(self, payload: bytes, opcode: int = WS_BINARY) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(encode_frame(payload, opcode, _mask_key() if self._mask else None))

    def start_websocket(self, leftover: bytes) -> None:
        # Inline dispatch and the connection's base flags switch on at attach.
        self.core = MuxCore(self, self.acceptor, 0, self.manager.max_message_size, "", {}, {},
                            _current, asyncio.get_running_loop().time, MuxIdAllocator())
        if leftover:
            self.core.feed(leftover)

    # -- HTTP phase

    def _on_http(self, chunk: bytes | bytearray) -> None:
        if self._body_wanted >= 0:  # dialer reading an error response body
            self._head += chunk
            if len(self._head) >= self._body_wanted:
                self._reject_http()
            return
        self._head += chunk
        split = _http.split_head(self._head)
        if split is None:
            return
        raw, rest = split
        head = _http.parse_head(raw)
        self._head = bytearray()
        if self.acceptor:
            self.manager._on_upgrade_request(self, head, rest)
            return
        assert self.head_future is not None
        if head.start[1] != "101":
            self._error_head = head
            try:
                want = int(head.get("content-length", "0"))
            except ValueError:
                want = 0
            self._body_wanted = min(max(want, 0), 4096)
            self._head = bytearray(rest)
            if len(self._head) >= self._body_wanted:
                self._reject_http()
            return
        if head.get("sec-websocket-accept") != _http.accept_key(self._ws_key):
            raise ProtocolError("bad Sec-WebSocket-Accept in upgrade response")
        self.start_websocket(rest)
        if not self.head_future.done():
            self.head_future.set_result(head)

    def _reject_http(self) -> None:
        head = self._error_head
        assert head is not None and self.head_future is not None
        body = bytes(self._head[: self._body_wanted]).decode("utf-8", "replace").strip()
        status = " ".join(head.start[1:])
        self._body_wanted = -1
        if not self.head_future.done():
            self.head_future.set_exception(Rejected(f"HTTP {status}: {body}" if body else f"HTTP {status}"))
        if self.transport is not None:
            self.transport.close()

    # -- WebSocket phase: callbacks from the MuxCore

    def _on_message(self, m: Any) -> None:
        """A message the core did not handle inline."""
        conn = self.conn
        if conn is not None:
            conn._dispatch(m)
        elif not self.first_message.done():
            self.first_message.set_result(m)
            if self.acceptor:
                self.manager._on_connect_message(self, m)
        elif not self.acceptor:
            # The acceptor starts normal operation right after its
            # ConnectResponse (§5.3), so its first requests can come in the
            # same read, before the dial task has attached us.
            self._early.append(m)

    def _on_control(self, opcode: int, payload: bytes) -> None:
        if opcode == WS_PING:
            self.write_frame(payload, WS_PONG)
        elif opcode == WS_CLOSE:
            # Echo the status code, then tear down (§1.5).
            self.write_frame(payload[:2], WS_CLOSE)
            self.fail("peer sent a WebSocket close frame")
        elif opcode == WS_TEXT:
            if self.acceptor and self.conn is None and not self.first_message.done():
                self._on_message(decode_message(payload))  # Go accepts a text handshake
        # pongs, and text after the handshake, are ignored



class Connection:
    """The link to one remote node: requests, state and statistics.

    Obtained from :meth:`grid.Manager.connection`; lives as long as the
    manager, across any number of reconnects.
    """

    def __init__(self, manager: Manager, remote: str) -> None:
        self._mgr = manager
        loop = manager._loop
        assert loop is not None, "connections are made by a started manager"
        self._loop: asyncio.AbstractEventLoop = loop
        #: The remote node's host string.
        self.remote = remote
        #: This node's host string.
        self.local = manager.local
        #: True if this node dials the remote (§1.2); the other side waits.
        self.dials = manager._local_dials(remote)
        self._addr = _http.parse_host(remote)
        self._base = _base_flags(self.local, remote)
        self._state = State.UNCONNECTED
        # Read on every request; copied from the manager once.
        self._default_timeout = manager.default_timeout
        self._queue_limit = manager.send_queue_size
        self._wire: _Wire | None = None
        self._core: Any = None  # the live wire's MuxCore
        self._ids = MuxIdAllocator()
        self._sweep: asyncio.TimerHandle | None = None  # request deadline sweep
        self._sweep_at = float("inf")
        self._callee_tasks: set[asyncio.Task[Any]] = set()
        # Tasks of the async single-request handlers running now (their
        # number is what max_running_handlers caps).
        self._handler_tasks: set[asyncio.Task[Any]] = set()
        # Requests waiting for a handler slot (bounded: max_queued_requests).
        self._backlog: deque[tuple[Any, Any, float]] = deque()
        self._callers: dict[int, _stream.Stream] = {}  # streams this side opened
        self._callees: dict[int, Any] = {}  # streams this side serves
        self._flush_handle: asyncio.Handle | None = None
        # Writes held in order behind a large message being framed on the
        # encoder thread: (future of the frame bytes, its request's mux id,
        # 0 for another large message, -1 for frames take_frames counted).
        self._large: deque[tuple[asyncio.Future[bytes], int]] = deque()
        self._paused = False
        self._space_waiters: list[asyncio.Future[None]] = []
        self._write_stall: asyncio.TimerHandle | None = None
        self._connect_waiters: list[asyncio.Future[None]] = []
        self._ping_timer: asyncio.TimerHandle | None = None
        self._last_pong = 0.0
        self._bytes_at_tick = 0  # wire.bytes_in at the last ping tick
        self._generation = 0
        self._remote_id: bytes | None = None
        self._dial_task: asyncio.Task[None] | None = None
        # statistics of closed wires (the live one's are in its core)
        self._closed_stats = [0, 0, 0, 0]  # bytes in, bytes out, messages in, messages out
        self._reconnects = 0
        self._rtt: float | None = None
        self._connected_at: float | None = None
        self._last_error: str | None = None
        self._warn_limit = _LogLimit()  # failures: connect failed, disconnected
        self._info_limit = _LogLimit()  # "connected", so a flapping link stays quiet too

    # -- public API

    @property
    def state(self) -> State:
        """The current :class:`State`."""
        return self._state

    @property
    def connected(self) -> bool:
        """True while the connection is up."""
        return self._state is State.CONNECTED

    @property
    def last_error(self) -> str | None:
        """Why the last attempt or connection failed (e.g. the rejection reason)."""
        return self._last_error

    async def wait_for_connect(self, timeout: float | None = None) -> None:
        """Wait until the connection is up; TimeoutError after ``timeout`` seconds."""
        if self._state is State.CONNECTED:
            return
        if self._mgr._forked:
            raise self._down()
        if self._state is State.SHUTDOWN:
            raise Disconnected("connection is shut down")
        fut = self._loop.create_future()
        self._connect_waiters.append(fut)
        try:
            if timeout is None:
                await fut
            else:
                await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(
                f"not connected to {self.remote} after {timeout} s"
                + (f" (last error: {self._last_error})" if self._last_error else "")
            ) from None
        finally:
            if fut in self._connect_waiters:
                self._connect_waiters.remove(fut)

    def subroute(self, *segments: str) -> Subroute:
        """A view of this connection that addresses handlers registered under
        the subroute ``"/".join(segments)``."""
        return Subroute(self, join_route(segments))

    def request(self, handler_id: int, payload: Payload = None,
                timeout: float | None = None) -> Awaitable[bytes | None]:
        """Call the single-request handler ``handler_id`` on the remote:
        ``reply = await conn.request(ECHO, b"ping")``.

        :param payload: request body; ``None`` arrives as absent, ``b""`` as empty.
        :param timeout: deadline in seconds (default 60 s, sent as DeadlineMS).
            A call made while serving a call is also bounded by that call's
            remaining deadline.
        :returns: an awaitable (an ``asyncio.Future``) of the reply, ``None``
            when the handler returned nothing.  Every error surfaces when it
            is awaited:
        :raises RemoteError: the handler failed (``.message`` is its text).
        :raises Disconnected: the connection is down or dropped during the call.
        :raises TimeoutError: the deadline passed.

        The request is sent before this returns.  Cancelling the await
        abandons the call locally (as in Go, nothing tells the callee); its
        bookkeeping goes when the reply arrives or the deadline passes.
        """
        core = self._core
        if core is not None:  # the compiled core starts the usual call in one step
            return core.call(handler_id, payload, timeout, None)  # type: ignore[no-any-return]
        return self._call(handler_id, payload, timeout, None)

    def _call(self, handler_id: int, payload: Payload, timeout: float | None,
              sub: bytes | None) -> Awaitable[bytes | None]:
        # The hot path of every call: no coroutine, the caller awaits the
        # future the response resolves.
        core = self._core
        try:
            if core is None or self._state is not State.CONNECTED:
                raise self._down()
            if type(handler_id) is not int or not 0 < handler_id < 256:
                check_handler_id(handler_id)
            ctx = _current.get()
            if ctx is not None:  # serving a call: its deadline bounds this one
                timeout = _inherit_deadline(ctx, timeout, self._loop)
            if timeout is None:
                timeout = self._default_timeout
            elif timeout < 0.001:
                raise TimeoutError("grid request deadline below 1 ms")
            if self._paused or len(core.queue) >= self._queue_limit:
                # A task, so the request goes out even before it is awaited.
                return asyncio.ensure_future(
                    self._call_when_space(handler_id, payload, timeout, sub), loop=self._loop)
            fut = self._loop.create_future()
            core.request(fut, handler_id, payload, timeout, sub)
        except Exception as exc:
            return self._failed(exc)
        if self._sweep_at > _monotonic() + timeout:
            self._schedule_sweep(timeout)
        return fut

    async def _call_when_space(self, handler_id: int, payload: Payload, timeout: float,
                               sub: bytes | None) -> bytes | None:
        """The slow path: wait for room in the send queue (back-pressure)."""
        await self._wait_for_space()
        # The class's _call, not a tracing override: the outer call traces.
        return await Connection._call(self, handler_id, payload, timeout, sub)

    def _down(self) -> GridError:
        """The error for a call while there is no live connection."""
        err = self._mgr._fork_error() if self._mgr._forked else None
        return err if err is not None else Disconnected()

    def _failed(self, exc: BaseException) -> asyncio.Future[Any]:
        fut = self._loop.create_future()
        fut.set_exception(exc)
        return fut

    async def new_stream(self, handler_id: int, payload: Payload = None,
                         timeout: float | None = None, *, in_capacity: int | None = None,
                         out_capacity: int | None = None) -> _stream.Stream:
        """Open a stream to the stream handler ``handler_id`` on the remote.

        Capacities come from this node's own registration of the handler (as
        in Go) unless given.  ``timeout`` bounds the whole stream (default:
        none).  Returns once the remote has acknowledged the stream.

        :raises RemoteUnknownHandler: the remote has no such stream handler.
        :raises UnknownHandler: no local registration to read capacities from.
        :raises Disconnected: the connection is down.
        """
        return await _stream.open_stream(self, handler_id, _as_bytes(payload), timeout, None,
                                         None, in_capacity, out_capacity)

    def stats(self) -> ConnectionStats:
        """A snapshot of this connection's counters."""
        b_in, b_out, m_in, m_out = self._closed_stats
        wire, core = self._wire, self._core
        if wire is not None and core is not None:
            b_in, b_out = b_in + wire.bytes_in, b_out + core.bytes_out
            m_in, m_out = m_in + core.msgs_in, m_out + core.msgs_out
        return ConnectionStats(
            remote=self.remote,
            state=self._state,
            dials=self.dials,
            bytes_in=b_in,
            bytes_out=b_out,
            messages_in=m_in,
            messages_out=m_out,
            reconnects=self._reconnects,
            last_ping_rtt=self._rtt,
            last_connect_time=self._connected_at,
            last_error=self._last_error,
            outstanding_requests=len(core.pending) if core is not None else 0,
            outstanding_streams=len(self._callers) + len(self._callees),
            send_queue_depth=len(core.queue) if core is not None else 0,
            running_handlers=len(self._handler_tasks),
            queued_requests=len(self._backlog),
        )

    def __repr__(self) -> str:
        return f"<grid.Connection {self.local} -> {self.remote} {self._state.name}>"

    # -- requests

    def _schedule_sweep(self, delay: float) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
        # At most one sweep per 10 ms: deadlines fire up to 10 ms late.
        delay = max(delay, 0.01)
        self._sweep_at = time.monotonic() + delay
        self._sweep = self._loop.call_later(delay, self._run_sweep)
        if self._core is not None:
            self._core.sweep_at = self._sweep_at

    def _run_sweep(self) -> None:
        self._sweep = None
        self._sweep_at = float("inf")
        core = self._core
        if core is None:
            return
        core.sweep_at = self._sweep_at
        nxt = core.expire()
        if nxt is not None:
            self._schedule_sweep(nxt - time.monotonic())

    # -- sending

    def _send(self, msg: bytes) -> None:
        """Queue one encoded message; everything queued in this loop iteration
        leaves together (§4)."""
        core = self._core
        if core is not None:
            core.send(msg)

    def _schedule_flush(self) -> None:
        if self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        wire, core = self._wire, self._core
        if wire is None or core is None or wire.transport is None:
            return
        if not wire.framed:  # grid.integrations: the server frames the messages
            wire.flush_messages(core)  # type: ignore[attr-defined]
            return
        if self._large:
            return  # held behind a large frame; _large_done flushes
        data = core.take_frames(_mask_key() if wire._mask else None)
        if data is None:
            return
        self._write(wire, data)
        if self._space_waiters and not self._paused:
            self._wake_senders()  # the queue has room again

    def _flush_early(self) -> None:
        """Write what is queued now (MuxCore: a full write's worth); the
        flush already scheduled for this iteration takes what follows."""
        handle = self._flush_handle
        self._flush()
        self._flush_handle = handle

    def _write(self, wire: _Wire, data: bytes) -> None:
        assert wire.transport is not None
        wire.transport.write(data)
        limit = self._mgr.max_write_buffer
        if wire.transport.get_write_buffer_size() > limit:
            wire.fail(f"send buffer over {limit} bytes: peer is not reading")

    def _send_large(self, mux_id: int, seq: int, deadline_ms: int, handler: int, op: int,
                    flags: int, payload: bytes, subroute: bytes | None) -> None:
        """Send a message with a payload of LARGE_MESSAGE bytes or more (the
        MuxCore hands these over instead of encoding them).  It is encoded
        and framed on the manager's encoder thread, whose copies, CRC and
        mask run without the GIL, so the event loop never waits for it.
        Order on the wire is kept: everything queued before it leaves before
        it, everything queued after it waits for it."""
        wire, core = self._wire, self._core
        if wire is None or core is None or wire.transport is None:
            return  # down: _reset has failed (or will fail) whatever waits on it
        if not wire.framed or not ACCELERATED:
            # grid.integrations frame whole messages themselves; and the pure
            # codec holds the GIL throughout, so a thread would only contend
            # with the loop for it: both encode here, in order, as any message.
            core.send(encode_message(mux_id, seq, deadline_ms, handler, op, flags, payload,
                                     subroute))
            return
        mask = _mask_key() if wire._mask else None
        if self._large:
            # Queued since the previous large message: they go between the two.
            before = core.take_frames(mask)
            if before is not None:
                done = self._loop.create_future()
                done.set_result(before)
                self._large.append((done, -1))  # counted by take_frames
        else:
            self._flush()
        job = self._loop.run_in_executor(self._mgr._encoder(), encode_message_frame, mux_id, seq,
                                         deadline_ms, handler, op, flags, payload, subroute,
                                         mask)
        gen = self._generation
        self._large.append((job, mux_id if op == _REQUEST else 0))
        job.add_done_callback(lambda _job: self._large_done(gen))

    def _large_done(self, gen: int) -> None:
        """Write the held frames that are ready, in order; once none is held,
        let the ordinary flush run again."""
        if gen != self._generation:
            return  # the connection these frames were for is gone
        wire, core = self._wire, self._core
        large = self._large
        while large and large[0][0].done():
            job, mux_id = large.popleft()
            if job.cancelled():
                continue
            exc = job.exception()
            if exc is not None:
                fut = core.pending.pop(mux_id, None) if (core is not None and mux_id > 0) else None
                if fut is not None and not fut.done():
                    fut.set_exception(exc)
                else:
                    log.error("grid: %s -> %s: could not encode a large message: %r",
                              self.local, self.remote, exc)
                continue
            data = job.result()
            if wire is not None and core is not None and wire.transport is not None:
                if mux_id >= 0:
                    core.msgs_out += 1
                    core.bytes_out += len(data)
                self._write(wire, data)
        if not large and core is not None and core.queue:
            self._flush()

    async def _wait_for_space(self) -> Any:
        """Wait while the send queue is full or the socket is paused; return
        the live core, or raise Disconnected if the connection dropped."""
        while self._paused or (self._core is not None
                               and len(self._core.queue) >= self._mgr.send_queue_size):
            fut = self._loop.create_future()
            self._space_waiters.append(fut)
            await fut
            if self._core is None:
                raise Disconnected()
        if self._core is None:
            raise Disconnected()
        return self._core

    def _wake_senders(self) -> None:
        waiters, self._space_waiters = self._space_waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    def _open_calls(self) -> None:
        """Let the core start calls itself (MuxCore.call) exactly while
        :meth:`_call` would take its plain path: connected, not paused, not
        tracing."""
        core = self._core
        if core is not None:
            core.open_calls = (self._state is State.CONNECTED and not self._paused
                               and "_call" not in self.__dict__)

    def _pause_writing(self) -> None:
        self._paused = True
        self._open_calls()
        if self._write_stall is None:
            self._write_stall = self._loop.call_later(self._mgr.write_timeout, self._stalled)

    def _resume_writing(self) -> None:
        self._paused = False
        self._open_calls()
        if self._write_stall is not None:
            self._write_stall.cancel()
            self._write_stall = None
        self._wake_senders()

    def _stalled(self) -> None:
        self._write_stall = None
        if self._wire is not None and self._paused:
            self._wire.fail(f"writes stalled for {self._mgr.write_timeout} s: peer is not reading")

    # -- receiving

    def _on_control(self, opcode: int, payload: bytes) -> None:
        """WebSocket control frames of the live socket (see _Wire._on_control)."""
        if self._wire is not None:
            self._wire._on_control(opcode, payload)

    def _dispatch(self, m: Any) -> None:
        """Every message the core does not handle itself (responses, requests
        for sync handlers and the traffic of known streams it does; see
        MuxCore.dispatch)."""
        op = m.op
        if op == _REQUEST:
            self._on_request(m)
        elif op in _CALLEE_OPS:
            if op == _PING and m.mux_id == 0:
                self._on_ping(m)
            else:
                _stream.on_callee_op(self, m)
        elif op in _CALLER_OPS:
            if op == _PONG and m.mux_id == 0:
                self._on_pong(m)
            elif op == _MUX_CONNECT_ERROR and self._core is not None and \
                    m.mux_id in self._core.pending:
                fut = self._core.pending.pop(m.mux_id)
                if not fut.done():
                    try:
                        text = _payloads.decode_mux_connect_error(m.payload)
                    except ProtocolError as exc:
                        text = str(exc)
                    fut.set_exception(RemoteUnknownHandler(text))
            else:
                _stream.on_caller_op(self, m)
        elif op == _CONNECT_MUX:
            _stream.serve_connect(self, m)
        elif op == _RESPONSE:
            pass  # the core resolves responses; one reaching here is stale
        else:
            # Connect, ConnectResponse, Disconnect, nested Merged, unknown ops:
            # logged and ignored, as Go does (§3.2).
            log.debug("grid: ignoring op %d from %s", op, self.remote)

    _on_message = _dispatch  # the core's callback for what it does not handle inline

    def _on_request(self, m: Any) -> None:
        """A request for an async handler, or for none (sync ones run in the core)."""
        entry = self._mgr._registry.single(m.handler, m.subroute)
        if entry is None:
            self._reply_mux_error(m, unknown_handler_text(m.handler, m.subroute))
            return
        if self._mgr._draining:
            self._core.respond(m.mux_id, m.seq, None, SHUTTING_DOWN_TEXT)
            return
        if not entry.is_async:  # replayed before attach: run it like the core would
            self._core.dispatch(m)
            return
        self._admit(m, entry)

    def _admit(self, m: Any, entry: Any) -> bool:
        """Start an async handler, queue it while max_running_handlers run, or
        answer BUSY_TEXT when the queue is full too (then return False)."""
        if len(self._handler_tasks) < self._mgr.max_running_handlers:
            self._start_handler(m, entry, time.monotonic())
        elif len(self._backlog) < self._mgr.max_queued_requests:
            # Over the cap: wait in a bounded FIFO for a running handler to end.
            self._backlog.append((m, entry, time.monotonic()))
        else:
            self._core.respond(m.mux_id, m.seq, None, BUSY_TEXT)
            return False
        return True

    def _start_handler(self, m: Any, entry: Any, received: float) -> None:
        loop = self._loop
        deadline = None
        if m.deadline_ms:
            deadline = loop.time() + m.deadline_ms / 1000 - (time.monotonic() - received)
        token = _current.set(CallContext(self.remote, m.handler, entry.route, m.mux_id, deadline))
        try:
            task = loop.create_task(self._run_async(entry.fn, m, received, self._generation))
        finally:
            _current.reset(token)
        self._callee_tasks.add(task)
        self._handler_tasks.add(task)
        task.add_done_callback(self._handler_done)
        if deadline is not None:
            # Past its deadline the caller has given up: free the work (Go
            # lets it run and drops the reply; the wire looks the same).
            timer = loop.call_at(deadline, task.cancel)
            task.add_done_callback(lambda _t: timer.cancel())

    def _handler_done(self, task: asyncio.Task[Any]) -> None:
        self._callee_tasks.discard(task)
        self._handler_tasks.discard(task)
        backlog = self._backlog
        while backlog and len(self._handler_tasks) < self._mgr.max_running_handlers:
            m, entry, received = backlog.popleft()
            if m.deadline_ms and (time.monotonic() - received) * 1000 >= m.deadline_ms:
                if type(entry) is _TracedEntry:
                    entry.record(0, "deadline exceeded while queued")
                continue  # the caller has given up while it waited
            self._start_handler(m, entry, received)

    async def _run_async(self, fn: Callable[..., Any], m: Any, started: float, gen: int) -> None:
        err: str | None
        try:
            result = await fn(m.payload)
        except RemoteError as exc:
            result, err = None, exc.message
        except Exception as exc:
            result, err = None, self._handler_failed(m, exc)
        else:
            err = None
        if gen != self._generation or self._core is None:
            return  # the connection has dropped since
        if m.deadline_ms and (time.monotonic() - started) * 1000 > m.deadline_ms:
            return  # the caller has given up (§7 step 3)
        self._core.respond(m.mux_id, m.seq, result, err)

    def _handler_failed(self, m: Any, exc: BaseException) -> str:
        log.error("grid: handler %d for %s raised\n%s", m.handler, self.remote,
                  "".join(traceback.format_exception(exc)).rstrip())
        return f"{type(exc).__name__}: {exc}"

    def _reply(self, m: Any, op: int, payload: bytes) -> None:
        """A reply built from the received message (§2.5): its mux id, Seq,
        DeadlineMS, Handler and flags kept, op and payload replaced, the base
        flags added and FlagSubroute cleared (pongs, MuxConnectError)."""
        flags = (m.flags | self._base) & ~FLAG_SUBROUTE & 0xFF
        msg = encode_message(m.mux_id, m.seq, m.deadline_ms, m.handler, op, flags, payload)
        if op == _PONG and m.mux_id == 0:
            self._send_keepalive(msg)
        else:
            self._send(msg)

    def _send_keepalive(self, msg: bytes) -> None:
        """Queue a connection ping or pong.  These need no order with other
        messages, so they do not wait behind a large message being framed:
        the keepalive holds while the frame is built."""
        wire, core = self._wire, self._core
        if not self._large or wire is None or core is None or wire.transport is None:
            self._send(msg)
            return
        data = encode_frames([msg], _mask_key() if wire._mask else None)
        core.msgs_out += 1
        core.bytes_out += len(data)
        self._write(wire, data)

    def _reply_mux_error(self, m: Any, text: str) -> None:
        self._reply(m, _MUX_CONNECT_ERROR, _payloads.encode_mux_connect_error(text))

    def _on_ping(self, m: Any) -> None:
        try:
            t = _payloads.decode_ping(m.payload)
        except ProtocolError:
            t = _payloads.GO_ZERO_TIME_NS
        self._reply(m, _PONG, _payloads.Pong(False, None, t).encode())

    def _on_pong(self, m: Any) -> None:
        self._last_pong = self._loop.time()
        try:
            pong = _payloads.Pong.decode(m.payload)
        except ProtocolError:
            return
        if pong.time_ns > 0:
            self._rtt = max(0.0, (time.time_ns() - pong.time_ns) / 1e9)

    # -- keepalive (§9)

    def _ping_tick(self) -> None:
        self._ping_timer = None
        wire = self._wire
        if wire is None or self._state is not State.CONNECTED:
            return
        interval = self._mgr.ping_interval
        if wire.bytes_in != self._bytes_at_tick:
            # Bytes arrived since the last tick: the peer is alive even if its
            # pong waits behind a large message on the wire.
            self._bytes_at_tick = wire.bytes_in
            self._last_pong = max(self._last_pong, self._loop.time())
        if self._loop.time() - self._last_pong > 2 * interval:
            wire.fail(f"{_NO_PONG} {2 * interval:g} s")
            return
        # Connection pings never carry a CRC (§1.6).
        self._send_keepalive(encode_message(0, 0, 10000, 0, _PING, 0,
                                            _payloads.encode_ping(time.time_ns())))
        self._ping_timer = self._loop.call_later(interval, self._ping_tick)

    # -- lifecycle

    def _log_failure(self, text: str, force: bool = False) -> None:
        # Rate-limited so a dead peer does not flood the log.
        self._warn_limit.log(logging.WARNING, "grid: %s -> %s: %s", self.local, self.remote,
                             text, force=force)

    def _attach(self, wire: _Wire, remote_id: bytes) -> None:
        """Make ``wire`` the live socket after a successful handshake."""
        old = self._wire
        if old is not None:
            self._wire = None
            self._reset("replaced by a new connection")
            old.conn = None
            if old.core is not None:
                old.core.owner = old  # whatever the old socket still delivers is dropped
            old.close()
        elif self._remote_id is not None:
            self._reset("reconnected")
        if self._remote_id is not None:
            self._reconnects += 1
            if remote_id != self._remote_id:
                log.info("grid: %s restarted (new instance id)", self.remote)
        self._remote_id = remote_id
        core = wire.core
        core.caller = self.remote
        core.base_flags = self._base
        core.ids = self._ids
        registry = self._mgr._registry
        if not self._mgr._draining and not self._mgr._tracers.fns:
            core.singles = registry._single
            core.singles_sub = registry._single_sub
        wire.conn = self
        core.owner = self  # dispatch straight to us, one call less per message
        self._wire = wire
        self._core = core
        self._generation += 1
        self._state = State.CONNECTED
        self._connected_at = time.time()
        self._last_pong = self._loop.time()
        self._paused = False
        core.loop = self._loop
        core.callers = self._callers
        core.callees = self._callees
        core.default_timeout = self._default_timeout
        core.queue_limit = self._queue_limit
        core.sweep_at = self._sweep_at
        self._open_calls()
        self._ping_timer = self._loop.call_later(self._mgr.ping_interval, self._ping_tick)
        if self._reconnects:
            self._info_limit.log(logging.INFO, "grid: %s connected to %s (reconnect %d)",
                                 self.local, self.remote, self._reconnects)
        else:
            self._info_limit.log(logging.INFO, "grid: %s connected to %s",
                                 self.local, self.remote)
        waiters, self._connect_waiters = self._connect_waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)
        early, wire._early = wire._early, []
        for m in early:
            if self._wire is not wire:
                break
            try:
                core.dispatch(m)
            except ProtocolError as exc:
                wire.fail(f"protocol error: {exc}")
            except Exception as exc:  # as in _Wire.buffer_updated
                log.exception("grid: unexpected error reading from %s", self.remote)
                wire.fail(f"internal error: {exc!r}")

    def _refuse_inline(self) -> None:
        """Route every request through :meth:`_on_request` (which refuses
        them while the manager drains) instead of running sync ones inline."""
        if self._core is not None:
            self._core.singles = {}
            self._core.singles_sub = {}

    # -- tracing (grid.trace)

    def _set_tracing(self, on: bool) -> None:
        """Switch the call paths to their tracing twins, or back.

        The twins shadow :meth:`_call` and :meth:`_on_request` on this
        instance, so that without a tracer the hot path is the untraced code
        itself; with one, sync handlers leave the core's inline path (which
        cannot time them) and run through :meth:`_on_request_traced`."""
        d = self.__dict__
        if on:
            d["_call"] = self._call_traced
            d["_on_request"] = self._on_request_traced
            self._refuse_inline()
        else:
            d.pop("_call", None)
            d.pop("_on_request", None)
            core = self._core
            if core is not None and not self._mgr._draining:
                core.singles = self._mgr._registry._single
                core.singles_sub = self._mgr._registry._single_sub
        self._open_calls()

    def _call_traced(self, handler_id: int, payload: Payload, timeout: float | None,
                     sub: bytes | None) -> Awaitable[bytes | None]:
        """:meth:`_call`, recording a caller-side :class:`CallTrace` when it ends."""
        start = time.time()
        t0 = time.perf_counter()
        res: Any = Connection._call(self, handler_id, payload, timeout, sub)
        # A task waits for room in the send queue (back-pressure): its mux id
        # is not known yet; a done future failed before it was sent.
        mux_id = 0 if isinstance(res, asyncio.Task) or res.done() else self._ids.last
        route = None if sub is None else _ROUTE_NAMES.get(sub[1:], sub.hex())
        size = 0 if payload is None else len(payload)
        emit = self._mgr._tracers.emit

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
            emit(CallTrace(handler_id, route, self.local, self.remote, "caller", "single",
                           mux_id, start, duration, size, n, err))

        res.add_done_callback(done)
        return res  # type: ignore[no-any-return]

    def _trace_callee(self, m: Any, route: str | None, start: float, t0: float, n: int,
                      err: str | None) -> None:
        payload = m.payload
        self._mgr._tracers.emit(CallTrace(
            m.handler, route, self.remote, self.local, "callee", "single", m.mux_id, start,
            time.perf_counter() - t0, 0 if payload is None else len(payload), n, err))

    def _on_request_traced(self, m: Any) -> None:
        """:meth:`_on_request` for every request (sync handlers included)
        while tracing: records a callee-side :class:`CallTrace` per request."""
        start = time.time()
        t0 = time.perf_counter()
        entry = self._mgr._registry.single(m.handler, m.subroute)
        if entry is None:
            text = unknown_handler_text(m.handler, m.subroute)
            self._reply_mux_error(m, text)
            self._trace_callee(m, None if m.subroute is None else bytes(m.subroute).hex(),
                               start, t0, 0, text)
            return
        if self._mgr._draining:
            self._core.respond(m.mux_id, m.seq, None, SHUTTING_DOWN_TEXT)
            self._trace_callee(m, entry.route, start, t0, 0, SHUTTING_DOWN_TEXT)
            return
        if not entry.is_async:
            self._run_sync_traced(m, entry, start, t0)
            return
        traced = _TracedEntry(self, m, entry, start, t0)
        if not self._admit(m, traced):
            traced.record(0, BUSY_TEXT)

    def _run_sync_traced(self, m: Any, entry: Any, start: float, t0: float) -> None:
        """What the core's inline path does for a sync handler, timed."""
        dl = m.deadline_ms
        deadline = self._loop.time() + dl / 1000 if dl else None
        token = _current.set((self.remote, m.handler, entry.route, m.mux_id, deadline))
        err: str | None
        try:
            result = entry.fn(m.payload)
        except RemoteError as exc:
            result, err = None, exc.message
        except Exception as exc:
            result, err = None, self._handler_failed(m, exc)
        else:
            err = None
        finally:
            _current.reset(token)
        n = 0
        if err is None and result is not None:
            if isinstance(result, (bytes, bytearray, memoryview)):
                n = len(result)
            else:
                err = f"TypeError: handler returned {type(result).__name__}, want bytes or None"
        self._trace_callee(m, entry.route, start, t0, n, err)
        if dl and (time.perf_counter() - t0) * 1000 > dl:
            return  # the caller has given up (§7 step 3)
        self._core.respond(m.mux_id, m.seq, result, err)

    def _in_flight(self) -> set[asyncio.Future[Any]]:
        """What a graceful close waits for: handler and stream tasks this
        side runs, requests it awaits, and streams it opened."""
        busy: set[asyncio.Future[Any]] = {t for t in self._callee_tasks if not t.done()}
        if self._core is not None:
            busy.update(f for f in self._core.pending.values() if not f.done())
        busy.update(st._ended for st in self._callers.values() if not st._ended.done())
        busy.update(job for job, _ in self._large if not job.done())
        return busy

    def _disown(self) -> None:
        """In a forked child: forget the parent's socket without touching it."""
        self._wire = None
        self._core = None
        self._dial_task = None
        self._ping_timer = self._sweep = self._flush_handle = self._write_stall = None
        self._state = State.SHUTDOWN

    def _wire_lost(self, wire: _Wire, reason: str) -> None:
        if wire is not self._wire:
            return
        core = self._core
        st = self._closed_stats
        st[0] += wire.bytes_in
        if core is not None:
            st[1] += core.bytes_out
            st[2] += core.msgs_in
            st[3] += core.msgs_out
        wire.bytes_in = 0
        if wire.core is not None:
            wire.core.owner = wire
        self._wire = None
        if self._state is not State.SHUTDOWN:
            self._state = State.CONNECTION_ERROR
        self._last_error = reason
        if self._state is State.SHUTDOWN:
            log.debug("grid: %s -> %s closed: %s", self.local, self.remote, reason)
        else:
            self._log_failure(f"disconnected: {reason}", force=reason.startswith(_NO_PONG))
        self._reset(reason)

    def _reset(self, reason: str) -> None:
        """Forget every mux of the old connection (§10.3)."""
        self._generation += 1
        if self._ping_timer is not None:
            self._ping_timer.cancel()
            self._ping_timer = None
        if self._write_stall is not None:
            self._write_stall.cancel()
            self._write_stall = None
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._large.clear()  # frames still on the encoder thread are dropped when done
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
            self._sweep_at = float("inf")
        core, self._core = self._core, None
        if core is not None:
            # Whatever the old socket still delivers is dropped, not dispatched.
            core.callers = core.callees = None
            core.open_calls = False
            core.queue = []
            core.fail_all(Disconnected)
        if self._backlog:  # requests of the old connection: nobody awaits their replies
            for _m, entry, _t in self._backlog:
                if type(entry) is _TracedEntry:
                    entry.record(0, reason)
            self._backlog.clear()
        # Handlers still running for the old connection can no longer reply:
        # cancel them, freeing the work and their slots at once.
        for task in list(self._handler_tasks):
            task.cancel()
        _stream.reset(self)
        self._wake_senders()

    async def _dial_loop(self) -> None:
        """Dial, stay connected, redial: the dialing side's life (§10.2)."""
        loop = self._loop
        attempt = 0
        while self._state is not State.SHUTDOWN:
            started = loop.time()
            if self._state is State.UNCONNECTED:
                self._state = State.CONNECTING
            try:
                wire = await self._dial_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                attempt += 1
                text = str(exc) or type(exc).__name__
                self._last_error = text
                if self._state is not State.SHUTDOWN:
                    self._state = State.CONNECTION_ERROR
                delay = self._mgr.retry_base * (1 + random.random()) / 2
                wait = max(0.0, started + delay - loop.time())
                if attempt > 1 or isinstance(exc, Rejected):
                    # A refusal is a configuration error: worth a warning at once.
                    self._log_failure(f"connect failed: {text}; retrying in {wait:.2f} s")
                else:  # the peer may not be up yet
                    log.debug("grid: %s -> %s: first connect failed: %s; retrying in %.2f s",
                              self.local, self.remote, text, wait)
                await asyncio.sleep(wait)
                continue
            attempt = 0
            await asyncio.shield(wire.closed)

    async def _dial_once(self) -> _Wire:
        mgr = self._mgr
        loop = self._loop
        addr = self._addr
        ssl_ctx = mgr._client_ssl if addr.tls else None
        if addr.tls and ssl_ctx is None:
            raise GridError(f"{self.remote} is https but no ssl context was given")
        wire: _Wire | None = None

        async def connect_and_upgrade() -> _Wire:
            nonlocal wire
            _, proto = await loop.create_connection(
                lambda: _Wire(mgr, acceptor=False), addr.host, addr.port, ssl=ssl_ctx,
                server_hostname=addr.host if ssl_ctx else None,
            )
            wire = proto
            wire.head_future = loop.create_future()
            wire._ws_key = _http.new_key()
            assert wire.transport is not None
            wire.transport.write(_http.upgrade_request(
                addr, mgr.route_path, wire._ws_key, mgr._token(), time.time_ns()))
            await wire.head_future
            return wire

        try:
            w = await asyncio.wait_for(connect_and_upgrade(), mgr.dial_timeout)
            req = _payloads.ConnectRequest(mgr.instance_id, self.local, time.time_ns(), mgr._token())
            w.write_frame(encode_message(0, 0, 0, 0, int(Op.CONNECT), 0, req.encode()))
            first = await asyncio.wait_for(w.first_message, mgr.handshake_timeout)
            if first.op != Op.CONNECT_RESPONSE:
                raise ProtocolError(f"unexpected connect response op {first.op}")
            resp = _payloads.ConnectResponse.decode(first.payload)
            if not resp.accepted:
                raise Rejected(resp.rejected_reason)
        except asyncio.TimeoutError:
            if wire is not None:
                wire.fail("handshake timed out")
            raise TimeoutError(f"dial {self.remote}: timed out") from None
        except BaseException:
            if wire is not None and wire.transport is not None:
                wire.transport.abort()
            raise
        if self._state is State.SHUTDOWN:
            w.close()
            raise Disconnected("shut down")
        self._attach(w, resp.instance_id)
        return w

    def _start(self) -> None:
        if self.dials and self._dial_task is None:
            self._dial_task = self._loop.create_task(self._dial_loop())

    async def _close(self) -> None:
        self._state = State.SHUTDOWN
        self._open_calls()
        if self._dial_task is not None:
            self._dial_task.cancel()
            try:
                await self._dial_task
            except (asyncio.CancelledError, Exception):
                pass
            self._dial_task = None
        wire = self._wire
        if wire is not None:
            self._wire_lost(wire, "shut down")
            wire.conn = None
            wire.close()
        for t in list(self._callee_tasks):
            t.cancel()
        waiters, self._connect_waiters = self._connect_waiters, []
        for w in waiters:
            if not w.done():
                w.set_exception(Disconnected("connection is shut down"))


class _TracedEntry:
    """A registered ``async`` single handler, wrapped for one traced request:
    what :meth:`Connection._start_handler` runs instead of the entry."""

    __slots__ = ("conn", "m", "entry", "start", "t0", "route", "is_async", "done")

    def __init__(self, conn: Connection, m: Any, entry: Any, start: float, t0: float) -> None:
        self.conn = conn
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
            self.conn._trace_callee(self.m, self.route, self.start, self.t0, n, err)

    async def fn(self, payload: bytes | None) -> Any:
        n, err = 0, None
        try:
            result = await self.entry.fn(payload)
        except RemoteError as exc:
            err = exc.message
            raise
        except asyncio.CancelledError:
            err = "context canceled"  # deadline passed or connection dropped
            raise
        except Exception as exc:
            err = f"{type(exc).__name__}: {exc}"
            raise
        else:
            if result is not None:
                if isinstance(result, (bytes, bytearray, memoryview)):
                    n = len(result)
                else:
                    err = f"TypeError: handler returned {type(result).__name__}, want bytes or None"
            return result
        finally:
            self.record(n, err)


def _inherit_deadline(ctx: Any, timeout: float | None,
                      loop: asyncio.AbstractEventLoop) -> float | None:
    """The timeout for a call made while serving the call ``ctx``: the given
    one, or the served call's remaining time if that is shorter (or if no
    timeout was given)."""
    deadline: float | None = ctx[4] if type(ctx) is tuple else ctx.deadline
    if deadline is None:
        return timeout
    remaining = deadline - loop.time()
    if timeout is None or remaining < timeout:
        if remaining < 0.001:
            raise TimeoutError("grid: the deadline of the call being served has passed")
        return remaining
    return timeout


def _text(payload: bytes | None) -> str:
    return payload.decode("utf-8", "replace") if payload else ""


def _as_bytes(payload: Payload) -> bytes | None:
    return payload if payload is None or isinstance(payload, bytes) else bytes(payload)


class Subroute:
    """A connection view addressing handlers under one static subroute."""

    def __init__(self, conn: Connection, route: str) -> None:
        self._conn = conn
        #: The joined route, e.g. ``"disk/1"``.
        self.route = route
        self._base_id = subroute_id(route, 0)
        if len(_ROUTE_NAMES) < _ROUTE_NAMES_MAX:
            _ROUTE_NAMES[self._base_id[1:]] = route

    def _sub(self, handler_id: int) -> bytes:
        check_handler_id(handler_id)
        return bytes((handler_id,)) + self._base_id[1:]

    def request(self, handler_id: int, payload: Payload = None,
                timeout: float | None = None) -> Awaitable[bytes | None]:
        """Like :meth:`Connection.request`, for the handler under this subroute."""
        try:
            sub = self._sub(handler_id)
        except Exception as exc:
            return self._conn._failed(exc)
        core = self._conn._core
        if core is not None:
            return core.call(handler_id, payload, timeout, sub)  # type: ignore[no-any-return]
        return self._conn._call(handler_id, payload, timeout, sub)

    async def new_stream(self, handler_id: int, payload: Payload = None,
                         timeout: float | None = None, *, in_capacity: int | None = None,
                         out_capacity: int | None = None) -> _stream.Stream:
        """Like :meth:`Connection.new_stream`, for the handler under this subroute."""
        return await _stream.open_stream(self._conn, handler_id, _as_bytes(payload), timeout,
                                         self.route, self._sub(handler_id), in_capacity,
                                         out_capacity)

    def subroute(self, *segments: str) -> Subroute:
        """A deeper subroute: ``route + "/" + "/".join(segments)``."""
        return Subroute(self._conn, join_route((self.route, *segments)))

    def __repr__(self) -> str:
        return f"<grid.Subroute {self.route!r} of {self._conn!r}>"
