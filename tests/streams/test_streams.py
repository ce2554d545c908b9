"""Streams over real loopback sockets, on asyncio and uvloop, in both modes."""

from __future__ import annotations

import asyncio
import resource
import signal
from collections.abc import AsyncIterator

import pytest

import grid
from grid.testing import TestGrid
from support import PeerProcess, hosts_where_first_dials, run

ECHO1, ECHO128, GEN, FAIL, HOLD, CRASH, SUB, NOINIT, SINK = 10, 11, 12, 13, 14, 15, 16, 17, 18


class Observed:
    """What handlers on the callee saw, for assertions."""

    def __init__(self) -> None:
        self.cancelled = 0
        self.sent = 0
        self.payloads: list[bytes | None] = []
        self.started: asyncio.Event | None = None


def setup_streams(obs: Observed):  # type: ignore[no-untyped-def]
    async def echo(ctx: grid.StreamContext, payload: bytes | None,
                   inbound: AsyncIterator[bytes] | None, out: grid.StreamOut) -> None:
        obs.payloads.append(payload)
        assert inbound is not None
        async for item in inbound:
            await out.send(item)

    async def gen(ctx: grid.StreamContext, payload: bytes | None, inbound: None,
                  out: grid.StreamOut) -> None:
        assert inbound is None
        for i in range(int(payload or b"0")):
            await out.send(b"%d" % i)
            obs.sent += 1

    async def fail(ctx: grid.StreamContext, payload: bytes | None, inbound: None,
                   out: grid.StreamOut) -> None:
        for i in range(3):
            await out.send(b"%d" % i)
        raise grid.RemoteError("disk failed after 3")

    async def hold(ctx: grid.StreamContext, payload: bytes | None, inbound: None,
                   out: grid.StreamOut) -> None:
        await out.send(b"started")
        try:
            await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError:
            obs.cancelled += 1
            raise

    async def crash(ctx: grid.StreamContext, payload: bytes | None, inbound: None,
                    out: grid.StreamOut) -> None:
        raise KeyError("nope")

    async def sub(ctx: grid.StreamContext, payload: bytes | None, inbound: None,
                  out: grid.StreamOut) -> None:
        call = grid.current_call()
        assert call is ctx
        await out.send(f"{ctx.subroute}|{ctx.caller}".encode())

    async def no_init(ctx: grid.StreamContext, payload: bytes | None, inbound: None,
                      out: grid.StreamOut) -> None:
        await out.send(repr(payload).encode())
        await out.send(b"")

    async def sink(ctx: grid.StreamContext, payload: bytes | None,
                   inbound: AsyncIterator[bytes] | None, out: grid.StreamOut) -> None:
        await asyncio.get_running_loop().create_future()  # takes input, never reads it

    def setup(m: grid.Manager) -> None:
        m.register_stream(SINK, grid.StreamHandler(sink, in_capacity=1, out_capacity=1))
        m.register_stream(ECHO1, grid.StreamHandler(echo, in_capacity=1, out_capacity=1))
        m.register_stream(ECHO128, grid.StreamHandler(echo, in_capacity=128, out_capacity=128))
        m.register_stream(GEN, grid.StreamHandler(gen, in_capacity=0, out_capacity=4))
        m.register_stream(FAIL, grid.StreamHandler(fail, in_capacity=0, out_capacity=1))
        m.register_stream(HOLD, grid.StreamHandler(hold, in_capacity=0, out_capacity=1))
        m.register_stream(CRASH, grid.StreamHandler(crash, in_capacity=0, out_capacity=1))
        m.register_stream(SUB, grid.StreamHandler(sub, subroute="disk/1", in_capacity=0))
        m.register_stream(NOINIT, grid.StreamHandler(no_init, in_capacity=0, out_capacity=2))

    return setup


def streams_open(g: TestGrid) -> list[int]:
    return [c.stats().outstanding_streams for m in g.managers for c in m.connections.values()]


async def settle(g: TestGrid) -> None:
    """Wait until both nodes have released every stream (bounded)."""
    for _ in range(500):
        if not any(streams_open(g)) and not any(
            c._link.tasks for m in g.managers for c in m.connections.values()
        ):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"streams still open: {streams_open(g)}")


