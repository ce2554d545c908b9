"""Connection keepalive (docs/protocol.md §9): the pings one connection
sends on mux 0, its pongs to the peer's pings, and the drop of a live
socket whose peer has gone silent.

Every ``ping_interval`` seconds a tick sends a ping, unless no pong (and no
other byte) has arrived for two intervals: then the socket is failed with a
reason that starts with :data:`NO_PONG`.  :meth:`Keepalive.ping` sends one
ping on demand and measures its round trip.  The connection starts a
:class:`Keepalive` on each socket it attaches and resets it when the socket
goes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol

from grid import _payloads
from grid._consts import FLAG_SUBROUTE, PING_DEADLINE_MS, Op
from grid._impl import encode_message
from grid._send import Sender
from grid._wire import Wire
from grid.errors import Disconnected, GridError, ProtocolError

__all__ = ["Keepalive", "KeepaliveNode", "MAX_PINGS_IN_FLIGHT", "NO_PONG"]

#: How many :meth:`grid.Connection.ping` calls may wait for their pong at once,
#: per connection.
MAX_PINGS_IN_FLIGHT = 16

NO_PONG = "no pong for"  # how a keepalive drop's reason starts

_PING = int(Op.PING)
_PONG = int(Op.PONG)


class KeepaliveNode(Protocol):
    """The node setting keepalive reads (a Manager's), on every tick."""

    ping_interval: float


class Keepalive:
    """The keepalive of one connection, on its live socket.

    :param node: where the ping interval is read.
    :param sender: the connection's writes (pings and pongs jump the queue
        behind a large message, :meth:`Sender.send_keepalive`).
    :param base: the flags every message of the connection carries (§1.6).
    :param remote: the peer's host string, for errors.
    :param connected: True while the connection is up; a tick while it is
        not (shutting down) sends nothing and ends the ticking.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, node: KeepaliveNode, sender: Sender,
                 base: int, remote: str, connected: Callable[[], bool]) -> None:
        self._loop = loop
        self._node = node
        self._sender = sender
        self._base = base
        self._remote = remote
        self._connected = connected
        self._wire: Wire | None = None  # the live socket, while started
        self._timer: asyncio.TimerHandle | None = None
        self._last_pong = 0.0
        self._bytes_at_tick = 0  # wire.bytes_in at the last tick
        #: The last round trip a pong measured, in seconds.
        self.rtt: float | None = None
        self._pings: dict[int, asyncio.Future[None]] = {}  # ping time (ns) -> waiter

    def start(self, wire: Wire) -> None:
        """Keep ``wire``, the newly attached socket, alive from now on."""
        self._wire = wire
        self._last_pong = self._loop.time()
        self._timer = self._loop.call_later(self._node.ping_interval, self._tick)

    def reset(self, reason: str) -> None:
        """The socket is gone: stop ticking, and fail the pings that wait
        for a pong with :class:`grid.Disconnected` (``reason``)."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._wire = None
        pings, self._pings = self._pings, {}
        for waiter in pings.values():
            if not waiter.done():
                waiter.set_exception(Disconnected(reason))

    def disown(self) -> None:
        """In a forked child: forget the parent's socket and timer without
        touching them."""
        self._timer = None
        self._wire = None

    async def ping(self, limit: float) -> float:
        """Send one ping and return the seconds until its pong; TimeoutError
        after ``limit`` seconds, GridError while MAX_PINGS_IN_FLIGHT wait."""
        if len(self._pings) >= MAX_PINGS_IN_FLIGHT:
            raise GridError(f"{MAX_PINGS_IN_FLIGHT} pings to {self._remote} already waiting")
        sent_ns = time.time_ns()
        while sent_ns in self._pings:  # the pong echoes this value: keep it unique
            sent_ns += 1
        fut: asyncio.Future[None] = self._loop.create_future()
        self._pings[sent_ns] = fut
        started = time.perf_counter()
        self._send_ping(sent_ns)
        try:
            await asyncio.wait_for(fut, limit)
        except asyncio.TimeoutError:
            raise TimeoutError(f"no pong from {self._remote} within {limit:g} s") from None
        finally:
            self._pings.pop(sent_ns, None)
        return time.perf_counter() - started

    def on_ping(self, m: Any) -> None:
        """Answer a ping on mux 0 with a pong that echoes its time."""
        try:
            t = _payloads.decode_ping(m.payload)
        except ProtocolError:
            t = _payloads.GO_ZERO_TIME_NS
        # The reply keeps the ping's fields (§2.5), as Link.reply builds it.
        flags = (m.flags | self._base) & ~FLAG_SUBROUTE & 0xFF
        self._sender.send_keepalive(encode_message(m.mux_id, m.seq, m.deadline_ms, m.handler,
                                                   _PONG, flags,
                                                   _payloads.Pong(False, None, t).encode()))

    def on_pong(self, m: Any) -> None:
        """A pong on mux 0: the peer is alive; measure the round trip."""
        self._last_pong = self._loop.time()
        try:
            pong = _payloads.Pong.decode(m.payload)
        except ProtocolError:
            return
        if pong.time_ns > 0:
            self.rtt = max(0.0, (time.time_ns() - pong.time_ns) / 1e9)
        waiter = self._pings.pop(pong.time_ns, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _tick(self) -> None:
        due = self._timer.when() if self._timer is not None else None
        self._timer = None
        wire = self._wire
        if wire is None or not self._connected():
            return
        interval = self._node.ping_interval
        now = self._loop.time()
        if due is not None and now > due:
            # A late tick: the loop was busy, so it could neither read pongs
            # nor send pings meanwhile; that time is not the peer's silence.
            self._last_pong = min(now, self._last_pong + now - due)
        if wire.bytes_in != self._bytes_at_tick:
            # Bytes arrived since the last tick: the peer is alive even if its
            # pong waits behind a large message on the wire.
            self._bytes_at_tick = wire.bytes_in
            self._last_pong = max(self._last_pong, now)
        if now - self._last_pong > 2 * interval:
            wire.fail(f"{NO_PONG} {2 * interval:g} s")
            return
        self._send_ping(time.time_ns())
        self._timer = self._loop.call_later(interval, self._tick)

    def _send_ping(self, time_ns: int) -> None:
        # Connection pings never carry a CRC (§1.6).
        self._sender.send_keepalive(encode_message(0, 0, PING_DEADLINE_MS, 0, _PING, 0,
                                                   _payloads.encode_ping(time_ns)))
