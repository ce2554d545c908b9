"""Helpers for tests, demos and benchmarks: a whole grid on loopback."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

from grid.connection import Connection
from grid.manager import Manager

__all__ = ["TestGrid", "free_port", "free_ports"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct TCP ports that were free a moment ago on ``host`` (all
    bound at once, so the system cannot hand out one of them twice)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind((host, 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


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
