"""Misuse a new user makes, and the errors and log lines it gets: oversized
payloads fail alone, Manager arguments are checked at construction (TLS
included), error texts name ids and subroutes as registered, stream
capacity mismatches are named at once, and the operations log stays
truthful and quiet on a clean shutdown.  Real sockets on 127.0.0.1, both
loops (and both modes: the suite runs twice)."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

import grid
from grid.errors import ENVELOPE_MAX, payload_limit
from grid.testing import TestGrid, free_ports
from support import make_tls, run

ECHO, SLOW, BIG_REPLY, BIG_REPLY_SYNC, SINK, TAKES_INPUT, BIG_ITEMS, BLOCKS = 1, 2, 3, 4, 5, 6, 7, 8
MAX = 1 << 20  # max_message_size of these grids
LIMIT = payload_limit(MAX)


class Gate:
    """Holds SLOW handlers until the test opens it; counts those running."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.running = 0
        self.all_running = asyncio.Event()
        self.want = 0


def setup(gate: Gate) -> Any:
    async def slow(p: bytes | None) -> bytes | None:
        gate.running += 1
        if gate.running == gate.want:
            gate.all_running.set()
        await gate.open.wait()
        return p

    async def big_reply(p: bytes | None) -> bytes:
        return b"\0" * (LIMIT + 1)

    async def sink(ctx: grid.StreamContext, payload: bytes | None,
                   inbound: AsyncIterator[bytes] | None, out: grid.StreamOut) -> None:
        assert inbound is not None
        async for item in inbound:
            await out.send(str(len(item)).encode())

    async def big_items(ctx: grid.StreamContext, payload: bytes | None,
                        inbound: AsyncIterator[bytes] | None, out: grid.StreamOut) -> None:
        await out.send(b"small")
        await out.send(b"\0" * (LIMIT + 1))

    def register(m: grid.Manager) -> None:
        m.register_single(ECHO, lambda p: p)
        m.register_single(SLOW, slow)
        m.register_single(BIG_REPLY, big_reply)
        m.register_single(BIG_REPLY_SYNC, lambda p: b"\0" * (LIMIT + 1))
        m.register_stream(SINK, grid.StreamHandler(sink, in_capacity=2, out_capacity=2))
        m.register_stream(BIG_ITEMS, grid.StreamHandler(big_items, out_capacity=4))
    return register


# -- item 2: oversized payloads


def test_oversized_payloads_fail_alone(loop_kind: str) -> None:
    gate = Gate()
    gate.want = 10

    async def main() -> None:
        async with TestGrid(2, setup=setup(gate), max_message_size=MAX) as g:
            c = g.conn(0, 1)
            slow = [c.request(SLOW, b"%d" % i, timeout=30.0) for i in range(10)]
            await asyncio.wait_for(gate.all_running.wait(), 10)
            for payload in (b"\0" * (LIMIT + 1), bytearray(LIMIT + 1),
                            memoryview(b"\0" * (2 * MAX))):
                with pytest.raises(grid.MessageTooLarge) as ei:
                    await c.request(ECHO, payload)
                assert isinstance(ei.value, ValueError)
                n = len(payload)
                assert f"request payload of {n} bytes exceeds the limit of {LIMIT} bytes" \
                    in str(ei.value)
                assert (ei.value.size, ei.value.limit) == (n, LIMIT)
            # Through a subroute, and with an int timeout (the slow path): the same.
            with pytest.raises(grid.MessageTooLarge):
                await c.subroute("x").request(ECHO, b"\0" * (LIMIT + 1), timeout=5)
            # Exactly at the limit: sent, and the reply (as large) comes back.
            assert await c.request(ECHO, b"\1" * LIMIT) == b"\1" * LIMIT
            # Replies over the limit: the caller gets the reason, nothing drops.
            for hid in (BIG_REPLY, BIG_REPLY_SYNC):
                with pytest.raises(grid.RemoteError, match=f"reply of {LIMIT + 1} bytes exceeds"):
                    await c.request(hid)
            # Streams: the initial payload, a caller's item, a handler's item.
            with pytest.raises(grid.MessageTooLarge, match="initial stream payload"):
                await c.new_stream(SINK, b"\0" * (LIMIT + 1))
            st = await c.new_stream(SINK)
            await st.send(b"abc")
            with pytest.raises(grid.MessageTooLarge, match="stream item of"):
                await st.send(b"\0" * (LIMIT + 1))
            await st.send(b"de")
            await st.close_send()
            assert [x async for x in st] == [b"3", b"2"]
            got = []
            with pytest.raises(grid.RemoteError, match="MessageTooLarge: .*stream item of"):
                async for item in await c.new_stream(BIG_ITEMS):
                    got.append(item)
            assert got == [b"small"]
            gate.open.set()
            assert await asyncio.gather(*slow) == [b"%d" % i for i in range(10)]
            assert c.stats().reconnects == 0 and c.connected
    run(loop_kind, main)


