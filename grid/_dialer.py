"""The dialing side of one connection (docs/protocol.md §5.5, §10.2): dial
the peer, hold while the socket lives, and dial again when it goes.

Of each pair of nodes only the one :func:`grid.dials` names runs a
:class:`Dialer`; the other waits for the peer's dial, which the acceptor
(grid._handshake) attaches.  After a failed attempt the next one starts
``retry_base``/2 to ``retry_base`` seconds (uniformly random) after the
failed one started, at once if that moment has passed; after losing a
connection that was up, the dialer dials at once.  The connection's state
stays the connection's: the dialer tells it what happens through
:class:`DialTarget`.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import TYPE_CHECKING, Protocol

from grid import _http
from grid._handshake import dial
from grid._peerlog import PeerLog
from grid.errors import GridError, Rejected

if TYPE_CHECKING:
    import ssl as _ssl

    from grid._handshake import Handshake
    from grid._wire import SocketWire

__all__ = ["DialNode", "DialTarget", "Dialer"]

log = logging.getLogger("grid.connection")


class DialNode(Protocol):
    """The node settings the dialing side reads (a Manager's), on every dial."""

    instance_id: bytes
    route_path: str
    retry_base: float
    dial_timeout: float
    handshake_timeout: float
    _handshake: Handshake
    _client_ssl: _ssl.SSLContext | None

    def _token(self) -> str: ...


class DialTarget(Protocol):
    """What the dialer calls on its connection."""

    def _dial_starts(self) -> bool:
        """An attempt starts; False once the connection is shut down (the
        dialer stops)."""

    def _dial_failed(self, text: str) -> None:
        """The attempt failed with ``text``."""

    def _dialed(self, wire: SocketWire, remote_id: bytes) -> None:
        """The handshake is done: make ``wire`` the live socket, or close it
        and raise :class:`grid.Disconnected` if the connection was shut
        down meanwhile."""


class Dialer:
    """Dials one peer for its connection, for as long as the connection lives.

    :param target: the connection.
    :param local: this node's host string; ``remote`` the peer's.
    :param peer_log: the connection's rate-limited log of the peer.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, node: DialNode, target: DialTarget,
                 local: str, remote: str, peer_log: PeerLog) -> None:
        self._loop = loop
        self._node = node
        self._target = target
        self._local = local
        self._remote = remote
        self._addr = _http.parse_host(remote)
        self._log = peer_log
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start dialing (once)."""
        if self._task is None:
            self._task = self._loop.create_task(self._run())

    async def stop(self) -> None:
        """Stop dialing, and wait until the dialing task has ended."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None

    def disown(self) -> None:
        """In a forked child: forget the parent's dialing task."""
        self._task = None

    async def _run(self) -> None:
        """Dial, stay connected, redial: the dialing side's life (§10.2)."""
        loop = self._loop
        target = self._target
        attempt = 0
        while target._dial_starts():
            started = loop.time()
            try:
                wire = await self._dial_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                attempt += 1
                text = str(exc) or type(exc).__name__
                target._dial_failed(text)
                delay = self._node.retry_base * (1 + random.random()) / 2
                wait = max(0.0, started + delay - loop.time())
                if attempt > 1 or isinstance(exc, Rejected):
                    # A refusal is a configuration error: worth a warning at once.
                    self._log.connect_failed(f"connect failed: {text}; retrying in {wait:.2f} s",
                                             isinstance(exc, Rejected))
                else:  # the peer may not be up yet
                    log.debug("grid: %s -> %s: first connect failed: %s; retrying in %.2f s",
                              self._local, self._remote, text, wait)
                await asyncio.sleep(wait)
                continue
            attempt = 0
            await asyncio.shield(wire.closed)

    async def _dial_once(self) -> SocketWire:
        node = self._node
        addr = self._addr
        ssl_ctx = node._client_ssl if addr.tls else None
        if addr.tls and ssl_ctx is None:
            raise GridError(f"{self._remote} is https but no ssl context was given")
        wire, remote_id = await dial(
            node._handshake, addr, local=self._local, route_path=node.route_path,
            token=node._token, instance_id=node.instance_id, ssl=ssl_ctx,
            dial_timeout=node.dial_timeout, handshake_timeout=node.handshake_timeout)
        self._target._dialed(wire, remote_id)
        return wire