def test_no_input_stream_and_two_way_echo(loop_kind: str) -> None:
    obs = Observed()

    async def main() -> None:
        async with TestGrid(2, setup=setup_streams(obs)) as g:
            for a, b in ((0, 1), (1, 0)):
                c = g.conn(a, b)
                s = await c.new_stream(GEN, b"50")
                assert [x async for x in s] == [b"%d" % i for i in range(50)]
                s = await c.new_stream(ECHO1, b"init")
                items = [b"", b"a", bytes(5000), b"z" * 70000]

                async def feed() -> None:
                    for it in items:
                        await s.send(it)
                    await s.close_send()

                feeder = asyncio.ensure_future(feed())
                assert [x async for x in s] == items
                await feeder
                await settle(g)
            assert obs.payloads == [b"init", b"init"]
    run(loop_kind, main)


def test_stream_payload_absent_empty_and_subroute(loop_kind: str) -> None:
    obs = Observed()

    async def main() -> None:
        async with TestGrid(2, setup=setup_streams(obs)) as g:
            c = g.conn(0, 1)
            assert [x async for x in await c.new_stream(NOINIT)] == [b"None", b""]
            assert [x async for x in await c.new_stream(NOINIT, b"")] == [b"b''", b""]
            got = [x async for x in await c.subroute("disk", "1").new_stream(SUB)]
            assert got == [f"disk/1|{g.hosts[0]}".encode()]
            with pytest.raises(grid.RemoteUnknownHandler, match="subroute 'disk/2'") as ei:
                await c.subroute("disk", "2").new_stream(SUB)
            assert ei.value.message.startswith("Invalid Handler for type: [")  # Go's wire text
            with pytest.raises(grid.RemoteUnknownHandler, match="no handler for id 200 on") as ei:
                await c.new_stream(200, in_capacity=0, out_capacity=1)
            assert ei.value.message == "Invalid Handler for type: HandlerID(200)"
            with pytest.raises(grid.UnknownHandler, match="unknown mux handler: .*in_capacity="):
                await c.new_stream(200)
            await settle(g)
    run(loop_kind, main)


def test_stream_errors_end_both_sides(loop_kind: str) -> None:
    obs = Observed()

    async def main() -> None:
        async with TestGrid(2, setup=setup_streams(obs)) as g:
            c = g.conn(0, 1)
            s = await c.new_stream(FAIL)
            got = []
            with pytest.raises(grid.RemoteError) as ei:
                async for x in s:
                    got.append(x)
            assert got == [b"0", b"1", b"2"] and ei.value.message == "disk failed after 3"
            with pytest.raises(grid.RemoteError, match="KeyError: 'nope'"):
                await (await c.new_stream(CRASH)).results(lambda item: None)
            await settle(g)
    run(loop_kind, main)


@pytest.mark.parametrize("how", ["cancel", "task", "deadline", "context"])
def test_caller_cancel_reaches_handler(loop_kind: str, how: str) -> None:
    obs = Observed()

    async def main() -> None:
        async with TestGrid(2, setup=setup_streams(obs)) as g:
            c = g.conn(0, 1)
            s = await c.new_stream(HOLD, timeout=0.3 if how == "deadline" else None)
            assert await s.__anext__() == b"started"
            if how == "cancel":
                s.cancel()
                with pytest.raises(grid.GridError, match="cancelled"):
                    await s.__anext__()
            elif how == "task":
                t = asyncio.ensure_future(s.__anext__())
                await asyncio.sleep(0)
                t.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await t
            elif how == "deadline":
                with pytest.raises(TimeoutError):
                    await s.__anext__()
            else:
                async with s:
                    pass
            await settle(g)
            assert obs.cancelled == 1
    run(loop_kind, main)