# -- item 4: TLS checked at construction


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    return make_tls(tmp_path_factory.mktemp("tls"))


def _https_pair() -> tuple[str, str]:
    """(a, b): https host strings such that a dials b."""
    from grid._impl import local_dials
    while True:
        a, b = (f"https://127.0.0.1:{p}" for p in free_ports(2))
        if local_dials(a, b):
            return a, b


def test_tls_settings_checked_up_front(tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    server, client = tls
    a, b = _https_pair()
    hosts = [a, b]
    with pytest.raises(ValueError, match="server-side context .* cannot dial .*pass client_ssl="):
        grid.Manager(a, hosts, lambda: "t", ssl=server)
    with pytest.raises(ValueError, match="client_ssl= is a server-side context"):
        grid.Manager(a, hosts, lambda: "t", ssl=server, client_ssl=server)
    with pytest.raises(ValueError, match="client-side context .* cannot serve"):
        grid.Manager(a, hosts, lambda: "t", ssl=client)
    with pytest.raises(ValueError, match="no TLS context was given: pass client_ssl="):
        grid.Manager(a, hosts, lambda: "t")
    with pytest.raises(TypeError, match="ssl= must be an ssl.SSLContext or None, not str"):
        grid.Manager(a, hosts, lambda: "t", ssl="cert.pem")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="client_ssl= must be an ssl.SSLContext"):
        grid.Manager(a, hosts, lambda: "t", ssl=server, client_ssl=True)  # type: ignore[arg-type]
    # What works: both contexts; a node that dials no https peer needs no client context.
    grid.Manager(a, hosts, lambda: "t", ssl=server, client_ssl=client)
    grid.Manager(b, hosts, lambda: "t", ssl=server)


