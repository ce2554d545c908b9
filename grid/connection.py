"""One grid connection per remote node: :class:`Connection`, the story of
one peer.

A Connection is created by the Manager from its host list and lives as long
as the manager, across any number of sockets.  Its life: the dialing side
dials, upgrades and sends Connect (grid._dialer), the accepting side is
attached by the handshake (grid._handshake); once attached, requests go out
through the compiled core and come back to the futures it resolves; writes
leave once per loop iteration, large messages are framed on the encoder
thread in order with the rest, a full socket pauses callers; pings keep it
alive; a lost socket fails what was in flight and the dialer dials again.

Around it, each in its own room: grid._dialer and grid._handshake (dialing
and accepting), grid._wire (the socket; it calls the connection through
:class:`~grid._wire.WireOwner`), grid._send (writes), grid._keepalive
(pings), and grid._call, grid._serve, grid.stream and grid._stream_callee
(the calls the core does not start itself, requests this node serves, and
the two ends of streams), which see the connection only through its
:class:`~grid._link.Link`.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, Union

from grid import _payloads
from grid import stream as _stream
from grid._call import SingleCaller
from grid._checks import as_payload
from grid._consts import FLAG_CRC, Op
from grid._dialer import Dialer, DialNode
from grid._impl import MuxIdAllocator, subroute_id
from grid._keepalive import MAX_PINGS_IN_FLIGHT as MAX_PINGS_IN_FLIGHT  # ping()'s documented limit
from grid._keepalive import NO_PONG, Keepalive, KeepaliveNode
from grid._link import Link, Node as LinkNode
from grid._loglimit import LogLimit
from grid._peerlog import PeerLog
from grid._send import Limits, Sender
from grid._serve import SingleServer
from grid._stream_callee import on_callee_op, serve_connect
from grid._wire import SocketWire, Wire
from grid.errors import DISCONNECTED_TEXT, Disconnected, GridError, ProtocolError
from grid.handlers import check_handler_id, join_route, remember_route, remote_unknown_handler

if TYPE_CHECKING:
    from grid.errors import UsedAfterFork
    from grid.handlers import HandlerRegistry
    from grid.trace import TracerSet

__all__ = ["State", "Connection", "ConnectionStats", "Subroute"]

log = logging.getLogger("grid.connection")


class ConnectionNode(LinkNode, Limits, KeepaliveNode, DialNode, Protocol):
    """What a connection reads of the node that owns it (a :class:`grid.Manager`):
    what its link (streams and served requests), writes, keepalive and
    dialer read, and the settings below."""

    local: str
    default_timeout: float
    _loop: asyncio.AbstractEventLoop | None
    _registry: HandlerRegistry
    _tracers: TracerSet
    _forked: bool
    _draining: bool
    _closed: bool

    def _fork_error(self) -> UsedAfterFork | None: ...

    def _local_dials(self, remote: str) -> bool: ...


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


class State(enum.IntEnum):
    """Connection states (docs/protocol.md §10.1); values match Go's."""

    UNCONNECTED = 0
    CONNECTING = 1
    CONNECTED = 2
    CONNECTION_ERROR = 3
    SHUTDOWN = 4

    def __str__(self) -> str:
        return self.name


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


def _base_flags(local: str, remote: str) -> int:
    # CRC unless both ends are TLS (§1.6).
    tls = ("https://", "wss://")
    return 0 if local.startswith(tls) and remote.startswith(tls) else FLAG_CRC




