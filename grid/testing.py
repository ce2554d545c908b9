"""Helpers for tests, demos and benchmarks: a whole grid on loopback."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Callable
from typing import Any

from grid.connection import Connection
from grid.manager import Manager

__all__ = ["TestGrid", "free_port", "free_ports"]


def _listen_range() -> range:
    """Ports to hand out: below the system's ephemeral range (where outgoing
    connections take their source ports, one of which could otherwise take a
    handed-out port before its listener binds it), else above it."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
    except (OSError, ValueError):
        lo, hi = 32768, 60999
    return range(10000, lo) if lo - 10000 >= 1000 else range(hi + 1, 65536)


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct TCP ports that were free a moment ago on ``host``,
    outside the system's ephemeral port range (all bound at once, so none is
    handed out twice, and no outgoing connection takes one meanwhile)."""
    candidates = _listen_range()
    socks: list[socket.socket] = []
    try:
        for _ in range(100 * n + 100):
            if len(socks) == n:
                return [int(s.getsockname()[1]) for s in socks]
            port = random.choice(candidates)
            if any(s.getsockname()[1] == port for s in socks):
                continue  # SO_REUSEADDR would let the same port bind twice
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as listeners bind
            try:
                s.bind((host, port))
            except OSError:
                s.close()
                continue
            socks.append(s)
        raise OSError(f"no {n} free ports on {host} in {candidates}")
    finally:
        for s in socks:
            s.close()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host`` (see :func:`free_ports`)."""
    return free_ports(1, host)[0]


class TestGrid:
    """``async with TestGrid(3) as g:`` starts three managers on free loopback
    ports, waits until every pair is connected, and closes them all on exit.

    :attr:`managers` and :attr:`hosts` are in the same order.  Extra keyword
    arguments go to every :class:`~grid.Manager`; ``token`` is what each
    presents and accepts.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, n: int, *, token: str = "grid-test-token", connect_timeout: float = 10.0,
                 setup: Callable[[Manager], Any] | None = None, **manager_kwargs: Any) -> None:
        if n < 1:
            raise ValueError("a grid needs at least one node")
        #: Host strings, in manager order.
        self.hosts = [f"http://127.0.0.1:{port}" for port in free_ports(n)]
        self._token = token
        self._timeout = connect_timeout
        self._setup = setup
        self._kwargs = manager_kwargs
        #: The managers, in host order.
        self.managers: list[Manager] = []

    def _validate(self, token: str) -> None:
        if token != self._token:
            raise PermissionError("invalid token")

    async def __aenter__(self) -> TestGrid:
        """Start every manager (all listen before any dials) and wait until
        every pair is connected; on a failure, close what was started."""
        try:
            for h in self.hosts:
                m = Manager(h, self.hosts, lambda: self._token, self._validate, **self._kwargs)
                if self._setup is not None:
                    self._setup(m)
                self.managers.append(m)
            # Every node listens before any dials, so no first dial is refused.
            for m in self.managers:
                await m.start(dial=False)
            for m in self.managers:
                m.start_dialing()
            await self.wait_connected()
        except BaseException:
            await self.close()
            raise
        return self

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until every manager is connected to every other."""
        waits = [c.wait_for_connect(timeout or self._timeout)
                 for m in self.managers for c in m.connections.values()]
        await asyncio.gather(*waits)

    def conn(self, a: int, b: int) -> Connection:
        """The connection from manager ``a`` to manager ``b`` (``KeyError``
        when ``a == b``: a node has no connection to itself)."""
        return self.managers[a].connection(self.hosts[b])

    async def close(self) -> None:
        """Close every manager.

        All close at once: each marks its connections shut down before any
        socket closes, so no node logs the others leaving."""
        await asyncio.gather(*(m.close() for m in self.managers))

    async def __aexit__(self, *exc: object) -> None:
        """Close every manager at the end of ``async with``."""
        await self.close()