def test_tls_grid_with_checked_contexts(loop_kind: str,
                                        tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    server, client = tls
    a, b = _https_pair()

    async def main() -> None:
        ma = grid.Manager(a, [a, b], lambda: "t", ssl=server, client_ssl=client)
        mb = grid.Manager(b, [a, b], lambda: "t", ssl=server)  # accepts only
        mb.register_single(ECHO, lambda p: p)
        await mb.start()
        await ma.start()
        try:
            c = ma.connection(b)
            assert c is not None
            await c.wait_for_connect(timeout=10)
            assert await c.request(ECHO, b"tls") == b"tls"
        finally:
            await ma.close()
            await mb.close()
    run(loop_kind, main)


# -- item 7: every Manager argument checked at construction

H1, H2 = "http://127.0.0.1:9001", "http://127.0.0.1:9002"


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(auth_fn="secret"), TypeError, "auth_fn must be a function .* not str"),
    (dict(validate_token="secret"), TypeError, "validate_token must be a function"),
    (dict(hosts=f"{H1},{H2}"), TypeError, r"not one str; .*\.split\(','\)"),
    (dict(hosts=[H1, H2 + "/"]), ValueError, r"hosts\[1\] .* after host:port \('/'\)"),
    (dict(hosts=[H1, H2 + "/minio"]), ValueError, "after host:port"),
    (dict(hosts=[H1, "127.0.0.1:9002"]), ValueError, "has no scheme: write 'http://127.0.0.1:9002'"),
    (dict(hosts=[H1, 9002]), TypeError, r"hosts\[1\] must be a host string"),
    (dict(hosts=[H1, H2, H2]), ValueError, "appears 2 times in hosts"),
    (dict(hosts=[]), ValueError, "hosts is empty"),
    (dict(local="http://127.0.0.1:9003"), ValueError,
     r"must appear exactly once in hosts \['http.*byte for byte"),
    (dict(local=H1 + "/"), ValueError, "local .* after host:port"),
    (dict(ping_interval=-1), ValueError, "ping_interval must be a finite number of seconds > 0"),
    (dict(ping_interval=0), ValueError, "ping_interval"),
    (dict(dial_timeout="2"), TypeError, "dial_timeout must be a number of seconds, not str"),
    (dict(write_timeout=float("nan")), ValueError, "write_timeout"),
    (dict(default_timeout=0.0001), ValueError, "default_timeout must be between"),
    (dict(retry_base=-0.5), ValueError, "retry_base must be .* >= 0"),
    (dict(max_streams=1.5), TypeError, "max_streams must be an int"),
    (dict(send_queue_size=0), ValueError, "send_queue_size must be >= 1"),
    (dict(max_running_handlers=True), TypeError, "max_running_handlers must be an int"),
    (dict(max_queued_requests=-1), ValueError, "max_queued_requests must be >= 0"),
    (dict(max_message_size=100), ValueError, "max_message_size must be >= 1024"),
    (dict(route_path="minio/grid"), ValueError, "route_path must be a path starting with '/'"),
])
def test_manager_arguments_checked(kwargs: dict[str, Any], exc: type[Exception],
                                   match: str) -> None:
    args: dict[str, Any] = dict(local=H1, hosts=[H1, H2], auth_fn=lambda: "t")
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        grid.Manager(**args)


def test_type_errors_and_use_after_close(loop_kind: str) -> None:
    async def main() -> None:
        g = TestGrid(2, setup=setup(Gate()))
        async with g:
            c = g.conn(0, 1)
            with pytest.raises(TypeError, match="payload must be bytes, bytearray, memoryview "
                                                "or None, not int"):
                await c.request(ECHO, 5)
            with pytest.raises(TypeError, match="timeout must be a number of seconds or None, "
                                                "not str"):
                await c.request(ECHO, b"x", timeout="1")
            with pytest.raises(TypeError, match="payload must be .* not int"):
                await c.new_stream(SINK, 5)
            with pytest.raises(TypeError, match="timeout must be a number"):
                await c.new_stream(SINK, timeout="1")
            st = await c.new_stream(SINK)
            with pytest.raises(TypeError, match="item must be .* not int"):
                await st.send(7)
            st.cancel()
            assert await c.request(ECHO, b"ok", timeout=2) == b"ok"  # an int timeout is fine
        m = g.managers[0]
        with pytest.raises(grid.Disconnected, match="manager is closed"):
            await c.request(ECHO, b"x")
        with pytest.raises(grid.GridError, match="manager is closed"):
            await m.start()
    run(loop_kind, main)


# -- item 5: texts a Python user reads


def test_error_texts_name_ids_and_subroutes() -> None:
    m = grid.Manager(H1, [H1, H2], lambda: "t")
    m.register_single(2, lambda p: p)
    m.register_single(2, lambda p: p, subroute="disk/1")
    with pytest.raises(grid.HandlerAlreadyExists) as ei:
        m.register_single(2, lambda p: p)
    assert str(ei.value) == "handler id 2 is already registered"
    assert ei.value.go_text == "handler LockRLock: mux handler already exists"
    with pytest.raises(grid.HandlerAlreadyExists) as ei:
        m.register_single(2, lambda p: p, subroute="disk/1")
    assert str(ei.value) == "handler id 2 (subroute 'disk/1') is already registered"
    assert ei.value.go_text == "handler LockRLock, subroute:disk/1: mux handler already exists"


