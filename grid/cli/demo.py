"""``grid demo``: a grid of a few nodes on loopback in this process, every
handler kind called between every pair, and a report (``make demo``)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator

import grid
from grid.cli._common import CliError

__all__ = ["demo", "Usage", "USAGE"]

#: Handler ids of the demo's handlers.
ECHO, LOOKUP, DISK_INFO, ECHO_STREAM = 1, 2, 9, 10


@dataclasses.dataclass
class Usage:
    """A typed payload: a msgp map {"Disk": str, "Used": int, "Total": int}."""

    Disk: str
    Used: int = 0
    Total: int = 0


#: The demo's typed handler (id 11): a Usage in, a Usage out.
USAGE: grid.SingleHandler[Usage, Usage] = grid.SingleHandler(11, Usage, Usage)


def _demo_setup(m: grid.Manager) -> None:
    def echo(payload: bytes | None) -> bytes | None:
        return payload

    async def lookup(payload: bytes | None) -> bytes:
        raise grid.RemoteError(f"not found: {(payload or b'').decode()}")

    def disk_info(payload: bytes | None) -> bytes:
        call = grid.current_call()
        assert call is not None
        return f"{m.local} serves {call.subroute} for {call.caller}".encode()

    m.register_single(ECHO, echo)
    m.register_single(LOOKUP, lookup)
    m.register_single(DISK_INFO, disk_info, subroute="disk/1")

    async def echo_stream(ctx: grid.StreamContext, payload: bytes | None,
                          inbound: AsyncIterator[bytes] | None, out: grid.StreamOut) -> None:
        assert inbound is not None
        async for item in inbound:
            await out.send(item.upper())

    m.register_stream(ECHO_STREAM, grid.StreamHandler(echo_stream, in_capacity=16,
                                                      out_capacity=16))
    USAGE.register(m, lambda u: Usage(u.Disk, 40, 100))


async def demo(nodes: int, requests: int) -> int:
    """Run ``nodes`` managers on loopback, exercise every pair, print a report;
    returns the exit status (1 if any check failed)."""
    from grid.testing import TestGrid

    if nodes < 2:
        raise CliError(f"--nodes {nodes}: a demo grid needs at least 2 nodes (calls go "
                       "between nodes; a node has no connection to itself)")
    if requests < 0:
        raise CliError(f"--requests {requests}: must be 0 or more")
    print(f"grid demo: {nodes} nodes on loopback, core: {grid.IMPLEMENTATION}")
    t0 = time.perf_counter()
    async with TestGrid(nodes, setup=_demo_setup) as g:
        print(f"  all {nodes * (nodes - 1)} connection ends up in "
              f"{(time.perf_counter() - t0) * 1000:.0f} ms")
        for h, m in zip(g.hosts, g.managers):
            print(f"  node {h}  dials {[c.remote for c in m.connections.values() if c.dials]}")
        print()
        failures = 0
        for i, src in enumerate(g.managers):
            for j, dst in enumerate(g.hosts):
                if i == j:
                    continue
                conn = src.connection(dst)
                reply = await conn.request(ECHO, b"hello from " + src.local.encode())
                ok = reply == b"hello from " + src.local.encode()
                try:
                    await conn.request(LOOKUP, b"bucket-x")
                    err = "no error?"
                    ok = False
                except grid.RemoteError as e:
                    err = e.message
                sub = await conn.subroute("disk", "1").request(DISK_INFO)
                t = time.perf_counter()
                await asyncio.gather(*(conn.request(ECHO, b"x" * 512) for _ in range(requests)))
                rate = requests / (time.perf_counter() - t)
                stream = await conn.new_stream(ECHO_STREAM)
                words = [b"w%d" % k for k in range(1000)]

                async def feed() -> None:
                    for w in words:
                        await stream.send(w)
                    await stream.close_send()

                feeder = asyncio.ensure_future(feed())
                echoed = [x async for x in stream]
                await feeder
                ok = ok and echoed == [w.upper() for w in words]
                usage = await USAGE.call(conn, Usage("/mnt/disk1"))
                ok = ok and usage == Usage("/mnt/disk1", 40, 100)
                failures += not ok
                print(f"  {src.local} -> {dst}: echo {'ok' if ok else 'WRONG'}; "
                      f"failing call -> RemoteError({err!r})")
                print(f"      subroute: {(sub or b'').decode()}; {requests} x 512 B echo: {rate:,.0f} req/s")
                print(f"      two-way stream: {len(echoed)} items echoed; typed call: {usage}")
        print()
        print(f"  {'connection':<48} {'state':<10} {'msgs out':>9} {'msgs in':>9} "
              f"{'bytes out':>10} {'rtt':>6}")
        for m in g.managers:
            for s in m.stats().connections:
                rtt = f"{s.last_ping_rtt * 1000:.1f}ms" if s.last_ping_rtt is not None else "-"
                print(f"  {m.local + ' -> ' + s.remote:<48} {s.state.name:<10} "
                      f"{s.messages_out:>9} {s.messages_in:>9} {s.bytes_out:>10} {rtt:>6}")
        logging.getLogger("grid").setLevel(logging.ERROR)  # quiet teardown
    print("\ndemo", "passed" if not failures else f"FAILED ({failures})")
    return 1 if failures else 0
