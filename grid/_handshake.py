"""Both sides of the grid handshake (docs/protocol.md §1.4, §5.3).

:func:`dial` is the dialing side: TCP (and TLS), the HTTP upgrade, then the
Connect message and the peer's ConnectResponse.  One :class:`Handshake` per
Manager is the accepting side: it checks the HTTP upgrade (method, path,
WebSocket headers, bearer token, clock), then the grid Connect message
(known host, clock, token, who dials), and attaches the wire to its
connection or rejects it.  Refusals of peers not yet known are logged at
most once per interval per address and kind.  Wires reach it through
:class:`grid._wire.Acceptor`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl as _ssl
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from grid import _http, _payloads
from grid._budget import ByteBudget
from grid._consts import HANDSHAKE_CLOCK_SKEW, HTTP_CLOCK_SKEW, OP_NAMES, Op
from grid._impl import encode_message
from grid._loglimit import PeerLogLimits
from grid._wire import SocketWire
from grid.errors import ProtocolError, Rejected

if TYPE_CHECKING:
    from grid._wire import Acceptor, Wire

__all__ = ["Handshake", "Node", "Peer", "dial"]

log = logging.getLogger("grid.manager")

_CONNECT = int(Op.CONNECT)
_CONNECT_RESPONSE = int(Op.CONNECT_RESPONSE)


async def dial(acceptor: Acceptor, addr: _http.HostAddr, *, local: str, route_path: str,
               token: Callable[[], str], instance_id: bytes, ssl: _ssl.SSLContext | None,
               dial_timeout: float, handshake_timeout: float) -> tuple[SocketWire, bytes]:
    """Dial ``addr`` as the node ``local`` and complete the handshake.

    :returns: the wire, its WebSocket up and the peer's ConnectResponse
        received, and the peer's instance id.
    :raises Rejected: the peer refused (HTTP error or ConnectResponse).
    :raises TimeoutError: ``dial_timeout`` passed before the upgrade, or
        ``handshake_timeout`` before the ConnectResponse.
    """
    loop = asyncio.get_running_loop()
    wire: SocketWire | None = None

    async def connect_and_upgrade() -> SocketWire:
        nonlocal wire
        _, proto = await loop.create_connection(
            lambda: SocketWire(acceptor, accepting=False), addr.host, addr.port,
            ssl=ssl, server_hostname=addr.host if ssl else None)
        wire = proto
        key = _http.new_key()
        await wire.request_upgrade(
            _http.upgrade_request(addr, route_path, key, token(), time.time_ns()), key)
        return wire

    try:
        w = await asyncio.wait_for(connect_and_upgrade(), dial_timeout)
        req = _payloads.ConnectRequest(instance_id, local, time.time_ns(), token())
        w.write_frame(encode_message(0, 0, 0, 0, _CONNECT, 0, req.encode()))
        first = await asyncio.wait_for(w.first_message, handshake_timeout)
        if first.op != Op.CONNECT_RESPONSE:
            raise ProtocolError(f"unexpected connect response op {first.op}")
        resp = _payloads.ConnectResponse.decode(first.payload)
        if not resp.accepted:
            raise Rejected(resp.rejected_reason)
    except asyncio.TimeoutError:
        if wire is not None:
            wire.fail("handshake timed out")
        raise TimeoutError(f"dial {addr.scheme}://{addr.netloc}: timed out") from None
    except BaseException:
        if wire is not None and wire.transport is not None:
            wire.transport.abort()
        raise
    return w, resp.instance_id


class Peer(Protocol):
    """What the acceptor needs of a connection: who dials, and attaching."""

    dials: bool

    def _attach(self, wire: Wire, remote_id: bytes) -> None: ...


class Node(Protocol):
    """The settings of the node that accepts (a Manager)."""

    instance_id: bytes
    route_path: str
    handshake_timeout: float
    max_message_size: int
    max_write_buffer: int
    max_pending_handshakes: int

    @property
    def connections(self) -> Mapping[str, Any]: ...


class Handshake:
    """The accepting side of the handshake for one node.

    :param node: the node's settings (read on every handshake, so a change
        takes effect for the next one).
    :param validate: called with each incoming token; raises to reject.
    :param max_partial_bytes: the most bytes all the node's sockets may hold
        of messages they have partly received.
    """

    def __init__(self, node: Node, validate: Callable[[str], Any] | None,
                 max_partial_bytes: int) -> None:
        self._node = node
        self._validate = validate
        self._peer_logs = PeerLogLimits()
        #: Accepted wires not attached to a connection yet.
        self.pending: set[Wire] = set()
        #: ... of which those upgraded to a WebSocket (at most
        #: ``max_pending_handshakes``).
        self.upgraded: set[Wire] = set()
        #: What the parsers of every wire of the node hold of partly
        #: received messages.
        self.frame_budget = ByteBudget(max_partial_bytes)

    @property
    def handshake_timeout(self) -> float:
        """Seconds an accepted socket has for the upgrade and the Connect."""
        return self._node.handshake_timeout

    @property
    def max_message_size(self) -> int:
        """The largest WebSocket message a wire accepts."""
        return self._node.max_message_size

    @property
    def max_write_buffer(self) -> int:
        """Bytes a socket may buffer towards its peer before it is dropped."""
        return self._node.max_write_buffer

    def track(self, wire: Wire) -> None:
        """Remember an accepted wire until it is attached or gone."""
        self.pending.add(wire)

    def untrack(self, wire: Wire) -> None:
        """Forget a wire (attached, or gone)."""
        self.pending.discard(wire)
        self.upgraded.discard(wire)

    def admit(self, wire: Wire) -> bool:
        """Count ``wire`` among the upgraded sockets waiting for their
        handshake; False (logged, at most once per interval per address)
        when ``max_pending_handshakes`` are waiting already."""
        limit = self._node.max_pending_handshakes
        if len(self.upgraded) >= limit and wire not in self.upgraded:
            self.peer_log((wire.peer_ip(), 503), logging.WARNING,
                          "grid: refused upgrade from %s: %d handshakes in progress "
                          "(max_pending_handshakes)", wire.peer_name(), limit)
            return False
        self.upgraded.add(wire)
        return True

    def abort_pending(self) -> None:
        """Drop every accepted wire still in its handshake."""
        for w in list(self.pending):
            if w.transport is not None:
                w.transport.abort()

    def peer_log(self, key: object, level: int, msg: str, *args: object,
                 exc: BaseException | None = None) -> None:
        """Log about a socket not tied to a connection yet, at most once per
        interval per ``key`` at ``level`` (the rest at DEBUG), with the
        traceback of ``exc`` if given."""
        self._peer_logs.log(log, key, level, msg, *args, exc=exc)

    def check_token(self, token: str) -> str | None:
        """Why ``token`` is refused, or None."""
        if self._validate is None:
            return None
        try:
            self._validate(token)
        except Exception as exc:
            return str(exc) or type(exc).__name__
        return None

    def check_upgrade(self, head: _http.HttpHead) -> tuple[int, bytes]:
        """``(101, response)`` for a valid upgrade request, else ``(status,
        error response)``."""
        method, path = head.start[0], head.start[1]
        version = head.start[2] if len(head.start) > 2 else ""
        if method != "GET":
            return 405, _http.error_response(405, "grid: method not allowed")
        if path.split("?", 1)[0] != self._node.route_path:
            return 404, _http.error_response(404, "grid: not found")
        if not version.startswith("HTTP/1.") or version == "HTTP/1.0":
            return 400, _http.error_response(400, "grid: HTTP/1.1 required")
        if head.get("upgrade").lower() != "websocket" or "upgrade" not in [
            t.strip().lower() for t in head.get("connection").split(",")
        ]:
            return 426, _http.error_response(426, "grid: websocket upgrade required")
        key = head.get("sec-websocket-key")
        if len(key) != 24 or head.get("sec-websocket-version") != "13":
            return 400, _http.error_response(400, "grid: bad websocket key or version")
        auth = head.get("authorization")
        if not auth.startswith("Bearer "):
            return 403, _http.error_response(403, "grid: missing bearer token")
        err = self.check_token(auth[7:])
        if err is not None:
            return 403, _http.error_response(403, f"grid: auth token: {err}")
        try:
            sent = int(head.get("x-minio-time"))
        except ValueError:
            return 403, _http.error_response(403, "grid: missing or bad X-Minio-Time")
        if abs(time.time_ns() - sent) > HTTP_CLOCK_SKEW * 1e9:
            return 403, _http.error_response(403, "grid: clock skew too large")
        return 101, _http.switching_protocols(key)

    def on_upgrade(self, wire: SocketWire, head: _http.HttpHead, rest: bytes) -> None:
        """Answer the upgrade request of an accepted socket."""
        status, response = self.check_upgrade(head)
        if status == 101 and not self.admit(wire):
            wire.write(_http.error_response(503, "grid: too many handshakes in progress"))
            wire.close()
            return
        wire.write(response)
        if status != 101:
            reason = response.partition(b"\r\n\r\n")[2].decode("utf-8", "replace").strip()
            # A bad token is a misconfigured peer (worth a warning); anything
            # else is a stray client.  Either way one line per peer per interval.
            self.peer_log((wire.peer_ip(), status),
                          logging.WARNING if status == 403 else logging.INFO,
                          "grid: refused upgrade from %s: HTTP %d: %s", wire.peer_name(),
                          status, reason)
            wire.close()
            return
        wire.start_websocket(rest)

    def reject(self, wire: Wire, reason: str) -> None:
        """Send a refusing ConnectResponse, then close."""
        self.peer_log((wire.peer_ip(), "rejected"), logging.WARNING,
                      "grid: rejected connection from %s: %s", wire.peer_name(), reason)
        self._respond(wire, _payloads.ConnectResponse(self._node.instance_id, False, reason))
        wire.close()

    def on_connect(self, wire: Wire, msg: Any) -> None:
        """The first grid message of an accepted wire: attach or reject."""
        if msg.op != Op.CONNECT:
            name = OP_NAMES.get(msg.op, f"Op({msg.op})")
            return self.reject(wire, f"unexpected connect op: {name}")
        try:
            req = _payloads.ConnectRequest.decode(msg.payload)
        except ProtocolError as exc:
            return self.reject(wire, str(exc))
        conn: Peer | None = self._node.connections.get(req.host)
        if conn is None:
            return self.reject(wire, f"unknown incoming host: {req.host}")
        skew = abs(time.time_ns() - req.time_ns) / 1e9
        if skew > HANDSHAKE_CLOCK_SKEW:
            return self.reject(wire, f"time difference too large between servers: {skew:.3f}s")
        err = self.check_token(req.token)
        if err is not None:
            return self.reject(wire, f"auth token: {err}")
        if conn.dials:
            return self.reject(wire, "grid: expected to be client side, not server side")
        wire.stop_handshake_timer()
        self.untrack(wire)
        wire.handshake_done()
        self._respond(wire, _payloads.ConnectResponse(self._node.instance_id, True, ""))
        conn._attach(wire, req.instance_id)

    @staticmethod
    def _respond(wire: Wire, resp: _payloads.ConnectResponse) -> None:
        wire.write_frame(encode_message(0, 0, 0, 0, _CONNECT_RESPONSE, 0, resp.encode()))