def test_unknown_handler_names_id_subroute_and_host(loop_kind: str) -> None:
    async def main() -> None:
        async with TestGrid(2, setup=setup(Gate())) as g:
            c = g.conn(0, 1)
            with pytest.raises(grid.RemoteUnknownHandler) as ei:
                await c.request(50)
            assert str(ei.value) == f"no handler for id 50 on {g.hosts[1]}"
            assert ei.value.message == "Invalid Handler for type: GetCPUs"
            assert (ei.value.handler_id, ei.value.subroute, ei.value.remote) == (50, None, g.hosts[1])
            with pytest.raises(grid.RemoteUnknownHandler) as ei:
                await c.subroute("disk", "9").request(50)
            assert str(ei.value) == f"no handler for id 50 (subroute 'disk/9') on {g.hosts[1]}"
            assert ei.value.message.startswith("Invalid Handler for type: [50 ")
            with pytest.raises(grid.RemoteUnknownHandler) as ei:
                await c.subroute("disk/9").new_stream(SINK, in_capacity=0, out_capacity=1)
            assert str(ei.value) == f"no handler for id {SINK} (subroute 'disk/9') on {g.hosts[1]}"
    run(loop_kind, main)


# -- item 6: stream capacity pitfalls


def test_stream_capacity_pitfalls_named(loop_kind: str) -> None:
    async def takes_input(ctx: grid.StreamContext, payload: bytes | None,
                          inbound: AsyncIterator[bytes] | None, out: grid.StreamOut) -> None:
        assert inbound is not None
        async for item in inbound:
            await out.send(item)

    def register(m: grid.Manager) -> None:
        if m.local == g.hosts[1]:  # registered on the callee only
            m.register_stream(TAKES_INPUT, grid.StreamHandler(takes_input, in_capacity=4))

    g = TestGrid(2, setup=register)

    async def main() -> None:
        async with g:
            c = g.conn(0, 1)
            with pytest.raises(grid.UnknownHandler) as ei:
                await c.new_stream(TAKES_INPUT)
            assert "register the StreamHandler on this node too, or pass " \
                "in_capacity=/out_capacity= to new_stream" in str(ei.value)
            # No input from the caller, a handler that reads input: refused at
            # once (not a hang until a deadline), saying what to pass.
            t0 = time.monotonic()
            with pytest.raises(grid.RemoteError) as ej:
                await asyncio.wait_for(c.new_stream(TAKES_INPUT, in_capacity=0, out_capacity=1),
                                       10)
            assert time.monotonic() - t0 < 5
            assert not isinstance(ej.value, grid.UnknownHandler)
            assert "reads input (in_capacity=4) but the caller opened the stream with " \
                "in_capacity=0" in str(ej.value)
            assert "pass in_capacity=4 to new_stream" in str(ej.value)
            st = await c.new_stream(TAKES_INPUT, in_capacity=4, out_capacity=1)
            await st.send(b"a")
            await st.close_send()
            assert [x async for x in st] == [b"a"]
    run(loop_kind, main)


# -- item 10: the operations log