class Connection:
    """The link to one remote node: requests, state and statistics.

    Obtained from :meth:`grid.Manager.connection`; lives as long as the
    manager, across any number of reconnects.
    """

    def __init__(self, manager: ConnectionNode, remote: str) -> None:
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
        self._base = _base_flags(self.local, remote)
        self._state = State.UNCONNECTED
        # Read on every request; copied from the manager once.
        self._default_timeout = manager.default_timeout
        self._queue_limit = manager.send_queue_size
        self._wire: Wire | None = None
        self._core: Any = None  # the live wire's ConnCore
        self._ids = MuxIdAllocator()
        # Writes to the live wire: batching, large-message order, back-pressure.
        self._sender = sender = Sender(loop, manager, f"{self.local} -> {remote}",
                                       self._open_calls)
        # The core's write callbacks (its owner interface) go straight to the sender.
        self._schedule_flush = sender.schedule_flush
        self._flush_early = sender.flush_early
        self._send_large = sender.send_large
        self._pause_writing = sender.pause
        self._resume_writing = sender.resume
        # What streams and served requests see of this connection.
        self._link = Link(remote, self.local, loop, self._base, manager, manager._registry,
                          manager._tracers, self._ids, sender.send_large, self._down,
                          lambda: self._state is State.CONNECTED)
        self._serving = SingleServer(self._link)
        # Calls the core does not start itself, and the request deadline sweep;
        # the core's callbacks for them go straight to it (_call to the traced
        # twin while tracing, see _set_tracing).
        self._caller = caller = SingleCaller(self._link, sender, self._default_timeout,
                                             self._queue_limit)
        self._call = caller.call
        self._failed = caller.failed
        self._schedule_sweep = caller.schedule_sweep
        self._connect_waiters: list[asyncio.Future[None]] = []
        # Pings on mux 0 while a socket is attached (§9).
        self._keepalive = Keepalive(loop, manager, sender, self._base, remote,
                                    lambda: self._state is State.CONNECTED)
        self._remote_id: bytes | None = None
        # statistics of closed wires (the live one's are in its core)
        self._closed_stats = [0, 0, 0, 0]  # bytes in, bytes out, messages in, messages out
        self._reconnects = 0
        self._connected_at: float | None = None
        self._last_error: str | None = None
        self._restart_limit = LogLimit()  # "restarted": the peer decides how often
        self._log = PeerLog(self.local, remote, loop)  # rate-limited, truthful peer log
        # The dialing side's dial loop (the other side waits to be dialed).
        self._dialer = Dialer(loop, manager, self, self.local, remote, self._log)

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

    async def ping(self, timeout: float | None = None) -> float:
        """Send one connection-level ping (OpPing on mux 0, as keepalive does)
        and return the seconds until the peer's pong came back.

        At most 16 pings (``MAX_PINGS_IN_FLIGHT``) wait at once per connection.

        :param timeout: seconds to wait for the pong (default: the manager's
            ``default_timeout``).
        :raises grid.Disconnected: not connected, or the connection dropped
            before the pong came.
        :raises TimeoutError: no pong within ``timeout``.
        :raises grid.GridError: too many pings already waiting.
        """
        if self._state is not State.CONNECTED or self._wire is None:
            raise self._down()
        return await self._keepalive.ping(self._default_timeout if timeout is None else timeout)

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
        return await _stream.open_stream(self._link, handler_id, as_payload(payload), timeout,
                                         None, None, in_capacity, out_capacity)

    def stats(self) -> ConnectionStats:
        """A snapshot of this connection's counters."""
        b_in, b_out, m_in, m_out = self._closed_stats
        wire, core = self._wire, self._core
        if wire is not None and core is not None:
            b_in, b_out = b_in + wire.bytes_in, b_out + core.bytes_out
            m_in, m_out = m_in + core.msgs_in, m_out + core.msgs_out
        link = self._link
        return ConnectionStats(
            remote=self.remote,
            state=self._state,
            dials=self.dials,
            bytes_in=b_in,
            bytes_out=b_out,
            messages_in=m_in,
            messages_out=m_out,
            reconnects=self._reconnects,
            last_ping_rtt=self._keepalive.rtt,
            last_connect_time=self._connected_at,
            last_error=self._last_error,
            outstanding_requests=len(core.pending) if core is not None else 0,
            outstanding_streams=len(link.callers) + len(link.callees),
            send_queue_depth=len(core.queue) if core is not None else 0,
            running_handlers=len(self._serving.running),
            queued_requests=len(self._serving.backlog),
        )

    def __repr__(self) -> str:
        return f"<grid.Connection {self.local} -> {self.remote} {self._state.name}>"

    # -- requests

    def _down(self) -> GridError:
        """The error for a call while there is no live connection."""
        err = self._mgr._fork_error() if self._mgr._forked else None
        if err is not None:
            return err
        return Disconnected("grid: manager is closed" if self._mgr._closed else DISCONNECTED_TEXT)

    # -- sending (grid._send)

    def _send(self, msg: bytes) -> None:
        """Queue one encoded message; everything queued in this loop iteration
        leaves together (§4)."""
        core = self._core
        if core is not None:
            core.send(msg)

    def _flush(self) -> None:
        self._sender.flush()

    def _open_calls(self) -> None:
        """Let the core start calls itself (ConnCore.call) exactly while
        ``_call`` would take its plain path: connected, not paused, not
        tracing."""
        core = self._core
        if core is not None:
            core.open_calls = (self._state is State.CONNECTED and not self._sender.paused
                               and not self._serving.tracing)

    # -- receiving (the core's owner callbacks)

    def _is_live(self, wire: Wire) -> bool:
        return self._wire is wire

    def _on_control(self, opcode: int, payload: bytes) -> None:
        """WebSocket control frames of the live socket (the wire answers them)."""
        if self._wire is not None:
            self._wire._on_control(opcode, payload)

    def _on_message(self, m: Any) -> None:
        """Every message the core does not handle itself (responses, requests
        for sync handlers and the steady traffic of known streams it does)."""
        op = m.op
        if op == _REQUEST:
            self._serving.on_request(m)
        elif op in _CALLEE_OPS:
            if op == _PING and m.mux_id == 0:
                self._keepalive.on_ping(m)
            else:
                on_callee_op(self._link, m)
        elif op in _CALLER_OPS:
            if op == _PONG and m.mux_id == 0:
                self._keepalive.on_pong(m)
            elif op == _MUX_CONNECT_ERROR and self._core is not None and \
                    m.mux_id in self._core.pending:
                fut = self._core.pending.pop(m.mux_id)
                if not fut.done():
                    try:
                        text = _payloads.decode_mux_connect_error(m.payload)
                    except ProtocolError as exc:
                        text = str(exc)
                    fut.set_exception(remote_unknown_handler(text, m.handler, self.remote))
            else:
                _stream.on_caller_op(self._link, m)
        elif op == _CONNECT_MUX:
            serve_connect(self._link, m)
        elif op == _RESPONSE:
            pass  # the core resolves responses; one reaching here is stale
        else:
            # Connect, ConnectResponse, Disconnect, nested Merged, unknown ops:
            # logged and ignored, as Go does (§3.2).
            log.debug("grid: ignoring op %d from %s", op, self.remote)

    def _handler_failed(self, m: Any, exc: BaseException) -> str:
        return self._link.handler_failed(m, exc)

    # -- lifecycle

    def _attach(self, wire: Wire, remote_id: bytes) -> None:
        """Make ``wire`` the live socket after a successful handshake."""
        old = self._wire
        if old is not None:
            self._wire = None
            self._reset("replaced by a new connection", old)
            old.conn = None
            old.close()
        elif self._remote_id is not None:
            self._reset("reconnected", None)
        if self._remote_id is not None:
            self._reconnects += 1
            if remote_id != self._remote_id:
                self._restart_limit.log(logging.INFO, "grid: %s restarted (new instance id)",
                                        self.remote, logger=log)
        self._remote_id = remote_id
        mgr = self._mgr
        link = self._link
        inline = not mgr._draining and not mgr._tracers.fns
        registry = mgr._registry
        core = wire.core
        # Dispatch straight to this connection, one call less per message.
        core.attach(self, caller=self.remote, base_flags=self._base, ids=self._ids,
                    loop=self._loop, singles=registry._single if inline else {},
                    singles_sub=registry._single_sub if inline else {},
                    callers=link.callers, callees=link.callees,
                    default_timeout=self._default_timeout, queue_limit=self._queue_limit,
                    sweep_at=self._caller.sweep_at)
        wire.conn = self
        self._wire = wire
        self._core = link.core = core
        link.generation += 1
        self._state = State.CONNECTED
        self._connected_at = time.time()
        self._sender.attach(wire, core)
        self._open_calls()
        self._keepalive.start(wire)
        self._log.connected(self._reconnects)
        waiters, self._connect_waiters = self._connect_waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)
        early, wire.early = wire.early, []
        for m in early:
            if self._wire is not wire:
                break
            try:
                core.dispatch(m)
            except ProtocolError as exc:
                wire.fail(f"protocol error: {exc}")
            except Exception as exc:  # as in SocketWire.buffer_updated
                log.exception("grid: unexpected error reading from %s", self.remote)
                wire.fail(f"internal error: {exc!r}")

    def _refuse_inline(self) -> None:
        """Route every request through the serving side (which refuses them
        while the manager drains) instead of running sync ones inline."""
        if self._core is not None:
            self._core.singles = {}
            self._core.singles_sub = {}

    def _in_flight(self) -> set[asyncio.Future[Any]]:
        """What a graceful close waits for: handler and stream tasks this
        side runs, requests it awaits, and streams it opened."""
        link = self._link
        busy: set[asyncio.Future[Any]] = {t for t in link.tasks if not t.done()}
        if self._core is not None:
            busy.update(f for f in self._core.pending.values() if not f.done())
        busy.update(st._ended for st in link.callers.values() if not st._ended.done())
        busy.update(self._sender.jobs())
        return busy

    def _disown(self) -> None:
        """In a forked child: forget the parent's socket without touching it."""
        self._wire = None
        self._core = self._link.core = None
        self._dialer.disown()
        self._keepalive.disown()
        self._caller.disown()
        self._sender.wire = self._sender.core = None
        self._state = State.SHUTDOWN

    def _wire_lost(self, wire: Wire, reason: str) -> None:
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
        self._wire = None
        if self._state is not State.SHUTDOWN:
            self._state = State.CONNECTION_ERROR
        self._last_error = reason
        if self._state is State.SHUTDOWN:
            log.debug("grid: %s -> %s closed: %s", self.local, self.remote, reason)
        else:
            self._log.lost(reason, reason.startswith(NO_PONG), 2 * self._mgr.ping_interval)
        self._reset(reason, wire)

    def _reset(self, reason: str, wire: Wire | None) -> None:
        """Forget every mux of the old connection (§10.3); its core goes back
        to ``wire``, which drops whatever the old socket still delivers."""
        link = self._link
        link.generation += 1
        self._caller.reset()
        core, self._core = self._core, None
        link.core = None
        if core is not None:
            core.detach(wire if wire is not None else core.owner)
            core.fail_all(Disconnected)
        self._serving.reset(reason)
        _stream.reset(link)
        self._keepalive.reset(reason)
        self._sender.reset()

    def _start(self) -> None:
        if self.dials:
            self._dialer.start()

    def _shutting_down(self) -> None:
        """From here on, a drop is the node leaving: no warning about it."""
        self._state = State.SHUTDOWN
        self._log.stop()
        self._open_calls()

    async def _close(self) -> None:
        self._state = State.SHUTDOWN
        self._log.stop()
        self._open_calls()
        await self._dialer.stop()
        wire = self._wire
        if wire is not None:
            self._wire_lost(wire, "shut down")
            wire.conn = None
            wire.close()
        for t in list(self._link.tasks):
            t.cancel()
        waiters, self._connect_waiters = self._connect_waiters, []
        for w in waiters:
            if not w.done():
                w.set_exception(Disconnected("connection is shut down"))

    # -- dialing (grid._dialer calls these)

    def _dial_starts(self) -> bool:
        if self._state is State.SHUTDOWN:
            return False
        if self._state is State.UNCONNECTED:
            self._state = State.CONNECTING
        return True

    def _dial_failed(self, text: str) -> None:
        self._last_error = text
        if self._state is not State.SHUTDOWN:
            self._state = State.CONNECTION_ERROR

    def _dialed(self, wire: SocketWire, remote_id: bytes) -> None:
        if self._state is State.SHUTDOWN:
            wire.close()
            raise Disconnected("shut down")
        self._attach(wire, remote_id)

    # -- tracing (grid.trace)

    def _set_tracing(self, on: bool) -> None:
        """Switch the call paths to their tracing twins, or back.

        ``_call`` becomes the caller's traced twin, so that without a tracer
        the path is the untraced code itself; with one, sync handlers leave
        the core's inline path (which cannot time them) and run through the
        serving side's traced path."""
        self._serving.tracing = on
        if on:
            self._call = self._caller.call_traced
            self._refuse_inline()
        else:
            self._call = self._caller.call
            core = self._core
            if core is not None and not self._mgr._draining:
                core.singles = self._mgr._registry._single
                core.singles_sub = self._mgr._registry._single_sub
        self._open_calls()


