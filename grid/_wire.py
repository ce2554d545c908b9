"""The wire: one grid WebSocket, below its connection.

:class:`Wire` is what every kind of wire shares: the compiled core
(:class:`~grid._impl.ConnCore`) that parses and dispatches, the handshake's
first message, and the core's owner callbacks, handed on to the connection
once the handshake has named the peer.  :class:`SocketWire` is grid's own
socket (HTTP upgrade, then WebSocket frames); grid.integrations subclasses
:class:`Wire` for a server that does the framing itself.

A wire calls upward only through two declared interfaces: :class:`Acceptor`
(the handshake, owned by the Manager) and :class:`WireOwner` (the
connection the wire is attached to).

Hot path, top to bottom: ``SocketWire.buffer_updated`` -> ``ConnCore``
(frame parser, decode, dispatch) -> the connection's ``_on_message`` or a
handler or a caller's future.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any, ClassVar, Protocol

from grid import _http
from grid._consts import HANDSHAKE_MESSAGE_MAX, WS_BINARY, WS_CLOSE, WS_PING, WS_PONG, WS_TEXT
from grid._impl import ConnCore, decode_message, encode_frame, mask_key
from grid.errors import Disconnected, ProtocolError, Rejected
from grid.handlers import _current

__all__ = ["Acceptor", "WireOwner", "Wire", "SocketWire", "close_reply", "mask_key"]

log = logging.getLogger("grid.connection")


class Acceptor(Protocol):
    """What a wire asks of the node's acceptor (grid._handshake.Handshake)."""

    @property
    def handshake_timeout(self) -> float:
        """Seconds an accepted socket has for the upgrade and the Connect."""

    @property
    def max_message_size(self) -> int:
        """The largest WebSocket message a wire accepts."""

    @property
    def max_write_buffer(self) -> int:
        """Bytes a socket may buffer towards its peer before it is dropped."""

    @property
    def frame_budget(self) -> Any:
        """The node's budget for partly received messages (a ByteBudget)."""

    def track(self, wire: Wire) -> None:
        """An accepted socket without a connection yet (aborted on close)."""

    def untrack(self, wire: Wire) -> None:
        """The socket is gone or attached."""

    def on_upgrade(self, wire: SocketWire, head: _http.HttpHead, rest: bytes) -> None:
        """The HTTP upgrade request of an accepted socket has arrived."""

    def on_connect(self, wire: Wire, m: Any) -> None:
        """The first grid message of an accepted wire (the Connect)."""

    def reject(self, wire: Wire, reason: str) -> None:
        """Refuse the handshake with ``reason`` and close."""

    def peer_log(self, key: object, level: int, msg: str, *args: object,
                 exc: BaseException | None = None) -> None:
        """Log about a socket (``exc``: with its traceback), rate-limited per ``key``."""


class WireOwner(Protocol):
    """What a wire calls on the connection it is attached to."""

    remote: str

    def _is_live(self, wire: Wire) -> bool: ...
    def _wire_lost(self, wire: Wire, reason: str) -> None: ...
    def _on_message(self, m: Any) -> None: ...
    def _pause_writing(self) -> None: ...
    def _resume_writing(self) -> None: ...
    def _schedule_flush(self) -> None: ...
    def _flush(self) -> None: ...
    def _flush_early(self) -> None: ...
    def _handler_failed(self, m: Any, exc: BaseException) -> str: ...
    def _send_large(self, mux_id: int, seq: int, deadline_ms: int, handler: int, op: int,
                    flags: int, payload: bytes, subroute: bytes | None) -> None: ...


