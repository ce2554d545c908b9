"""Public hooks: Connection.ping (a connection-level round trip, OpPing on
mux 0, both loops, against a real peer on 127.0.0.1) and grid.dials."""

from __future__ import annotations

import asyncio

import pytest

import grid
from grid.connection import MAX_PINGS_IN_FLIGHT
from grid.testing import TestGrid, free_ports
from support import hosts_where_first_dials, run

TOKEN = "ping-token"


def test_ping_round_trip_and_limits(loop_kind: str) -> None:
    async def main() -> None:
        async with TestGrid(2) as g:
            conn, peer = g.conn(0, 1), g.conn(1, 0)
            before = peer.stats().messages_in
            rtt = await conn.ping(timeout=5)
            assert 0 < rtt < 5
            assert peer.stats().messages_in > before  # the ping reached the peer
            # The accepting side can ping too.
            assert await peer.ping(timeout=5) > 0
            # Many at once: each waits for its own pong.
            rtts = await asyncio.gather(*(conn.ping(timeout=5) for _ in range(MAX_PINGS_IN_FLIGHT)))
            assert all(r > 0 for r in rtts)
            # Past the limit the extra call is refused at once.
            waiting = [asyncio.ensure_future(conn.ping(timeout=5))
                       for _ in range(MAX_PINGS_IN_FLIGHT)]
            await asyncio.sleep(0)  # one loop turn: each task registers its ping
            with pytest.raises(grid.GridError, match="already waiting"):
                await conn.ping(timeout=5)
            await asyncio.gather(*waiting)

    run(loop_kind, main, 60)


def test_ping_when_down(loop_kind: str) -> None:
    a, b = hosts_where_first_dials()

    async def main() -> None:
        async with grid.Manager(a, [a, b], lambda: TOKEN, dial_timeout=0.5) as ma:
            conn = ma.connection(b)
            with pytest.raises(grid.Disconnected):  # nothing listens at b
                await conn.ping(timeout=1)
            async with grid.Manager(b, [a, b], lambda: TOKEN):
                await conn.wait_for_connect(timeout=10)
                assert await conn.ping(timeout=5) > 0

    run(loop_kind, main, 60)


def test_ping_times_out(loop_kind: str) -> None:
    async def main() -> None:
        async with TestGrid(2) as g:
            conn = g.conn(0, 1)
            # A timeout shorter than any round trip can be.
            with pytest.raises(TimeoutError, match="no pong"):
                await conn.ping(timeout=0)
            assert await conn.ping(timeout=5) > 0  # the connection is fine

    run(loop_kind, main, 60)


def test_dials_is_the_rule_connections_follow() -> None:
    hosts = [f"http://127.0.0.1:{p}" for p in free_ports(8)]
    for a in hosts:
        for b in hosts:
            if a != b:  # exactly one side of each pair dials
                assert grid.dials(a, b) != grid.dials(b, a)

    async def main() -> None:
        mgr = grid.Manager(hosts[0], hosts, lambda: TOKEN)
        await mgr.start(serve=False)
        try:
            for b in hosts[1:]:
                conn = mgr.connection(b)
                assert conn.dials == grid.dials(hosts[0], b)
        finally:
            await mgr.close()

    run("asyncio", main, 30)