def test_slow_consumer_stalls_producer_within_credit(loop_kind: str) -> None:
    obs = Observed()

    async def main() -> None:
        async with TestGrid(2, setup=setup_streams(obs)) as g:
            c = g.conn(0, 1)
            s = await c.new_stream(GEN, b"1000")  # out_capacity 4
            while obs.sent < 4:
                await asyncio.sleep(0.005)
            # Round trips in both directions: anything in flight has landed.
            g.managers[1].register_single(1, lambda p: p)
            g.managers[0].register_single(1, lambda p: p)
            assert await c.request(1, b"x") == b"x"
            assert await g.conn(1, 0).request(1, b"y") == b"y"
            assert obs.sent == 4 and len(s._state.items) == 4
            callee = g.conn(1, 0)._link.callees[s.mux_id]
            assert callee.state.credits == 0
            # Reading one item frees exactly one more send.
            assert await s.__anext__() == b"0"
            while obs.sent < 5:
                await asyncio.sleep(0.005)
            assert await c.request(1, b"x") == b"x"
            assert obs.sent == 5
            rest = [x async for x in s]
            assert len(rest) == 999
            await settle(g)
    run(loop_kind, main)


def test_thousand_concurrent_streams(loop_kind: str) -> None:
    obs = Observed()

    async def main() -> None:
        async with TestGrid(2, setup=setup_streams(obs)) as g:
            c = g.conn(0, 1)

            async def one(i: int) -> list[bytes]:
                s = await c.new_stream(ECHO1)
                await s.send(b"%d" % i)
                await s.close_send()
                return [x async for x in s]

            got = await asyncio.gather(*(one(i) for i in range(1000)))
            assert got == [[b"%d" % i] for i in range(1000)]
            await settle(g)
    run(loop_kind, main, timeout=120)


def test_dropped_connection_ends_streams_on_both_sides(loop_kind: str) -> None:
    obs = Observed()

    async def main() -> None:
        async with TestGrid(2, setup=setup_streams(obs)) as g:
            c = g.conn(0, 1)
            streams = [await c.new_stream(HOLD) for _ in range(5)]
            for s in streams:
                assert await s.__anext__() == b"started"
            assert c._wire is not None and c._wire.transport is not None
            c._wire.transport.abort()  # the socket dies
            for s in streams:
                with pytest.raises(grid.Disconnected):
                    await s.__anext__()
            for _ in range(500):
                if obs.cancelled == 5:
                    break
                await asyncio.sleep(0.01)
            assert obs.cancelled == 5
            await g.wait_connected()
            await settle(g)
    run(loop_kind, main)


def test_out_of_sequence_ends_stream(loop_kind: str) -> None:
    obs = Observed()

    async def main() -> None:
        from grid._impl import encode_message

        async with TestGrid(2, setup=setup_streams(obs)) as g:
            c = g.conn(0, 1)
            s = await c.new_stream(ECHO1)
            # A client message with a Seq from the future: the callee aborts.
            c._send(encode_message(s.mux_id, 7, 0, 0, 9, c._base, b"x"))
            with pytest.raises(grid.RemoteError, match="receive sequence number mismatch. want 1, got 7"):
                await s.__anext__()
            await settle(g)
            # And the caller's own check: a server message with a wrong Seq.
            s = await c.new_stream(ECHO1)
            callee = g.conn(1, 0)
            callee._send(encode_message(s.mux_id, 9, 0, 0, 10, callee._base, b"x"))
            with pytest.raises(grid.IncorrectSequence):
                await s.__anext__()
            await settle(g)
    run(loop_kind, main)