class Wire:
    """What every wire has: its core, its connection once attached, and the
    core's owner callbacks until then (the core calls the connection
    directly once attached).

    Subclasses provide ``transport`` (with ``close``, ``abort``,
    ``is_closing``), :meth:`write_frame`, :meth:`fail` and :meth:`close`.
    """

    #: False for a wire whose WebSocket framing another server does: the
    #: connection's flush hands it whole messages (``flush_messages``).
    framed: ClassVar[bool] = True

    def __init__(self, acceptor: Acceptor, accepting: bool) -> None:
        #: The node's acceptor (handshake and peer logs).
        self.acceptor = acceptor
        #: True on the accepting side of the grid connection.
        self.accepting = accepting
        #: True where grid writes client frames (the dialing side masks).
        self.mask = not accepting
        #: The connection once the handshake names the peer.
        self.conn: WireOwner | None = None
        self.transport: Any = None
        #: The ConnCore once the WebSocket is up.
        self.core: Any = None
        # Bytes received that the wire counted itself; its core counts what
        # the transport hands it directly (socket_read).
        self._bytes_read = 0
        loop = asyncio.get_running_loop()
        self._loop = loop
        #: True while the core holds received input for a later loop turn:
        #: reading is paused until it has been processed.
        self.input_paused = False
        #: Resolved once the wire is gone.
        self.closed: asyncio.Future[None] = loop.create_future()
        #: The first grid message (Connect, or the ConnectResponse).
        self.first_message: asyncio.Future[Any] = loop.create_future()
        #: Dialer: messages that arrive after the ConnectResponse but before
        #: the connection is attached (replayed at attach).
        self.early: list[Any] = []
        self._handshake_timer: asyncio.TimerHandle | None = None

    @property
    def bytes_in(self) -> int:
        """Bytes received (for statistics and the keepalive)."""
        core = self.core
        return self._bytes_read + (core.bytes_in if core is not None else 0)

    @bytes_in.setter
    def bytes_in(self, value: int) -> None:
        core = self.core
        self._bytes_read = value - (core.bytes_in if core is not None else 0)

    def new_core(self) -> Any:
        """The core of this wire, owned by the wire until attach.  Its parser
        holds what it receives within the node's budget; until the handshake
        is over, an accepting wire takes messages of HANDSHAKE_MESSAGE_MAX
        bytes at most (a Connect is far smaller, and nothing else may come
        before the reply)."""
        limit = self.acceptor.max_message_size
        core = ConnCore(self, self.accepting, limit, _current)  # the send limit stays the node's
        if self.accepting:
            core.parser.max_message_size = min(limit, HANDSHAKE_MESSAGE_MAX)
        core.parser.budget = self.acceptor.frame_budget
        return core

    def handshake_done(self) -> None:
        """The peer is known: messages up to the node's full limit from now on."""
        if self.core is not None and self.core.parser is not None:
            self.core.parser.max_message_size = self.acceptor.max_message_size

    def peer_name(self) -> str:
        """The peer's host string once known, else its address."""
        raise NotImplementedError

    def peer_ip(self) -> str:
        """The peer's address without the port (a rate-limiting key)."""
        raise NotImplementedError

    def write_frame(self, payload: bytes, opcode: int = WS_BINARY) -> None:
        """Write one whole message (the handshake's)."""
        raise NotImplementedError

    def fail(self, reason: str) -> None:
        """Drop this wire at once."""
        raise NotImplementedError

    def close(self) -> None:
        """Close this wire."""
        raise NotImplementedError

    def start_handshake_timer(self) -> None:
        """Accepting side: give the peer ``handshake_timeout`` seconds."""
        self._handshake_timer = asyncio.get_running_loop().call_later(
            self.acceptor.handshake_timeout, self._handshake_expired)
        self.acceptor.track(self)

    def stop_handshake_timer(self) -> None:
        """The handshake is over (or the wire gone)."""
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None

    def _handshake_expired(self) -> None:
        self._handshake_timer = None
        if self.conn is None:
            self.acceptor.peer_log((self.peer_ip(), 0), logging.INFO,
                                   "grid: handshake timeout from %s", self.peer_name())
            if self.transport is not None:
                self.transport.abort()

    # -- the core's owner callbacks while the wire owns it

    def _on_message(self, m: Any) -> None:
        """A message the core did not handle inline, before attach."""
        conn = self.conn
        if conn is not None:
            conn._on_message(m)
        elif not self.first_message.done():
            self.first_message.set_result(m)
            if self.accepting:
                self.acceptor.on_connect(self, m)
        elif not self.accepting:
            # The acceptor starts normal operation right after its
            # ConnectResponse (§5.3), so its first requests can come in the
            # same read, before the dial task has attached us.
            self.early.append(m)

    def _on_control(self, opcode: int, payload: bytes) -> None:
        """A WebSocket control frame (the subclass answers it)."""

    def _schedule_flush(self) -> None:
        if self.conn is not None:
            self.conn._schedule_flush()

    def _flush(self) -> None:
        if self.conn is not None:
            self.conn._flush()

    def _flush_early(self) -> None:
        if self.conn is not None:
            self.conn._flush_early()

    def _handler_failed(self, m: Any, exc: BaseException) -> str:
        if self.conn is not None:
            return self.conn._handler_failed(m, exc)
        return f"{type(exc).__name__}: {exc}"

    def _send_large(self, mux_id: int, seq: int, deadline_ms: int, handler: int, op: int,
                    flags: int, payload: bytes, subroute: bytes | None) -> None:
        if self.conn is not None:
            self.conn._send_large(mux_id, seq, deadline_ms, handler, op, flags, payload, subroute)

    # -- the core's reader callback: a fair share of the loop per connection

    def _input_waiting(self) -> None:
        """The core holds input for a later loop turn (its turn's budget is
        spent): stop reading and let it go on from the next turn, after the
        other connections' callbacks and reads."""
        if not self.input_paused:
            self.input_paused = True
            self._pause_reading()
        self._loop.call_soon(self._drain_input)

    def _drain_input(self) -> None:
        core = self.core
        if core is None or self.transport is None or self.transport.is_closing():
            return
        try:
            done = core.drain()
        except Exception as exc:
            self.input_failed(exc)
            return
        if done and self.input_paused:
            self.input_paused = False
            self._resume_reading()

    def _pause_reading(self) -> None:
        """Stop taking input from the peer."""

    def _resume_reading(self) -> None:
        """Take input from the peer again."""

    def input_failed(self, exc: Exception) -> None:
        """The core failed on the peer's input: reject a Connect that does
        not parse, fail the wire otherwise (see :meth:`read_failed`)."""
        if isinstance(exc, ProtocolError):
            connecting = self.accepting and self.conn is None and not self.first_message.done()
            if connecting:
                self.first_message.cancel()
            self.read_failed(exc, connecting)
        else:
            self.read_failed(exc, False)

    def _failed(self, exc: BaseException) -> asyncio.Future[Any]:
        fut = self.closed.get_loop().create_future()
        fut.set_exception(exc)
        return fut

    def _call(self, handler_id: int, payload: Any, timeout: float | None,
              subroute: bytes | None) -> asyncio.Future[Any]:
        # A core its connection has let go of starts no calls.
        return self._failed(Disconnected())

    def _schedule_sweep(self, delay: float) -> None:
        pass


    def read_failed(self, exc: Exception, connecting: bool) -> None:
        """What reading ``exc`` out of the peer's bytes costs: a Connect
        message that does not parse is rejected with a text the peer can read,
        any other protocol error or a bug fails this wire only."""
        if isinstance(exc, ProtocolError):
            if connecting:
                self.acceptor.reject(self, f"error parsing grid connect: {exc}")
            else:
                self.fail(f"protocol error: {exc}")
            return
        self.acceptor.peer_log((self.peer_ip(), "internal"), logging.ERROR,
                               "grid: unexpected error reading from %s", self.peer_name(),
                               exc=exc)
        self.fail(f"internal error: {exc!r}")


