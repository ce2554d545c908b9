"""Connections, the Manager and single requests over real loopback sockets.

Every test runs on asyncio's default loop and on uvloop (``loop_kind``), and
the whole file runs in both codec modes (the suite runs twice).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from pathlib import Path

import pytest

import grid
from grid.testing import TestGrid, free_port, free_ports
from support import PeerProcess, WireTap, hosts_where_first_dials, run

ECHO, FAIL, SLOW, CTX, BOOM = 1, 2, 3, 4, 5


def register_all(m: grid.Manager) -> None:
    async def fail(p: bytes | None) -> bytes:
        raise grid.RemoteError("not found")

    async def slow(p: bytes | None) -> bytes | None:
        await asyncio.sleep(float(p or b"0"))
        return p

    def ctx(p: bytes | None) -> bytes:
        c = grid.current_call()
        assert c is not None
        return f"{c.caller}|{c.subroute}|{c.handler_id}|{c.deadline is not None}".encode()

    def boom(p: bytes | None) -> bytes:
        raise ValueError("boom")

    m.register_single(ECHO, lambda p: p)
    m.register_single(FAIL, fail)
    m.register_single(SLOW, slow)
    m.register_single(CTX, ctx)
    m.register_single(CTX, ctx, subroute="disk/1")
    m.register_single(BOOM, boom)
    m.register_single(ECHO, lambda p: b"sub:" + (p or b""), subroute="disk/1")


def test_echo_absent_and_empty_both_ways(loop_kind: str) -> None:
    async def main() -> None:
        async with TestGrid(2, setup=register_all) as g:
            for a, b in ((0, 1), (1, 0)):  # both directions, whoever dialed
                c = g.conn(a, b)
                assert c.state is grid.State.CONNECTED
                assert await c.request(ECHO, b"ping") == b"ping"
                assert await c.request(ECHO) is None
                assert await c.request(ECHO, b"") == b""
                big = bytes(range(256)) * 400
                assert await c.request(ECHO, big) == big
    run(loop_kind, main)


def test_remote_errors_and_handler_exceptions(loop_kind: str, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async with TestGrid(2, setup=register_all) as g:
            c = g.conn(0, 1)
            with pytest.raises(grid.RemoteError) as ei:
                await c.request(FAIL, b"x")
            assert ei.value.message == "not found"
            with caplog.at_level(logging.ERROR, logger="grid"):
                with pytest.raises(grid.RemoteError) as ei:
                    await c.request(BOOM)
            assert ei.value.message == "ValueError: boom"
            assert any("boom" in r.getMessage() and r.exc_info is not None
                       for r in caplog.records)
            # The connection is unharmed.
            assert await c.request(ECHO, b"after") == b"after"
            assert c.stats().reconnects == 0
    run(loop_kind, main)


def test_subroutes_unknown_handlers_and_context(loop_kind: str) -> None:
    async def main() -> None:
        async with TestGrid(2, setup=register_all) as g:
            c = g.conn(0, 1)
            assert await c.subroute("disk", "1").request(ECHO, b"x") == b"sub:x"
            assert await c.subroute("disk").subroute("1").request(ECHO, b"y") == b"sub:y"
            with pytest.raises(grid.RemoteUnknownHandler) as ei:
                await c.subroute("disk", "2").request(ECHO, b"x")
            assert ei.value.message.startswith("Invalid Handler for type: [1 0 ")
            assert str(ei.value) == f"no handler for id {ECHO} (subroute 'disk/2') on {g.hosts[1]}"
            with pytest.raises(grid.UnknownHandler):
                await c.request(77)
            with pytest.raises(grid.RemoteError) as ei:
                await c.request(77)
            assert ei.value.message == "Invalid Handler for type: CheckParts3"  # Go's wire text
            assert str(ei.value) == f"no handler for id 77 on {g.hosts[1]}"
            with pytest.raises(grid.UnknownHandler):
                await c.request(0)
            with pytest.raises(grid.UnknownHandler):
                await c.request(256)
            assert await c.request(CTX) == f"{g.hosts[0]}|None|{CTX}|True".encode()
            assert await c.subroute("disk", "1").request(CTX) == f"{g.hosts[0]}|disk/1|{CTX}|True".encode()
            assert grid.current_call() is None
    run(loop_kind, main)


def test_register_errors() -> None:
    m = grid.Manager("http://127.0.0.1:1", ["http://127.0.0.1:1"], lambda: "t")
    m.register_single(ECHO, lambda p: p)
    with pytest.raises(grid.HandlerAlreadyExists):
        m.register_single(ECHO, lambda p: p)
    m.register_single(ECHO, lambda p: p, subroute="a")
    with pytest.raises(grid.HandlerAlreadyExists):
        m.register_single(ECHO, lambda p: p, subroute="a")
    for bad in (0, 256, -1):
        with pytest.raises(grid.UnknownHandler):
            m.register_single(bad, lambda p: p)
    with pytest.raises(ValueError):
        grid.Manager("http://127.0.0.1:1", ["http://127.0.0.1:2"], lambda: "t")


def test_deadline_on_caller_and_callee(loop_kind: str) -> None:
    async def main() -> None:
        def blocking(p: bytes | None) -> bytes:
            time.sleep(0.15)  # simulated work past the caller's deadline
            return b"late"

        def setup(m: grid.Manager) -> None:
            register_all(m)
            m.register_single(9, blocking)

        async with TestGrid(2, setup=setup) as g:
            c = g.conn(0, 1)
            callee = g.managers[1].connection(g.hosts[0])
            t0 = time.monotonic()
            with pytest.raises(TimeoutError):
                await c.request(SLOW, b"5", timeout=0.1)
            assert time.monotonic() - t0 < 2
            before = callee.stats().messages_out
            with pytest.raises(TimeoutError):
                await c.request(9, timeout=0.05)
            # Round trip after: the callee sent the echo reply only, not the late one.
            assert await c.request(ECHO, b"x") == b"x"
            assert callee.stats().messages_out - before == 1
            assert c.stats().outstanding_requests == 0
    run(loop_kind, main)


def test_ten_thousand_concurrent_requests(loop_kind: str) -> None:
    async def main() -> None:
        def twist(p: bytes | None) -> bytes:
            assert p is not None
            return p[::-1]

        def setup(m: grid.Manager) -> None:
            m.register_single(6, twist)

        async with TestGrid(2, setup=setup) as g:
            c = g.conn(0, 1)
            payloads = [f"req-{i:05d}".encode() * 3 for i in range(10_000)]
            replies = await asyncio.gather(*(c.request(6, p) for p in payloads))
            assert replies == [p[::-1] for p in payloads]
            s = c.stats()
            assert s.outstanding_requests == 0
            assert s.messages_out >= 10_000 and s.messages_in >= 10_000
            # Every reply's bytes came through the socket and are counted.
            assert s.bytes_in >= sum(map(len, payloads))
    run(loop_kind, main, timeout=120)


def test_bad_token_rejected_with_reason(loop_kind: str) -> None:
    async def main() -> None:
        a, b = hosts_where_first_dials()
        good = grid.Manager(b, [a, b], lambda: "good", lambda t: _expect(t, "good"))
        bad = grid.Manager(a, [a, b], lambda: "wrong", lambda t: _expect(t, "good"),
                           retry_base=0.2)
        await good.start()
        await bad.start()
        try:
            conn = bad.connection(b)
            assert conn.dials
            with pytest.raises(TimeoutError, match="403"):
                await conn.wait_for_connect(timeout=1.0)
            assert conn.state is grid.State.CONNECTION_ERROR
            assert "auth token: invalid token" in (conn.stats().last_error or "")
            with pytest.raises(grid.Disconnected):
                await conn.request(ECHO)
        finally:
            await bad.close()
            await good.close()
    run(loop_kind, main)


def _expect(token: str, want: str) -> None:
    if token != want:
        raise PermissionError("invalid token")


def test_unknown_host_rejected_in_handshake(loop_kind: str) -> None:
    async def main() -> None:
        a, b = hosts_where_first_dials()
        acceptor = grid.Manager(b, [b, f"http://127.0.0.1:{free_port()}"], lambda: "t")
        stranger = grid.Manager(a, [a, b], lambda: "t", retry_base=0.2)
        await acceptor.start()
        await stranger.start()
        try:
            conn = stranger.connection(b)
            with pytest.raises(TimeoutError):
                await conn.wait_for_connect(timeout=1.0)
            assert conn.stats().last_error == f"connection rejected: unknown incoming host: {a}"
        finally:
            await stranger.close()
            await acceptor.close()
    run(loop_kind, main)


def test_states_and_calls_while_down(loop_kind: str) -> None:
    async def main() -> None:
        a, b = hosts_where_first_dials()
        ma = grid.Manager(a, [a, b], lambda: "t", retry_base=0.2)
        mb = grid.Manager(b, [a, b], lambda: "t")
        mb.register_single(ECHO, lambda p: p)
        await ma.start()
        conn = ma.connection(b)
        with pytest.raises(grid.Disconnected) as ei:
            await conn.request(ECHO)
        assert isinstance(ei.value, ConnectionError) and str(ei.value) == "remote disconnected"
        await mb.start()  # the dialer's retries find it
        await conn.wait_for_connect(timeout=5)
        assert conn.state is grid.State.CONNECTED
        assert mb.connection(a).state is grid.State.CONNECTED
        assert await conn.request(ECHO, b"up") == b"up"
        st = ma.stats()
        assert st.connected == 1 and st.connections[0].last_connect_time is not None
        await mb.close()
        await ma.close()
        assert conn.state is grid.State.SHUTDOWN
    run(loop_kind, main)


def test_merged_containers_on_the_wire(loop_kind: str) -> None:
    async def main() -> None:
        a, b = hosts_where_first_dials()
        real_port = free_port()
        tap = WireTap(real_port)
        ma = grid.Manager(a, [a, b], lambda: "t")
        mb = grid.Manager(b, [a, b], lambda: "t")
        mb.register_single(ECHO, lambda p: p)
        await tap.start(int(b.rsplit(":", 1)[1]))
        await mb.start(listen=("127.0.0.1", real_port))
        await ma.start()
        try:
            conn = ma.connection(b)
            await conn.wait_for_connect(timeout=5)
            assert await conn.request(ECHO, b"alone") == b"alone"
            n_before = len(tap.frames["c2s"])
            await asyncio.gather(*(conn.request(ECHO, b"x" * 512) for _ in range(500)))
            # Wait for the tap to see every reply (it forwards before it records).
            for _ in range(1000):
                if sum(len(f) - (f[0] == 17) for f in tap.frames["s2c"]) >= 501:
                    break
                await asyncio.sleep(0.005)
            plain = [f for f in tap.frames["c2s"][:n_before] if f == [14]]
            assert plain, "a lone request goes out as a plain frame"
            merged = [f for f in tap.frames["c2s"][n_before:] if f[0] == 17]
            assert merged, "requests queued together leave as merged containers"
            assert all(2 <= len(f) - 1 <= 51 for f in merged)
            assert any(f[0] == 17 and set(f[1:]) == {15} for f in tap.frames["s2c"])
            sent = sum(len(f) - 1 if f[0] == 17 else 1 for f in tap.frames["c2s"][n_before:])
            assert sent == 500
        finally:
            await ma.close()
            await mb.close()
            await tap.close()
    run(loop_kind, main)


def test_peer_killed_mid_flight_then_restarted(loop_kind: str) -> None:
    async def main() -> None:
        a, b = hosts_where_first_dials()
        me = grid.Manager(a, [a, b], lambda: "grid-test-token",
                          lambda t: _expect(t, "grid-test-token"), retry_base=0.2)
        await me.start()
        peer = PeerProcess(b, [a, b])
        try:
            await peer.start()
            conn = me.connection(b)
            await conn.wait_for_connect(timeout=10)
            first_pid = await conn.request(3)
            calls = [asyncio.ensure_future(conn.request(2, b"%d" % i)) for i in range(1000)]
            while conn.stats().outstanding_requests < 1000:
                await asyncio.sleep(0.01)
            await peer.kill()
            results = await asyncio.gather(*calls, return_exceptions=True)
            assert all(isinstance(r, grid.Disconnected) for r in results)
            assert conn.stats().outstanding_requests == 0
            await peer.start()
            await conn.wait_for_connect(timeout=10)
            assert await conn.request(ECHO, b"back") == b"back"
            assert await conn.request(3) != first_pid
            assert conn.stats().reconnects == 1
        finally:
            await peer.kill()
            await me.close()
    run(loop_kind, main, timeout=90)


def test_keepalive_rtt_and_frozen_peer(loop_kind: str) -> None:
    async def main() -> None:
        a, b = hosts_where_first_dials()
        me = grid.Manager(a, [a, b], lambda: "grid-test-token", ping_interval=0.2,
                          retry_base=0.2)
        await me.start()
        peer = PeerProcess(b, [a, b], extra=["--ping-interval", "0.2"])
        try:
            await peer.start()
            conn = me.connection(b)
            await conn.wait_for_connect(timeout=10)
            while conn.stats().last_ping_rtt is None:
                await asyncio.sleep(0.05)
            assert 0 <= conn.stats().last_ping_rtt < 1.0  # type: ignore[operator]
            peer.signal(signal.SIGSTOP)
            t0 = time.monotonic()
            while conn.state is grid.State.CONNECTED:
                await asyncio.sleep(0.02)
            # Dropped within 2 x interval (+ one tick of slack).
            assert time.monotonic() - t0 < 1.5
            assert "no pong" in (conn.last_error or "")
            peer.signal(signal.SIGCONT)
            await conn.wait_for_connect(timeout=10)
            assert await conn.request(ECHO, b"alive") == b"alive"
        finally:
            await peer.kill()
            await me.close()
    run(loop_kind, main, timeout=60)


def test_websocket_ping_answered(loop_kind: str) -> None:
    async def main() -> None:
        from grid import _codec_py, _http

        host = f"http://127.0.0.1:{free_port()}"
        m = grid.Manager(host, [host], lambda: "t", lambda t: _expect(t, "t"))
        await m.start()
        try:
            r, w = await asyncio.open_connection("127.0.0.1", int(host.rsplit(":", 1)[1]))
            key = _http.new_key()
            w.write(_http.upgrade_request(_http.parse_host(host), grid.ROUTE_PATH, key, "t",
                                          time.time_ns()))
            head = await r.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 101")
            w.write(_codec_py.encode_frame(b"hello", 0x9, b"\x01\x02\x03\x04"))
            parser = _codec_py.FrameParser(server=False)
            events: list[tuple[int, bytes]] = []
            while not events:
                events += parser.feed(await r.read(100))
            assert events == [(0xA, b"hello")]
            w.close()
        finally:
            await m.close()
    run(loop_kind, main)


def test_embedding_in_own_http_server(loop_kind: str) -> None:
    """The README's recipe: another asyncio server owns the port and hands
    grid's upgrade requests to the manager."""

    async def main() -> None:
        a, b = hosts_where_first_dials()
        port_b = int(b.rsplit(":", 1)[1])
        ma = grid.Manager(a, [a, b], lambda: "t", lambda t: _expect(t, "t"))
        mb = grid.Manager(b, [a, b], lambda: "t", lambda t: _expect(t, "t"))
        mb.register_single(ECHO, lambda p: b"embedded:" + (p or b""))
        other_routes: list[str] = []

        async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            head = await reader.readuntil(b"\r\n\r\n")
            method, path, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
            headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n")[1:] if line)
            if path != grid.ROUTE_PATH:
                other_routes.append(path)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                writer.close()
                return
            status, response = mb.check_upgrade(method, path, headers)
            writer.write(response)
            if status != 101:
                writer.close()
                return
            await mb.adopt_stream(reader, writer)

        await mb.start(serve=False)
        server = await asyncio.start_server(on_client, "127.0.0.1", port_b)
        await ma.start()
        try:
            r, w = await asyncio.open_connection("127.0.0.1", port_b)
            w.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await r.read()).endswith(b"ok")
            conn = ma.connection(b)
            await conn.wait_for_connect(timeout=5)
            assert await conn.request(ECHO, b"hi") == b"embedded:hi"
            assert other_routes == ["/health"]
        finally:
            await ma.close()
            await mb.close()
            server.close()
    run(loop_kind, main)


