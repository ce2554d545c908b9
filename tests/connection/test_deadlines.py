"""Deadlines flow through calls (A -> B -> C), and the callee cancels an async
single-request handler whose deadline has passed."""

from __future__ import annotations

import asyncio

import pytest

import grid
from grid.testing import TestGrid
from support import run

FORWARD, REPORT, SLOW = 1, 2, 3


def test_deadline_shrinks_along_a_chain(loop_kind: str) -> None:
    seen: dict[str, float] = {}

    async def main() -> None:
        async with TestGrid(3) as g:
            a, b, c = g.managers
            loop = asyncio.get_running_loop()

            def report(payload: bytes | None) -> bytes:
                call = grid.current_call()
                assert call is not None and call.deadline is not None
                seen["c_remaining"] = call.deadline - loop.time()
                return b"ok"

            async def forward(payload: bytes | None) -> bytes | None:
                call = grid.current_call()
                assert call is not None and call.deadline is not None
                seen["b_remaining"] = call.deadline - loop.time()
                conn = b.connection(g.hosts[2])
                if payload == b"slow":
                    # No timeout given: A's remaining deadline bounds it.
                    t0 = loop.time()
                    try:
                        await conn.request(SLOW, b"10")
                    except (TimeoutError, asyncio.CancelledError):
                        # Whichever comes first at A's deadline: B's own call
                        # times out, or B's callee cancels this handler.
                        seen["b_timeout_after"] = loop.time() - t0
                        raise
                    return b"unreachable"
                # A longer timeout than A's remaining one is cut down too.
                return await conn.request(REPORT, timeout=30.0)

            async def slow(payload: bytes | None) -> bytes | None:
                await asyncio.sleep(float(payload or b"0"))
                return payload

            b.register_single(FORWARD, forward)
            c.register_single(REPORT, report)
            c.register_single(SLOW, slow)
            ab = a.connection(g.hosts[1])
            assert await ab.request(FORWARD, timeout=2.0) == b"ok"
            assert 1.0 < seen["b_remaining"] <= 2.0
            assert seen["c_remaining"] <= seen["b_remaining"]
            assert seen["c_remaining"] <= 2.0  # not the 30 s B asked for
            with pytest.raises((grid.RemoteError, TimeoutError)):
                await ab.request(FORWARD, b"slow", timeout=0.5)
            for _ in range(200):
                if "b_timeout_after" in seen:
                    break
                await asyncio.sleep(0.01)
            assert seen["b_timeout_after"] < 0.75  # bounded by A's 0.5 s, not C's 10 s
    run(loop_kind, main)


def test_callee_cancels_async_handler_at_deadline(loop_kind: str) -> None:
    state = {"cancelled": 0, "finished": 0}

    async def main() -> None:
        async def slow(payload: bytes | None) -> bytes:
            try:
                await asyncio.sleep(5)
            except asyncio.CancelledError:
                state["cancelled"] += 1
                raise
            state["finished"] += 1
            return b"late"

        async with TestGrid(2, setup=lambda m: m.register_single(SLOW, slow)) as g:
            c = g.conn(0, 1)
            with pytest.raises(TimeoutError):
                await c.request(SLOW, timeout=0.2)
            callee = g.conn(1, 0)
            for _ in range(300):
                if state["cancelled"]:
                    break
                await asyncio.sleep(0.01)
            assert state == {"cancelled": 1, "finished": 0}
            assert not callee._link.tasks
    run(loop_kind, main)


def test_call_outside_a_handler_keeps_its_own_timeout(loop_kind: str) -> None:
    async def main() -> None:
        async with TestGrid(2, setup=lambda m: m.register_single(REPORT, lambda p: b"x")) as g:
            assert grid.current_call() is None
            assert await g.conn(0, 1).request(REPORT, timeout=0.5) == b"x"
    run(loop_kind, main)