class SocketWire(Wire, asyncio.BufferedProtocol):
    """One socket: HTTP upgrade, then WebSocket frames carrying grid messages."""

    def __init__(self, acceptor: Acceptor, accepting: bool) -> None:
        super().__init__(acceptor, accepting)
        self.transport: asyncio.Transport | None = None
        self._head = bytearray()
        self._head_chunk = bytearray(4096)
        self._head_future: asyncio.Future[_http.HttpHead] | None = None
        self._ws_key = ""
        self._body_wanted = -1  # dialer: bytes of an error body still to read
        self._error_head: _http.HttpHead | None = None
        self._write_paused = False  # the transport asked for no more writes
        self._pong: bytes | None = None  # the answer to the latest ping, held while paused
        #: What must live as long as the socket: the asyncio streams an
        #: adopted connection came in on (a StreamWriter closes its transport
        #: when it is collected).
        self.holds: object = None

    # -- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        if self.accepting:
            self.start_handshake_timer()

    def get_buffer(self, sizehint: int) -> memoryview:
        if self.core is not None:
            return self.core.get_buffer(sizehint)  # type: ignore[no-any-return]
        return memoryview(self._head_chunk)

    def buffer_updated(self, nbytes: int) -> None:
        self._bytes_read += nbytes
        try:
            if self.core is not None:
                self.core.buffer_updated(nbytes)
            else:
                self._on_http(self._head_chunk[:nbytes])
        except ProtocolError as exc:
            if self.accepting and self.core is None:
                self._refuse_http(exc)  # still HTTP: never answer with a WebSocket frame
                return
            self.input_failed(exc)
        except Exception as exc:
            self.read_failed(exc, False)

    def _pause_reading(self) -> None:
        # The peer's further bytes wait in the kernel; once its buffers fill,
        # TCP flow control slows the peer itself.
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def pause_writing(self) -> None:
        self._write_paused = True
        conn = self.conn
        if conn is not None and conn._is_live(self):
            conn._pause_writing()

    def resume_writing(self) -> None:
        self._write_paused = False
        pong, self._pong = self._pong, None
        if pong is not None:
            self.write_frame(pong, WS_PONG)
        conn = self.conn
        if conn is not None and conn._is_live(self):
            conn._resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.stop_handshake_timer()
        self.acceptor.untrack(self)
        # What the parser holds (a large frame, fragments) goes now, whoever
        # still refers to this wire.
        parser = self.core.parser if self.core is not None else None
        if parser is not None:
            parser.close()
        self._pong = None
        reason = f"connection lost: {exc}" if exc else "connection closed by peer"
        for fut in (self._head_future, self.first_message):
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

    def peer_ip(self) -> str:
        peer = self.transport.get_extra_info("peername") if self.transport else None
        return str(peer[0]) if isinstance(peer, tuple) and peer else str(peer)

    def peer_name(self) -> str:
        if self.conn is not None:
            return self.conn.remote
        peer = self.transport.get_extra_info("peername") if self.transport else None
        return str(peer)

    def fail(self, reason: str) -> None:
        """Drop this socket at once (no close handshake, as Go does)."""
        if self.conn is not None:
            self.conn._wire_lost(self, reason)
        else:
            self.acceptor.peer_log((self.peer_ip(), 0), logging.INFO,
                                   "grid: closing connection from %s: %s", self.peer_name(),
                                   reason)
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def write(self, data: bytes) -> None:
        """Write bytes as they are (the HTTP phase)."""
        assert self.transport is not None
        self.transport.write(data)

    def write_frame(self, payload: bytes, opcode: int = WS_BINARY) -> None:
        """Write one whole message or control frame; past ``max_write_buffer``
        bytes buffered the peer is not reading and the socket is dropped."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(encode_frame(payload, opcode, mask_key() if self.mask else None))
        limit = self.acceptor.max_write_buffer
        if transport.get_write_buffer_size() > limit:
            self.fail(f"send buffer over {limit} bytes: peer is not reading")

    def start_websocket(self, leftover: bytes) -> None:
        """The upgrade is done: frames from here on (``leftover`` first)."""
        self.core = core = self.new_core()
        # From here on every read goes to the core: the transport calls the
        # core's methods itself (set_protocol makes it look them up again).
        self.get_buffer = core.get_buffer  # type: ignore[method-assign]
        self.buffer_updated = core.socket_read  # type: ignore[method-assign]
        if self.transport is not None:
            self.transport.set_protocol(self)
        if leftover:
            core.feed(leftover)

    def _refuse_http(self, exc: ProtocolError) -> None:
        """A malformed or oversized request head: an HTTP error, then close."""
        status = 431 if len(self._head) > _http.MAX_HEADER_BYTES else 400
        self._head = bytearray()
        self.acceptor.peer_log((self.peer_ip(), 0), logging.INFO,
                               "grid: refused request from %s: HTTP %d: %s", self.peer_name(),
                               status, exc)
        if self.transport is not None:
            self.transport.write(_http.error_response(status, f"grid: {exc}"))
            self.transport.close()

    # -- HTTP phase

    def request_upgrade(self, request: bytes, ws_key: str) -> asyncio.Future[_http.HttpHead]:
        """Dialing side: send the upgrade request; the future resolves with
        the 101 response's head once the WebSocket is up (Rejected for an
        HTTP error response)."""
        self._head_future = asyncio.get_running_loop().create_future()
        self._ws_key = ws_key
        self.write(request)
        return self._head_future

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
        if self.accepting:
            self.acceptor.on_upgrade(self, head, rest)
            return
        assert self._head_future is not None
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
        if not self._head_future.done():
            self._head_future.set_result(head)

    def _reject_http(self) -> None:
        head = self._error_head
        assert head is not None and self._head_future is not None
        body = bytes(self._head[: self._body_wanted]).decode("utf-8", "replace").strip()
        status = " ".join(head.start[1:])
        self._body_wanted = -1
        if not self._head_future.done():
            self._head_future.set_exception(
                Rejected(f"HTTP {status}: {body}" if body else f"HTTP {status}"))
        if self.transport is not None:
            self.transport.close()

    # -- WebSocket control frames (from the core)

    def _on_control(self, opcode: int, payload: bytes) -> None:
        if opcode == WS_PING:
            if self._write_paused:
                # The peer is not reading: keep only the answer to its latest
                # ping (RFC 6455 §5.5.3), sent once writes resume.
                self._pong = payload
            else:
                self.write_frame(payload, WS_PONG)
        elif opcode == WS_CLOSE:
            # Answer with the status code, then tear down (§1.5).
            self.write_frame(close_reply(payload), WS_CLOSE)
            self.fail("peer sent a WebSocket close frame")
        elif opcode == WS_TEXT:
            if self.accepting and self.conn is None and not self.first_message.done():
                self._on_message(decode_message(payload))  # Go accepts a text handshake
        # pongs, and text after the handshake, are ignored


def _valid_close_code(code: int) -> bool:
    """Whether ``code`` may appear in a close frame (RFC 6455 section 7.4): the
    defined codes an endpoint may send, and the registered (3000-3999) and
    private (4000-4999) ranges."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


def close_reply(payload: bytes) -> bytes:
    """The payload of the close frame answering a peer's close ``payload``:
    its status code echoed, nothing for an empty one, and 1002 (protocol
    error) for a one-byte payload, a code no endpoint may send, or a reason
    that is not UTF-8 (RFC 6455 sections 5.5.1, 7.1.5 and 7.4)."""
    if not payload:
        return b""
    if len(payload) >= 2 and _valid_close_code(int.from_bytes(payload[:2], "big")):
        try:
            payload[2:].decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            return payload[:2]
    return _CLOSE_PROTOCOL_ERROR


_CLOSE_PROTOCOL_ERROR = (1002).to_bytes(2, "big")
