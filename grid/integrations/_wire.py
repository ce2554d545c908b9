"""The message-level wire shared by the server integrations.

:class:`MessageWire` plays :class:`grid._wire.SocketWire`'s role for a peer
whose WebSocket framing another server (aiohttp, an ASGI server) does: that
server hands over whole binary messages and takes whole messages to send, so
the grid never sees a frame header.  It is always the accepting side (the
dialing side of a grid connection is grid's own socket code).

Data path::

    server receive loop -> on_binary(payload) -> ConnCore.feed_message -> dispatch
    connection flush -> flush_messages(core) -> ConnCore.take_messages
        -> bounded output queue -> send loop task -> server send(payload)

Back-pressure: the output queue counts bytes.  Above ``high_water`` the
connection pauses its callers (as a socket's ``pause_writing`` does for the
embedded server); below ``low_water`` it resumes them; the server's own send
awaits its transport's drain.  Above the manager's ``max_write_buffer``, or
after ``write_timeout`` seconds paused, the connection is dropped as not
reading — the same limits as the embedded server's.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from grid._consts import WS_BINARY
from grid._impl import decode_message
from grid._wire import Wire
from grid.errors import ProtocolError

if TYPE_CHECKING:
    from grid.manager import Manager

__all__ = ["MessageWire", "SendFn", "CloseFn", "DEFAULT_HIGH_WATER", "DEFAULT_LOW_WATER",
           "error_parts"]

log = logging.getLogger("grid.integrations")

#: Sends one whole binary WebSocket message.
SendFn = Callable[[bytes], Awaitable[None]]
#: Closes the WebSocket with a close code.
CloseFn = Callable[[int], Awaitable[None]]

#: Bytes queued towards a peer before its callers are paused.
DEFAULT_HIGH_WATER = 1024 * 1024
#: Bytes queued below which paused callers resume.
DEFAULT_LOW_WATER = 256 * 1024

_CLOSE_NORMAL = 1000
_CLOSE_ERROR = 1011


def error_parts(response: bytes) -> tuple[list[tuple[str, str]], bytes]:
    """Split a raw HTTP error response from :meth:`grid.Manager.check_upgrade`
    into its headers (without Connection, which is the server's business)
    and body."""
    head, _, body = response.partition(b"\r\n\r\n")
    headers = []
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.lower() != "connection":
            headers.append((name, value.strip()))
    return headers, body


class MessageWire(Wire):
    """One accepted grid WebSocket whose framing another server does.

    :param manager: the node's manager, started with ``start(serve=False)``.
    :param send: sends one binary WebSocket message (awaits the server's
        flow control).
    :param close: closes the WebSocket with the given code.
    :param peer: a printable name of the remote address, for logs.
    :param high_water: queued output bytes that pause the connection's callers.
    :param low_water: queued output bytes below which they resume.

    The server-side adapter calls :meth:`on_binary` / :meth:`on_text` for
    each received message and :meth:`lost` once the WebSocket is gone.
    """

    #: The connection's flush hands this wire whole messages (flush_messages).
    framed = False

    def __init__(self, manager: Manager, send: SendFn, close: CloseFn, peer: str, *,
                 high_water: int = DEFAULT_HIGH_WATER,
                 low_water: int = DEFAULT_LOW_WATER) -> None:
        if not 0 <= low_water <= high_water:
            raise ValueError("need 0 <= low_water <= high_water")
        super().__init__(manager._handshake, accepting=True)
        self.mask = False  # the server, not grid, writes (unmasked) frames
        loop = asyncio.get_running_loop()
        self._loop = loop
        self.manager = manager
        #: What the connection treats as this wire's transport: this object
        #: (close, abort, is_closing).
        self.transport: MessageWire | None = self
        self.core = self.new_core()
        self._peer = peer
        self._send = send
        self._close = close
        self._out: collections.deque[bytes] = collections.deque()
        self._out_bytes = 0
        self._high = high_water
        self._low = low_water
        self._paused = False
        self._wake: asyncio.Future[None] | None = None
        self._readable: asyncio.Future[None] | None = None  # awaited while input_paused
        self._got_first = False  # the grid Connect message has arrived
        self._closing = False  # no more output is accepted
        self._aborted = False
        self._gone = False  # the server reported the WebSocket closed
        self._close_sent = False
        self._close_timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sender = loop.create_task(self._send_loop())
        self.start_handshake_timer()  # aborted by Manager.close until attached

    # -- receiving (called by the server adapter)

    async def readable(self) -> None:
        """Return once the wire takes input again: the adapter awaits this
        after each message, so that while the core holds input for a later
        loop turn the server stops reading this peer (its own flow control
        then pushes back on the peer)."""
        while self.input_paused and not self._closing:
            if self._readable is None:
                self._readable = self._loop.create_future()
            await self._readable

    def _resume_reading(self) -> None:
        fut, self._readable = self._readable, None
        if fut is not None and not fut.done():
            fut.set_result(None)

    def on_binary(self, payload: bytes) -> None:
        """One whole binary WebSocket message from the peer."""
        if self._closing:
            return
        self._bytes_read += len(payload)
        try:
            if len(payload) > self.manager.max_message_size:
                raise ProtocolError(
                    f"message of {len(payload)} bytes over the {self.manager.max_message_size} limit")
            self.core.feed_message(payload)
        except ProtocolError as exc:
            connecting = self.conn is None and not self._got_first
            if connecting:
                self._got_first = True
            self.read_failed(exc, connecting)
        except Exception as exc:
            self.read_failed(exc, False)

    def on_text(self, text: str) -> None:
        """One text message: Go accepts a text handshake, so a text Connect
        is honoured; text after the handshake is ignored (as by SocketWire)."""
        if self._closing or self.conn is not None or self._got_first:
            return
        data = text.encode("utf-8", "surrogateescape")
        self._bytes_read += len(data)
        try:
            m = decode_message(data)
        except ProtocolError as exc:
            self._got_first = True
            self.acceptor.reject(self, f"error parsing grid connect: {exc}")
            return
        self._on_message(m)

    def lost(self, reason: str) -> None:
        """The server reports the WebSocket gone (closed by either side)."""
        if self.closed.done():
            return
        self._gone = True
        self._closing = True
        self._resume_reading()  # an adapter waiting in readable() goes on, to its end
        self.stop_handshake_timer()
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        self.acceptor.untrack(self)
        if self.conn is not None:
            self.conn._wire_lost(self, reason)
        self._out.clear()
        self._out_bytes = 0
        self._sender.cancel()
        self.transport = None
        self.closed.set_result(None)

    # -- callbacks from the core and the acceptor

    def _on_message(self, m: Any) -> None:
        conn = self.conn
        if conn is not None:
            conn._on_message(m)
        elif not self._got_first:
            self._got_first = True
            self.acceptor.on_connect(self, m)
        # else: after a rejection or a replacement: dropped

    def _on_control(self, opcode: int, payload: bytes) -> None:
        """The server answers WebSocket control frames itself."""

    def peer_name(self) -> str:
        """The peer's host string once known, else the server's peer name."""
        return self.conn.remote if self.conn is not None else self._peer

    def peer_ip(self) -> str:
        """The peer's address without the port."""
        return self._peer.rsplit(":", 1)[0] if ":" in self._peer else self._peer

    def _handshake_expired(self) -> None:
        self._handshake_timer = None
        if self.conn is None:
            log.info("grid: handshake timeout from %s", self.peer_name())
            self.abort()

    # -- sending

    def write_frame(self, payload: bytes, opcode: int = WS_BINARY) -> None:
        """Queue one whole message (the handshake replies); control opcodes
        are the server's business and ignored."""
        if opcode != WS_BINARY or self._closing:
            return
        self._out.append(payload)
        self._queued(len(payload))

    def flush_messages(self, core: Any) -> None:
        """The connection's flush for this wire: queue what the core has batched."""
        before = core.bytes_out
        msgs = core.take_messages()
        if msgs is None or self._closing:
            return
        self._out.extend(msgs)
        self._queued(core.bytes_out - before)

    def _queued(self, n: int) -> None:
        self._out_bytes += n
        wake = self._wake
        if wake is not None:
            self._wake = None
            if not wake.done():
                wake.set_result(None)
        if self._out_bytes > self._high and not self._paused:
            self._paused = True
            conn = self.conn
            if conn is not None and conn._is_live(self):
                conn._pause_writing()
        limit = self.manager.max_write_buffer
        if self._out_bytes > limit:
            self.fail(f"send buffer over {limit} bytes: peer is not reading")

    async def _send_loop(self) -> None:
        out = self._out
        send = self._send
        try:
            while True:
                if not out:
                    if self._closing:
                        break
                    self._wake = self._loop.create_future()
                    await self._wake
                    continue
                payload = out.popleft()
                await send(payload)
                self._out_bytes -= len(payload)
                if self._paused and self._out_bytes <= self._low:
                    self._paused = False
                    conn = self.conn
                    if conn is not None and conn._is_live(self):
                        conn._resume_writing()
        except asyncio.CancelledError:
            return  # aborted or lost: whoever cancelled closes
        except Exception as exc:  # the server could not send: the peer is gone
            if not self._closing:
                self.fail(f"send failed: {exc!r}")
            return
        await self._close_once(_CLOSE_NORMAL)  # graceful: everything queued has left

    async def _close_once(self, code: int) -> None:
        if self._close_sent or self._gone:
            return
        self._close_sent = True
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        try:
            await self._close(code)
        except Exception as exc:  # already closed by the peer or the server
            log.debug("grid: closing the WebSocket of %s: %r", self.peer_name(), exc)

    # -- closing (the transport surface Manager and Connection use)

    def is_closing(self) -> bool:
        """True once the wire is closing or gone."""
        return self._closing

    def close(self) -> None:
        """Close gracefully: what is queued is sent first (bounded by the
        manager's ``write_timeout``, then aborted)."""
        if self._closing:
            return
        self._closing = True
        self._resume_reading()  # an adapter waiting in readable() goes on, to its end
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)
        self._close_timer = self._loop.call_later(self.manager.write_timeout, self.abort)

    def abort(self) -> None:
        """Drop queued output and close the WebSocket at once."""
        if self._aborted or self._gone:
            return
        self._aborted = True
        self._closing = True
        self._resume_reading()  # an adapter waiting in readable() goes on, to its end
        self._out.clear()
        self._out_bytes = 0
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        task = self._loop.create_task(self._abort())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _abort(self) -> None:
        sender = self._sender
        if sender is not asyncio.current_task() and not sender.done():
            sender.cancel()
            try:
                await sender
            except asyncio.CancelledError:
                pass
        await self._close_once(_CLOSE_ERROR)

    def fail(self, reason: str) -> None:
        """Drop this connection at once (as SocketWire.fail)."""
        if self.conn is not None:
            self.conn._wire_lost(self, reason)
        else:
            log.info("grid: closing connection from %s: %s", self.peer_name(), reason)
        self.abort()
