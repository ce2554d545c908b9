"""One peer flooding valid traffic must not cost another peer anything.

A node (a ``grid.Manager``) serves two peers over real sockets on 127.0.0.1:
a well-behaved peer (a second Manager in this process) that calls the node
one request after another and records each latency, and a flooding peer in
its own process (tests/reliability/flooder.py) that completed the grid
handshake and writes one kind of valid traffic as fast as the node takes it.
The good peer's p99 must stay under 100 ms with no error, and every request
the flooder sent must still be answered (fairness, not dropping).

The request byte caps are checked the same way: a handler that never
returns, 64 KiB requests until the node refuses one; the refusal is the
documented error and the node's memory stays within the documented bound.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import grid
from support import NodeWithGoodPeer, run

TOKEN = "fairness-test-token"
ECHO, HOLD = 1, 2
HERE = Path(__file__).resolve().parent
P99_BOUND = 0.100


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Node(NodeWithGoodPeer):
    """The node, a well-behaved peer connected to it, and the identity a
    flooding peer presents (``peer``, a host of the node's list that dials it)."""

    def __init__(self, **kwargs: Any) -> None:
        self.held: list[asyncio.Future[None]] = []
        super().__init__(TOKEN, **kwargs)

    def setup(self, m: grid.Manager) -> None:
        async def hold(payload: bytes | None) -> bytes | None:
            fut = asyncio.get_running_loop().create_future()
            self.held.append(fut)
            await fut  # never resolved: the request stays held
            return payload

        m.register_single(ECHO, lambda p: p)
        m.register_single(HOLD, hold)


async def _flooder(node: Node, kind: str, seconds: float) -> asyncio.subprocess.Process:
    env = dict(os.environ)
    env["PYTHONPATH"] = (str(Path(grid.__file__).resolve().parent.parent) + os.pathsep
                         + env.get("PYTHONPATH", ""))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(HERE / "flooder.py"), "--port", str(node.port), "--host", node.peer,
        "--token", TOKEN, "--kind", kind, "--seconds", str(seconds),
        "--per-container", str(50_000 if grid.ACCELERATED else 10_000),
        stdout=asyncio.subprocess.PIPE, env=env)
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 10)
    assert line.strip() == b"flooding", line
    return proc


@pytest.mark.parametrize("kind", ["ping", "wsping", "echo", "merged"])
def test_flood_does_not_starve_good_peer(loop_kind: str, kind: str) -> None:
    """While one peer floods, another peer's calls keep a p99 under 100 ms
    and never fail; the flooder's own requests are all answered."""

    async def main() -> None:
        async with Node() as node:
            conn = node.good_conn
            proc = await _flooder(node, kind, 3.0)
            assert proc.stdout is not None
            result = asyncio.ensure_future(proc.stdout.readline())
            lat: list[float] = []
            errors: list[BaseException] = []
            loop = asyncio.get_running_loop()
            stop = loop.time() + 2.5
            while loop.time() < stop and not result.done():
                t0 = time.perf_counter()
                try:
                    assert await conn.request(ECHO, b"good", timeout=5.0) == b"good"
                except Exception as exc:  # counted: the good peer must see none
                    errors.append(exc)
                lat.append(time.perf_counter() - t0)
            line = await asyncio.wait_for(result, 40)
            await proc.wait()
            lat.sort()
            p99 = lat[int(len(lat) * 0.99)] if lat else float("inf")
            got = json.loads(line)
            print(f"\n{kind}/{loop_kind}/{grid.IMPLEMENTATION}: good calls {len(lat)}, "
                  f"p50 {lat[len(lat) // 2] * 1e3:.1f} ms, p99 {p99 * 1e3:.1f} ms, "
                  f"max {lat[-1] * 1e3:.1f} ms, errors {len(errors)}; flooder {got}")
            assert not errors, errors[:3]
            assert len(lat) >= 50
            assert p99 < P99_BOUND
            assert got["sent"] > 0 and got["answered"] == got["sent"] and got["errors"] == 0
            assert conn.stats().reconnects == 0

    run(loop_kind, main, timeout=60)


REQ = 64 * 1024


def test_request_bytes_capped(loop_kind: str) -> None:
    """Requests held by a handler that never returns are bounded in bytes:
    past ``max_request_bytes`` (its default) a request is refused with
    BUSY_BYTES_TEXT at once, and the node's memory grows by about the cap,
    not by what was sent."""

    async def main() -> None:
        async with Node() as node:
            conn = node.good_conn
            cap = node.mgr.max_request_bytes
            payload = os.urandom(REQ)
            start = _rss()
            futs: list[asyncio.Future[Any]] = []
            refused: BaseException | None = None
            for _ in range(2000):  # 125 MiB if nothing were refused
                batch = [conn.request(HOLD, payload, timeout=30.0) for _ in range(32)]
                futs += batch
                await conn.ping(timeout=5.0)  # the node has read the batch
                done = [f for f in batch if f.done()]
                if done:
                    refused = done[0].exception()
                    break
            assert refused is not None, "no request was refused"
            grown = _rss() - start
            held = len(node.held)
            print(f"\n{loop_kind}/{grid.IMPLEMENTATION}: {held} held "
                  f"({held * REQ / 2**20:.1f} MiB of payload), RSS +{grown / 2**20:.1f} MiB")
            assert isinstance(refused, grid.RemoteError) and refused.message == grid.errors.BUSY_BYTES_TEXT
            assert held * REQ <= cap
            assert held * REQ > cap - 33 * REQ
            assert grown < cap + 48 * 2**20
            # The refusal costs only the refused requests: later small ones run.
            assert await conn.request(ECHO, b"after", timeout=5.0) == b"after"
            for f in futs:
                f.cancel()

    run(loop_kind, main, timeout=60)


def test_request_byte_options_checked() -> None:
    """The byte caps are validated when the Manager is made."""
    hosts = ["http://127.0.0.1:1", "http://127.0.0.1:2"]
    with pytest.raises(ValueError, match="max_request_bytes"):
        grid.Manager(hosts[0], hosts, lambda: TOKEN, max_request_bytes=-1)
    with pytest.raises(ValueError, match="max_total_request_bytes"):
        grid.Manager(hosts[0], hosts, lambda: TOKEN, max_request_bytes=2,
                     max_total_request_bytes=1)