class Subroute:
    """A connection view addressing handlers under one static subroute."""

    def __init__(self, conn: Connection, route: str) -> None:
        self._conn = conn
        #: The joined route, e.g. ``"disk/1"``.
        self.route = route
        self._base_id = subroute_id(route, 0)
        remember_route(self._base_id, route)

    def _sub(self, handler_id: int) -> bytes:
        check_handler_id(handler_id)
        return bytes((handler_id,)) + self._base_id[1:]

    def request(self, handler_id: int, payload: Payload = None,
                timeout: float | None = None) -> Awaitable[bytes | None]:
        """Like :meth:`Connection.request`, for the handler under this subroute."""
        conn = self._conn
        try:
            sub = self._sub(handler_id)
        except Exception as exc:
            return conn._failed(exc)
        core = conn._core
        if core is not None:
            return core.call(handler_id, payload, timeout, sub)  # type: ignore[no-any-return]
        return conn._call(handler_id, payload, timeout, sub)

    async def new_stream(self, handler_id: int, payload: Payload = None,
                         timeout: float | None = None, *, in_capacity: int | None = None,
                         out_capacity: int | None = None) -> _stream.Stream:
        """Like :meth:`Connection.new_stream`, for the handler under this subroute."""
        return await _stream.open_stream(self._conn._link, handler_id, as_payload(payload),
                                         timeout, self.route, self._sub(handler_id),
                                         in_capacity, out_capacity)

    def subroute(self, *segments: str) -> Subroute:
        """A deeper subroute: ``route + "/" + "/".join(segments)``."""
        return Subroute(self._conn, join_route((self.route, *segments)))

    def __repr__(self) -> str:
        return f"<grid.Subroute {self.route!r} of {self._conn!r}>"