class Records(logging.Handler):
    """Collects grid's log records; wakes a waiter when one matches."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.waiters: list[tuple[str, int, asyncio.Future[None]]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        text = record.getMessage()
        for want, level, fut in self.waiters:
            if want in text and record.levelno >= level and not fut.done():
                fut.get_loop().call_soon_threadsafe(fut.set_result, None)

    async def wait_for(self, text: str, level: int = logging.DEBUG) -> None:
        fut = asyncio.get_running_loop().create_future()
        self.waiters.append((text, level, fut))
        if any(text in r.getMessage() and r.levelno >= level for r in self.records):
            return
        await asyncio.wait_for(fut, 10)

    def at_least(self, level: int) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno >= level]


@pytest.fixture
def records() -> Iterator[Records]:
    h = Records()
    logger = logging.getLogger("grid")
    old = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(h)
    try:
        yield h
    finally:
        logger.removeHandler(h)
        logger.setLevel(old)


def test_clean_shutdown_logs_no_warning(loop_kind: str, records: Records) -> None:
    async def main() -> None:
        async with TestGrid(3, setup=setup(Gate())) as g:
            assert await g.conn(0, 1).request(ECHO, b"x") == b"x"
            await g.managers[0].close()
            # The peers see the socket close: INFO, no warning.
            await records.wait_for(f"-> {g.hosts[0]}: disconnected: connection closed by peer",
                                   logging.INFO)
        assert records.at_least(logging.WARNING) == []
    run(loop_kind, main)


def test_peer_that_stays_away_warns(loop_kind: str, records: Records) -> None:
    async def main() -> None:
        async with TestGrid(2, setup=setup(Gate()), ping_interval=0.2) as g:
            await g.managers[1].close()
            await records.wait_for(f"{g.hosts[0]} -> {g.hosts[1]}: still disconnected 0.4 s",
                                   logging.WARNING)
    run(loop_kind, main)


def test_connected_line_follows_disconnected(loop_kind: str, records: Records) -> None:
    async def main() -> None:
        g = TestGrid(2, setup=setup(Gate()), retry_base=0.2)
        async with g:
            a, b = g.hosts
            m = g.managers[1]
            await m.close()  # a "restart" of b, well within the log interval
            await records.wait_for(f"-> {b}: disconnected", logging.INFO)
            b2 = grid.Manager(b, g.hosts, lambda: "grid-test-token", retry_base=0.2)
            b2.register_single(ECHO, lambda p: p)
            await b2.start()
            try:
                c = g.conn(0, 1)
                await c.wait_for_connect(timeout=10)
                await records.wait_for(f"{a} connected to {b} (reconnect 1)", logging.INFO)
                assert await c.request(ECHO, b"again") == b"again"
            finally:
                await b2.close()
        # a's own lines about b: the first "connected" (less than the log
        # interval ago) does not hold back the one after the restart.
        lines = [r for r in records.at_least(logging.INFO)
                 if r.startswith((f"grid: {a} connected to {b}", f"grid: {a} -> {b}:"))]
        kinds = ["down" if "disconnected" in r else "up" for r in lines]
        assert kinds == ["up", "down", "up"], lines
    run(loop_kind, main)


def test_slow_sync_handler_warns(loop_kind: str, records: Records) -> None:
    def blocking(p: bytes | None) -> bytes | None:
        time.sleep(0.15)  # the misuse under test: blocking the event loop
        return p

    async def main() -> None:
        async with TestGrid(2, setup=lambda m: m.register_single(9, blocking,
                                                                   subroute="disk/1")) as g:
            c = g.conn(0, 1).subroute("disk/1")
            assert await c.request(9, b"a") == b"a"
            assert await c.request(9, b"b") == b"b"
        warns = [r for r in records.at_least(logging.WARNING) if "sync handler" in r]
        assert len(warns) == 1, warns  # rate-limited
        assert "sync handler id 9 (subroute 'disk/1') ran 0.1" in warns[0]
        assert "async def" in warns[0]
    run(loop_kind, main)


def test_envelope_bound_is_exact() -> None:
    from grid._codec_py import encode_message
    from grid._consts import FLAG_CRC, FLAG_SUBROUTE
    msg = encode_message(2**64 - 1, 2**32 - 1, 2**32 - 1, 255, 255, FLAG_CRC | FLAG_SUBROUTE | 0x80,
                         b"\0" * 70000, bytes(32))
    assert len(msg) - 70000 == ENVELOPE_MAX