def test_window_and_eof_violations_end_only_that_stream(loop_kind: str) -> None:
    """A peer that sends past the credit window, or after its EOF, gets that
    stream ended with a readable reason (the compiled core hands such items to
    the stream's own checks); the connection and other streams go on."""
    obs = Observed()

    async def main() -> None:
        from grid._impl import encode_message

        async with TestGrid(2, setup=setup_streams(obs)) as g:
            c, callee = g.conn(0, 1), g.conn(1, 0)
            other = await c.new_stream(ECHO128)
            await other.send(b"before")
            assert await other.__anext__() == b"before"

            # Two inputs on a window of one: the handler's buffer is full.
            s = await c.new_stream(SINK)
            await s.send(b"a")  # spends the one credit
            c._send(encode_message(s.mux_id, s._state.next_send_seq(), 0, 0, 9, c._base, b"b"))
            with pytest.raises(grid.RemoteError, match="handler blocked"):
                await s.__anext__()

            # An input after the caller's EOF.
            s = await c.new_stream(SINK)
            await s.close_send()
            c._send(encode_message(s.mux_id, s._state.next_send_seq(), 0, 0, 9, c._base, b"late"))
            with pytest.raises(grid.RemoteError, match="did not expect inbound message"):
                await s.__anext__()

            # Replies past the caller's window of one (none read meanwhile):
            # what fits is delivered, then the stream fails on the caller.
            s = await c.new_stream(HOLD)
            srv = callee._link.callees[s.mux_id]
            for _ in range(2):
                callee._send(encode_message(s.mux_id, srv.state.next_send_seq(), 0, 0, 10,
                                            callee._base, b"extra"))
            await asyncio.wait_for(s._ended, 10)  # failed before anything was read
            got = []
            with pytest.raises(grid.GridError, match="Response was blocked"):
                async for x in s:
                    got.append(x)
            assert len(got) == 1

            await other.send(b"after")
            assert await other.__anext__() == b"after"
            await other.close_send()
            assert [x async for x in other] == []
            assert c.state is grid.State.CONNECTED
            await settle(g)
    run(loop_kind, main)


def test_stream_not_found_pong_and_frozen_peer(loop_kind: str) -> None:
    async def main() -> None:
        a, b = hosts_where_first_dials()
        me = grid.Manager(a, [a, b], lambda: "grid-test-token", stream_ping_interval=0.2,
                          retry_base=0.2)

        async def noop(*args: object) -> None:
            pass

        me.register_stream(10, grid.StreamHandler(noop, in_capacity=1, out_capacity=1))
        await me.start()
        peer = PeerProcess(b, [a, b], extra=["--stream-ping-interval", "0.2"])
        try:
            await peer.start()
            conn = me.connection(b)
            await conn.wait_for_connect(timeout=10)
            s = await conn.new_stream(10)
            await s.send(b"1")
            assert await s.__anext__() == b"1"
            peer.signal(signal.SIGSTOP)
            with pytest.raises(grid.Disconnected):
                await s.__anext__()  # no pongs for 2 intervals
            assert conn.state is grid.State.CONNECTED  # the connection itself survives
            peer.signal(signal.SIGCONT)
            s = await conn.new_stream(10)
            await s.send(b"2")
            assert await s.__anext__() == b"2"
            await s.close_send()
            assert [x async for x in s] == []
        finally:
            await peer.kill()
            await me.close()
    run(loop_kind, main, timeout=60)


def test_not_found_pong_ends_stream(loop_kind: str) -> None:
    obs = Observed()

    async def main() -> None:
        async with TestGrid(2, setup=setup_streams(obs), stream_ping_interval=0.1) as g:
            c = g.conn(0, 1)
            s = await c.new_stream(HOLD)
            assert await s.__anext__() == b"started"
            # The callee loses the stream without telling anyone.
            callee = g.conn(1, 0)
            callee._link.callees.pop(s.mux_id).close("forgotten")
            with pytest.raises(grid.Disconnected, match="remote terminated call"):
                await s.__anext__()
            await settle(g)
    run(loop_kind, main)


def test_million_messages_flat_memory() -> None:
    """A two-way 1/1 stream of 1,000,000 small messages: memory stays flat."""
    obs = Observed()

    async def main() -> None:
        async with TestGrid(2, setup=setup_streams(obs)) as g:
            c = g.conn(0, 1)
            s = await c.new_stream(ECHO1)
            n = 1_000_000
            rss_mid = 0

            async def feed() -> None:
                for i in range(n):
                    await s.send(b"m")
                await s.close_send()

            feeder = asyncio.ensure_future(feed())
            count = 0
            async for _ in s:
                count += 1
                if count == 100_000:
                    rss_mid = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            await feeder
            rss_end = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            assert count == n
            assert rss_end - rss_mid < 16 * 1024, (rss_mid, rss_end)  # KiB: < 16 MiB growth
            await settle(g)
    run("uvloop", main, timeout=900)
