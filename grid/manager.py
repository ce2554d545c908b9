"""The Manager: one per node (per grid), owning the server socket, one
:class:`~grid.connection.Connection` per remote host and the handlers."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import ssl as _ssl
import time
import os
import uuid
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from grid import _http
from grid._consts import (
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_REQUEST_TIMEOUT,
    DIAL_TIMEOUT,
    PING_INTERVAL,
    STREAM_PING_INTERVAL,
    ROUTE_PATH,
)
from grid._checks import check_manager
from grid._handshake import Handshake
from grid._impl import local_dials
from grid._link import HeldBytes
from grid._wire import SocketWire
from grid.connection import Connection, ConnectionStats, State
from grid.errors import GridError, UsedAfterFork
from grid.handlers import HandlerRegistry, SingleHandlerFn
from grid.stream import StreamHandler
from grid.trace import Tracer, TracerSet

__all__ = ["Manager", "ManagerStats"]

log = logging.getLogger("grid.manager")

# Every Manager of this process, so a forked child can disown them all.
_live_managers: weakref.WeakSet[Manager] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # The child shares the parent's sockets: it must never write to or close
    # them.  Detach every connection so any use fails with UsedAfterFork.
    for mgr in list(_live_managers):
        mgr._forked = True
        for c in mgr._conns.values():
            c._disown()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


@dataclass
class ManagerStats:
    """A snapshot of a manager and all its connections."""

    local: str
    connections: list[ConnectionStats] = field(default_factory=list)

    @property
    def connected(self) -> int:
        """How many connections are up."""
        return sum(1 for c in self.connections if c.state is State.CONNECTED)

    @property
    def outstanding_requests(self) -> int:
        """Requests in flight over all connections."""
        return sum(c.outstanding_requests for c in self.connections)

    @property
    def outstanding_streams(self) -> int:
        """Streams open over all connections (both directions)."""
        return sum(c.outstanding_streams for c in self.connections)

    @property
    def running_handlers(self) -> int:
        """``async`` single-request handlers running for all peers."""
        return sum(c.running_handlers for c in self.connections)

    @property
    def queued_requests(self) -> int:
        """Requests from all peers waiting for a handler slot."""
        return sum(c.queued_requests for c in self.connections)


class Manager:
    """One node of a grid: serves its own host string and connects to every
    other host in ``hosts``.

    :param local: this node's host string, e.g. ``"http://127.0.0.1:9001"``;
        must appear exactly once in ``hosts``.
    :param hosts: every node of the grid, this one included, spelled exactly
        as every node spells them (the strings decide who dials, §1.2).
    :param auth_fn: returns the token this node presents when it dials.
    :param validate_token: called with each incoming token; raises to reject.
        ``None`` accepts any token.
    :param route_path: the HTTP path of the grid (default ``/minio/grid/v1``).
    :param ssl: an ``ssl.SSLContext`` used to serve ``https`` and, unless
        ``client_ssl`` is given, to dial ``https`` peers.
    :param client_ssl: the context for dialing ``https`` peers.
    :param max_message_size: largest WebSocket message accepted (bytes, at
        least 1024); a payload this node sends may be at most this less 67
        bytes of envelope (larger ones raise :class:`grid.MessageTooLarge`).
    :param send_queue_size: messages a connection queues before callers wait.
    :param max_write_buffer: bytes buffered towards a peer before the
        connection is dropped as not reading (everything written counts:
        messages, WebSocket pongs and close frames, before the handshake too).
    :param write_timeout: seconds writes may stay paused before the
        connection is dropped.
    :param handshake_timeout: seconds an incoming socket has to complete the
        HTTP upgrade and the grid handshake.
    :param ping_interval: connection ping period; no pong for twice this
        long drops the connection (§9).
    :param dial_timeout: TCP + TLS + upgrade bound for one dial attempt.
    :param default_timeout: deadline of a request given no ``timeout``.
    :param retry_base: the dialer retries ``retry_base * (1 + random()) / 2``
        seconds after the previous attempt started (Go: 2 s).
    :param stream_ping_interval: callers ping long streams this often and
        end them after two silent intervals; callees end streams not pinged
        for four (§8.7; Go: 15 s).
    :param max_streams: streams a peer may have open on this node at once;
        past it ConnectMux is refused with ``too many open streams``.
    :param max_running_handlers: ``async`` single-request handlers that may
        run at once for one peer (sync handlers run inline, one at a time).
        Requests past it wait, in arrival order, for a running one to end.
    :param max_queued_requests: requests that may wait so per peer; past it
        a request is answered at once with the error
        ``grid: too many requests in progress`` (a :class:`grid.RemoteError`
        for the caller).  A waiting request whose deadline passes is dropped.
    :param max_request_bytes: payload bytes of the ``async`` requests one
        peer may have running and waiting at once; a request that would go
        past it is answered at once with the error
        ``grid: too many request bytes in progress`` (a
        :class:`grid.RemoteError` for the caller), unless nothing is held for
        that peer (a payload larger than the cap runs alone).
    :param max_total_request_bytes: the same bound for all peers together;
        past it a request is refused the same way unless nothing is held.
    :param max_partial_bytes: bytes that all of this node's sockets together
        may hold of WebSocket messages they have received only in part (a
        large frame counts its announced length once its header is in;
        below 256 KiB per socket nothing is counted).  The socket whose
        frame would pass it is dropped (a ``ProtocolError``); the memory of
        a closed socket is released as it closes.  Before its handshake an
        accepted socket may send messages of 64 KiB at most.
    :param max_pending_handshakes: upgraded sockets that may wait for their
        grid handshake at once; a further upgrade request is answered with
        HTTP 503 and closed.
    :raises TypeError: an argument of the wrong type (``hosts`` given as one
        string, ``auth_fn`` not callable, ``timeout="1"``-like options).
    :raises ValueError: a host string that is not ``scheme://host:port``, a
        duplicate host, ``local`` not in ``hosts``, an option out of range,
        or TLS settings that cannot work (https peers to dial without a
        client context or with a server-only one, a client-only ``ssl=``
        for an https ``local``).
    """

    def __init__(
        self,
        local: str,
        hosts: Sequence[str],
        auth_fn: Callable[[], str],
        validate_token: Callable[[str], Any] | None = None,
        route_path: str = ROUTE_PATH,
        ssl: _ssl.SSLContext | None = None,
        *,
        client_ssl: _ssl.SSLContext | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        send_queue_size: int = 65535,
        max_write_buffer: int = 256 * 1024 * 1024,
        write_timeout: float = 10.0,
        handshake_timeout: float = 10.0,
        ping_interval: float = PING_INTERVAL,
        dial_timeout: float = DIAL_TIMEOUT,
        default_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        retry_base: float = 2.0,
        max_streams: int = 10000,
        stream_ping_interval: float = STREAM_PING_INTERVAL,
        max_running_handlers: int = 1024,
        max_queued_requests: int = 16384,
        max_request_bytes: int = 64 * 1024 * 1024,
        max_total_request_bytes: int = 256 * 1024 * 1024,
        max_partial_bytes: int = 256 * 1024 * 1024,
        max_pending_handshakes: int = 256,
    ) -> None:
        checked = check_manager(
            local, hosts, auth_fn, validate_token, route_path, ssl, client_ssl, local_dials,
            max_message_size=max_message_size, send_queue_size=send_queue_size,
            max_write_buffer=max_write_buffer, write_timeout=write_timeout,
            handshake_timeout=handshake_timeout, ping_interval=ping_interval,
            dial_timeout=dial_timeout, default_timeout=default_timeout, retry_base=retry_base,
            max_streams=max_streams, stream_ping_interval=stream_ping_interval,
            max_running_handlers=max_running_handlers, max_queued_requests=max_queued_requests,
            max_request_bytes=max_request_bytes, max_total_request_bytes=max_total_request_bytes,
            max_partial_bytes=max_partial_bytes, max_pending_handshakes=max_pending_handshakes)
        #: This node's host string.
        self.local = local
        #: Every host of the grid, this one included.
        self.hosts = checked
        #: This process's instance id for this grid (16 bytes, §5).
        self.instance_id = uuid.uuid4().bytes
        self.route_path = route_path
        self.max_message_size = max_message_size
        self.send_queue_size = send_queue_size
        self.max_write_buffer = max_write_buffer
        self.write_timeout = write_timeout
        self.handshake_timeout = handshake_timeout
        self.ping_interval = ping_interval
        self.dial_timeout = dial_timeout
        self.default_timeout = default_timeout
        self.retry_base = retry_base
        self.max_streams = max_streams
        self.stream_ping_interval = stream_ping_interval
        self.max_running_handlers = max_running_handlers
        self.max_queued_requests = max_queued_requests
        self.max_request_bytes = max_request_bytes
        self.max_total_request_bytes = max_total_request_bytes
        self._held_requests = HeldBytes()  # bytes held for requests, all peers
        self.max_pending_handshakes = max_pending_handshakes
        self._pid = os.getpid()  # a Manager belongs to the process that made it
        self._forked = False
        self._draining = False  # close(grace=...) in progress: refuse new calls
        self._auth_fn = auth_fn
        self._handshake = Handshake(self, validate_token, max_partial_bytes)  # the acceptor
        self._ssl = ssl
        self._client_ssl = client_ssl if client_ssl is not None else ssl
        self._registry = HandlerRegistry()
        self._conns: dict[str, Connection] = {}
        self._server: asyncio.AbstractServer | None = None
        self._tracers = TracerSet()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = False
        self._closed = False
        self._encode_pool: concurrent.futures.ThreadPoolExecutor | None = None
        _live_managers.add(self)

    def _fork_error(self) -> UsedAfterFork | None:
        """The error for using this manager here, if this is a forked child."""
        if self._forked or self._pid != os.getpid():
            return UsedAfterFork(
                f"grid: this Manager belongs to process {self._pid}; it cannot be used in "
                f"forked process {os.getpid()} (create a new Manager in each process)")
        return None

    def _check_process(self) -> None:
        err = self._fork_error()
        if err is not None:
            raise err

    # -- registration

    def register_single(self, handler_id: int, handler: SingleHandlerFn, *,
                        subroute: str = "") -> None:
        """Register a single-request handler under ``handler_id`` (1..255) and,
        optionally, a static ``subroute`` such as ``"disk/1"`` (callers reach
        it through ``connection.subroute("disk/1")``).

        A plain function runs inline on the event loop and must not block; an
        ``async def`` runs as a task.  Raise :class:`grid.RemoteError` to send
        an error text; any other exception is logged and sent as
        ``"<Type>: <text>"``.  May be called before or after :meth:`start`.
        """
        self._check_process()
        self._registry.add_single(handler_id, handler, subroute or None)

    def register_stream(self, handler_id: int, handler: StreamHandler) -> None:
        """Register a :class:`grid.StreamHandler` under ``handler_id`` (1..255)
        and the handler's subroute.  Register it on every node that opens such
        streams too: callers read the capacities from their own registration."""
        self._check_process()
        if not isinstance(handler, StreamHandler):
            raise TypeError("register_stream takes a grid.StreamHandler")
        self._registry.add_stream(handler_id, handler, handler.subroute or None)

    # -- lifecycle

    async def start(self, serve: bool = True, listen: tuple[str, int] | None = None, *,
                    dial: bool = True) -> None:
        """Listen on this node's host:port (unless ``serve`` is False, for a
        manager embedded in another server) and start dialing the peers this
        node dials.  ``listen=(host, port)`` binds elsewhere than the host
        string says, e.g. ``("0.0.0.0", 9000)`` or behind a proxy.

        ``dial=False`` only listens; :meth:`start_dialing` then starts the
        dialers (a test grid lets every node listen before any dials, so no
        first dial is refused).
        """
        self._check_process()
        if self._closed:
            raise GridError("grid: manager is closed (make a new Manager to start again)")
        if self._started:
            raise GridError("manager already started")
        self._started = True
        self._loop = asyncio.get_running_loop()
        for h in self.hosts:
            if h != self.local:
                self._conns[h] = c = Connection(self, h)
                if self._tracers.fns:
                    c._set_tracing(True)
        if serve:
            addr = _http.parse_host(self.local)
            if addr.tls and self._ssl is None:
                raise GridError(f"{self.local} is https but no ssl context was given")
            bind_host, bind_port = listen if listen is not None else (addr.host, addr.port)
            self._server = await self._loop.create_server(
                lambda: SocketWire(self._handshake, accepting=True), bind_host, bind_port,
                ssl=self._ssl if addr.tls else None, reuse_address=True, backlog=1024,
            )
        if dial:
            self.start_dialing()

    def start_dialing(self) -> None:
        """Start dialing the peers this node dials (after ``start(dial=False)``;
        :meth:`start` does it by default).  Calling it again does nothing."""
        self._check_process()
        if not self._started:
            raise GridError("start the manager before start_dialing()")
        for c in self._conns.values():
            c._start()

    async def close(self, grace: float | None = None) -> None:
        """Stop serving, drop every connection and fail what is in flight.

        With ``grace`` (seconds), shut down gracefully first: stop accepting
        sockets, answer new incoming calls and streams with the error
        ``grid: server is shutting down``, and wait up to ``grace`` seconds
        for the calls and streams already in flight (both those this node
        serves and those it made) to finish and their replies to be sent.
        Then disconnect: callers elsewhere see :class:`grid.Disconnected`
        only for calls that did not finish.

        In a process forked from the one that made the manager, ``close``
        returns at once and touches nothing (the sockets are the parent's).
        """
        if self._closed:
            return
        if self._fork_error() is not None:
            self._closed = True
            return
        if self._server is not None:
            self._server.close()
        if grace is not None and grace > 0 and self._started:
            await self._drain(grace)
        self._closed = True
        for c in self._conns.values():  # leaving: a peer closing its socket is expected
            c._shutting_down()
        for c in self._conns.values():
            await c._close()
        self._handshake.abort_pending()
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            except (asyncio.TimeoutError, Exception):
                pass
        await asyncio.sleep(0)  # let connection_lost callbacks run
        if self._encode_pool is not None:
            self._encode_pool.shutdown(wait=False)
            self._encode_pool = None

    def _encoder(self) -> concurrent.futures.ThreadPoolExecutor:
        """The thread that frames large messages off the event loop (one, so
        the frames of all connections are built one at a time, in order)."""
        if self._encode_pool is None:
            self._encode_pool = concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix="grid-encode")
        return self._encode_pool

    async def _drain(self, grace: float) -> None:
        """Refuse new calls, then wait (at most ``grace`` s) for in-flight work."""
        self._draining = True
        for c in self._conns.values():
            c._refuse_inline()  # sync handlers too must see the refusal
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while True:
            busy: set[asyncio.Future[Any]] = set()
            for c in self._conns.values():
                busy.update(c._in_flight())
            remaining = deadline - loop.time()
            if not busy or remaining <= 0:
                break
            await asyncio.wait(busy, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        for c in self._conns.values():
            c._flush()  # the last replies leave before the sockets close

    @property
    def draining(self) -> bool:
        """True while :meth:`close` waits out its grace period."""
        return self._draining

    async def __aenter__(self) -> Manager:
        """``async with Manager(...) as mgr:`` starts the manager (:meth:`start`
        with its defaults: serve and dial) and closes it (:meth:`close`, no
        grace) when the block ends, also on an exception."""
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Close the manager at the end of ``async with``."""
        await self.close()

    @property
    def max_partial_bytes(self) -> int:
        """The most bytes all sockets may hold of partly received messages."""
        return int(self._handshake.frame_budget.limit)

    def connection(self, host: str) -> Connection:
        """The connection to the peer ``host`` (spelled as in ``hosts``).

        :raises grid.GridError: the manager is not started yet, or is closed.
        :raises KeyError: ``host`` is not a peer of this node: this node's own
            host string, or a string not in ``hosts`` (the message lists the
            peers).
        """
        conn = self._conns.get(host)
        if conn is not None and not self._closed:
            return conn
        if self._closed:
            raise GridError(f"grid: manager {self.local} is closed; it has no connections")
        if not self._started:
            raise GridError(f"grid: manager {self.local} is not started; "
                            "await start() before asking for a connection")
        if host == self.local:
            raise KeyError(f"{host!r} is this node itself, not a peer; "
                           f"its peers are {sorted(self._conns)}")
        raise KeyError(f"{host!r} is not a peer of {self.local}; its peers are "
                       f"{sorted(self._conns)} (host strings match byte for byte)")

    @property
    def connections(self) -> Mapping[str, Connection]:
        """Every peer connection, keyed by host string."""
        return self._conns

    def stats(self) -> ManagerStats:
        """A snapshot of every connection's counters."""
        return ManagerStats(self.local, [c.stats() for c in self._conns.values()])

    # -- tracing

    def add_tracer(self, tracer: Tracer) -> None:
        """Call ``tracer`` with a :class:`grid.CallTrace` for every call this node
        makes or serves, once it has ended (see :mod:`grid.trace`).

        ``tracer`` runs on the event loop, synchronously: keep it short.  If it
        raises, the error is logged once and the call is unaffected.  May be
        called before or after :meth:`start`; adding the same function twice
        calls it twice.  While any tracer is installed, requests for sync
        handlers run through Python rather than inline in the compiled core.
        """
        if self._tracers.add(tracer):
            for c in self._conns.values():
                c._set_tracing(True)

    def remove_tracer(self, tracer: Tracer) -> None:
        """Remove a tracer added with :meth:`add_tracer` (ValueError if it is
        not installed).  Removing the last one restores the untraced paths."""
        if self._tracers.remove(tracer):
            for c in self._conns.values():
                c._set_tracing(False)

    @property
    def tracers(self) -> tuple[Tracer, ...]:
        """The installed tracers, in the order they are called."""
        return self._tracers.fns

    # -- embedding in another HTTP server

    def check_upgrade(self, method: str, path: str, headers: Mapping[str, str]) -> tuple[int, bytes]:
        """Validate an HTTP upgrade request received by another server.

        Returns ``(101, response)`` to accept — write ``response`` to the
        client, then pass the transport to :meth:`adopt` — or ``(status,
        response)`` with an error response to write before closing.
        """
        head = _http.HttpHead([method, path, "HTTP/1.1"],
                              {k.lower(): v for k, v in headers.items()})
        return self._handshake.check_upgrade(head)

    def adopt(self, transport: asyncio.Transport, initial: bytes = b"") -> None:
        """Take over a transport whose upgrade was accepted with
        :meth:`check_upgrade` (the 101 already written); ``initial`` holds any
        bytes the other server read past the HTTP head."""
        self._adopt(transport, initial, None)

    def _adopt(self, transport: asyncio.Transport, initial: bytes, holds: object) -> None:
        self._check_process()
        if self._loop is None:
            raise GridError("start the manager (serve=False) before adopting connections")
        wire = SocketWire(self._handshake, accepting=True)
        wire.holds = holds
        transport.set_protocol(wire)
        wire.connection_made(transport)
        if not self._handshake.admit(wire):
            transport.abort()  # the 101 is out: nothing else can be said
            return
        wire.start_websocket(initial)

    async def adopt_stream(self, reader: asyncio.StreamReader,
                           writer: asyncio.StreamWriter) -> None:
        """Take over an asyncio-streams connection whose upgrade was accepted
        with :meth:`check_upgrade` (the 101 already written): the form of
        :meth:`adopt` for servers built on :func:`asyncio.start_server`.

        Whatever ``reader`` holds past the HTTP head goes to the grid
        connection first; the streams are not to be used afterwards (the
        connection keeps them, so that collecting them cannot close the socket).
        """
        transport = cast(asyncio.Transport, writer.transport)  # uvloop's does not subclass it
        transport.pause_reading()  # nothing more reaches the reader
        reader.feed_eof()
        rest = await reader.read()  # what it buffered; returns at the EOF just fed
        self._adopt(transport, rest, (reader, writer))
        transport.resume_reading()

    # -- what connections ask of their node

    def _token(self) -> str:
        return self._auth_fn()

    def _local_dials(self, remote: str) -> bool:
        return bool(local_dials(self.local, remote))