def test_tls_grid_without_crc(loop_kind: str, tmp_path: Path) -> None:
    from support import make_tls

    server_ctx, client_ctx = make_tls(tmp_path)

    async def main() -> None:
        hosts = [f"https://127.0.0.1:{p}" for p in free_ports(2)]
        mgrs = [grid.Manager(h, hosts, lambda: "t", lambda t: _expect(t, "t"), ssl=server_ctx,
                             client_ssl=client_ctx) for h in hosts]
        for m in mgrs:
            m.register_single(ECHO, lambda p: p)
        for m in mgrs:
            await m.start()
        try:
            c = mgrs[0].connection(hosts[1])
            await c.wait_for_connect(timeout=10)
            assert c._base == 0  # both ends TLS: no CRC trailer (§1.6)
            assert await c.request(ECHO, b"secret") == b"secret"
            assert await mgrs[1].connection(hosts[0]).request(ECHO, b"back") == b"back"
            wire = c._wire
            assert wire is not None and wire.transport.get_extra_info("ssl_object") is not None  # type: ignore[union-attr]
        finally:
            for m in mgrs:
                await m.close()
    run(loop_kind, main)


def test_late_reply_to_a_cancelled_call_is_dropped(loop_kind: str) -> None:
    """A caller that cancels its await abandons the call; the reply that
    arrives afterwards is dropped quietly (§3.4) and the connection goes on."""
    async def main() -> None:
        loop = asyncio.get_running_loop()
        release, returned = loop.create_future(), loop.create_future()

        async def held(payload: bytes | None) -> bytes | None:
            await release
            returned.set_result(None)
            return payload

        def setup(m: grid.Manager) -> None:
            m.register_single(6, held)
            m.register_single(7, lambda p: p)

        async with TestGrid(2, setup=setup) as g:
            c = g.conn(0, 1)
            fut = c.request(6, b"late")
            fut.cancel()
            release.set_result(None)
            await returned
            assert await c.request(7, b"after") == b"after"
            assert c.stats().outstanding_requests == 0  # the late reply was taken
            assert c.stats().state is grid.State.CONNECTED
    run(loop_kind, main)
