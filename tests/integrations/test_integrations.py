"""A grid node mounted in another server: aiohttp (grid.integrations.aiohttp)
and ASGI servers (grid.integrations.asgi under uvicorn and hypercorn).

Each scenario forms a grid of a plain embedded-server node and a mounted node
on 127.0.0.1, over real sockets: requests and two-way streams both ways, the
app's other routes, a refused token, and a server stop (Disconnected) and
restart (reconnect).  The message-level ConnCore methods these integrations
use are checked on both twins first.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import pytest

import grid
from grid import _codec_py, _http, _payloads
from grid._consts import WS_BINARY, Op
from grid._impl import local_dials
from grid.testing import free_port

from support import hosts_where_first_dials, run

aiohttp = pytest.importorskip("aiohttp", reason="aiohttp is not installed (gridmux[aiohttp] extra)")
from aiohttp import web  # noqa: E402

from grid.integrations.aiohttp import mount  # noqa: E402
from grid.integrations.asgi import GridASGI  # noqa: E402

ECHO, SLOW, STREAM = 1, 2, 3
TOKEN = "integration-token"


# ---------------------------------------------------------------- the ConnCore message API


class _Owner:
    def __init__(self) -> None:
        self.flushes = 0
        self.early = 0
        self.got: list[Any] = []

    def _schedule_flush(self) -> None:
        self.flushes += 1

    def _flush_early(self) -> None:
        self.early += 1  # a real owner writes what is queued; here it stays to be taken

    def _on_message(self, m: Any) -> None:
        self.got.append(m)

    def _on_control(self, opcode: int, payload: bytes) -> None:
        raise AssertionError("no control frames at message level")

    def _handler_failed(self, m: Any, exc: BaseException) -> str:
        return repr(exc)


def _core(mux: Any, owner: _Owner) -> Any:
    return mux.ConnCore(owner, True, 1 << 20, None)


def _requests(n: int, codec: Any = _codec_py) -> list[bytes]:
    return [codec.encode_message(i + 1, 0, 1000, 1, 14, 0x01, bytes([i % 251]) * (i * 97 % 4000))
            for i in range(n)]


def test_take_messages_batches_like_take_frames(mux: Any) -> None:
    """take_messages yields exactly the payloads of take_frames's frames."""
    for n in (1, 2, 49, 50, 51, 130):
        framed, bare = _core(mux, _Owner()), _core(mux, _Owner())
        msgs = _requests(n)
        for m in msgs:
            framed.send(m)
            bare.send(m)
        frames = framed.take_frames(None)
        payloads = [p for op, p in _codec_py.FrameParser(server=False).feed(frames)]
        out = bare.take_messages()
        assert out == payloads
        assert bare.take_messages() is None and bare.queue == [] and bare.queued_bytes == 0
        assert bare.msgs_out == n and bare.bytes_out == sum(len(p) for p in out)
        inner = [m for p in out for m in _codec_py.decode_messages(p)]
        assert [m.mux_id for m in inner] == list(range(1, n + 1))
        if n > 1:
            assert len(out) < n  # merged containers, not one message each


def test_feed_message_dispatches_plain_and_merged(mux: Any) -> None:
    owner = _Owner()
    core = _core(mux, owner)
    msgs = _requests(5)
    core.feed_message(msgs[0])
    core.feed_message(_codec_py.encode_merged(msgs[1:]))
    assert [m.mux_id for m in owner.got] == [1, 2, 3, 4, 5]
    assert core.msgs_in == 5
    with pytest.raises(grid.ProtocolError):
        core.feed_message(b"\x93\x01")


def test_feed_message_resolves_responses_and_runs_inline_handlers(mux: Any) -> None:
    owner = _Owner()
    core = _core(mux, owner)
    loop = asyncio.new_event_loop()
    core.attach(owner, caller="", base_flags=0, ids=mux.MuxIdAllocator(), loop=loop,
                singles={}, singles_sub={}, callers={}, callees={}, default_timeout=60.0,
                queue_limit=65535, sweep_at=float("inf"))
    try:
        fut = loop.create_future()
        mux_id = core.request(fut, ECHO, b"q", 5.0, None)
        core.take_messages()
        core.feed_message(_codec_py.encode_message(mux_id, 0, 0, 0, 15, 0x02, b"reply"))
        assert fut.result() == b"reply"
    finally:
        loop.close()


# ---------------------------------------------------------------- servers under test


async def _other_app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    """The ASGI application the grid route sits in front of."""
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            await send({"type": msg["type"] + ".complete"})
            if msg["type"] == "lifespan.shutdown":
                return
    elif scope["type"] == "http":
        body = b"ok" if scope["path"] == "/health" else b"missing"
        await send({"type": "http.response.start", "status": 200 if body == b"ok" else 404,
                    "headers": [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
    else:
        await receive()
        await send({"type": "websocket.close", "code": 1008})


class _Mounted:
    """A server of ``kind`` serving ``manager``'s grid route on ``port``."""

    def __init__(self, kind: str, manager: grid.Manager, port: int, manage: bool) -> None:
        self.kind = kind
        self.manager = manager
        self.port = port
        self.manage = manage
        self._stop: Callable[[], Awaitable[None]] | None = None

    async def start(self) -> None:
        if self.kind == "aiohttp":
            app = web.Application()

            async def health(_request: web.Request) -> web.Response:
                return web.Response(text="ok")

            app.router.add_get("/health", health)
            mount(app, self.manager, manage=self.manage)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            self._stop = runner.cleanup
        elif self.kind == "uvicorn":
            import uvicorn

            config = uvicorn.Config(GridASGI(self.manager, _other_app, manage=self.manage),
                                    host="127.0.0.1", port=self.port, lifespan="on",
                                    log_level="warning", ws_per_message_deflate=False)
            server = uvicorn.Server(config)
            task = asyncio.ensure_future(server.serve())
            while not server.started:  # uvicorn's own readiness flag, set once bound
                if task.done():
                    task.result()
                    raise RuntimeError("uvicorn exited before it started")
                await asyncio.sleep(0.01)

            async def stop() -> None:
                server.should_exit = True
                await task
            self._stop = stop
        else:
            from hypercorn.asyncio import serve
            from hypercorn.config import Config

            # Hypercorn has no "listening" signal: hand it a socket that
            # already listens, so connections queue from now on.
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", self.port))
            sock.listen(128)
            hconfig = Config()
            hconfig.bind = [f"fd://{sock.detach()}"]  # hypercorn owns it from here
            hconfig.loglevel = "WARNING"
            hconfig.accesslog = None
            shutdown = asyncio.Event()
            asgi = GridASGI(self.manager, _other_app, manage=self.manage)

            async def trigger() -> None:
                await shutdown.wait()
                await asgi.close_connections()  # hypercorn would wait graceful_timeout

            task = asyncio.ensure_future(serve(asgi, hconfig,  # type: ignore[arg-type]
                                               shutdown_trigger=trigger))

            async def stop() -> None:
                shutdown.set()
                await task
            self._stop = stop

    async def stop(self) -> None:
        assert self._stop is not None
        stop, self._stop = self._stop, None
        await stop()


async def _http_get(port: int, path: str) -> tuple[int, bytes]:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    try:
        w.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        data = await r.read()
    finally:
        w.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def _dialer_of(target: str) -> str:
    """A loopback host string that dials ``target`` (§1.2)."""
    for _ in range(500):
        h = f"http://127.0.0.1:{free_port()}"
        if h != target and local_dials(h, target):
            return h
    raise RuntimeError("no dialing host found")


def _check(token: str) -> None:
    if token != TOKEN:
        raise PermissionError("invalid token")


async def _echo_stream(ctx: grid.StreamContext, payload: bytes | None,
                       inbound: AsyncIterator[bytes] | None, out: grid.StreamOut) -> None:
    assert inbound is not None
    async for item in inbound:
        await out.send((payload or b"") + item)


def _setup(m: grid.Manager, name: bytes, release: asyncio.Event) -> None:
    m.register_single(ECHO, lambda p: name + b":" + (p or b""))

    async def slow(p: bytes | None) -> bytes:
        await release.wait()
        return b"late"

    m.register_single(SLOW, slow)
    m.register_stream(STREAM, grid.StreamHandler(_echo_stream, in_capacity=4, out_capacity=4))


async def _exercise(local: grid.Manager, remote: str, tag: bytes) -> None:
    """Requests (one, a burst, a large one) and a two-way stream over
    ``local``'s connection to ``remote``, whose ECHO answers with ``tag``."""
    conn = local.connection(remote)
    assert await conn.request(ECHO, b"hi", timeout=5) == tag + b":hi"
    assert await conn.request(ECHO, None, timeout=5) == tag + b":"
    burst = [conn.request(ECHO, str(i).encode(), timeout=10) for i in range(300)]
    assert await asyncio.gather(*burst) == [tag + b":" + str(i).encode() for i in range(300)]
    big = os.urandom(1 << 20)
    assert await conn.request(ECHO, big, timeout=10) == tag + b":" + big
    stream = await conn.new_stream(STREAM, b">", timeout=10)
    got = []
    for i in range(20):
        await stream.send(b"%d" % i)
        if i >= 3:
            got.append(await stream.__anext__())
    await stream.close_send()
    got += [item async for item in stream]
    assert got == [b">%d" % i for i in range(20)]


SERVERS = ["aiohttp", "uvicorn", "hypercorn"]


def _need(kind: str) -> None:
    if kind != "aiohttp":
        pytest.importorskip(kind, reason=f"{kind} is not installed (gridmux[asgi] extra)")


@pytest.mark.parametrize("manage", [True, False], ids=["managed", "unmanaged"])
@pytest.mark.parametrize("kind", SERVERS)
def test_mounted_node_in_a_grid(kind: str, manage: bool, loop_kind: str) -> None:
    """A mounted node and an embedded node: calls and streams both ways,
    other routes, a refused token, a server stop and restart."""
    _need(kind)

    async def main() -> None:
        a, b = hosts_where_first_dials()  # a (embedded) dials b (mounted): b's route is used
        port_b = int(b.rsplit(":", 1)[1])
        release = asyncio.Event()
        ma = grid.Manager(a, [a, b], lambda: TOKEN, _check, retry_base=0.2)
        _setup(ma, b"A", release)

        def new_b() -> grid.Manager:
            m = grid.Manager(b, [a, b], lambda: TOKEN, _check, retry_base=0.2)
            _setup(m, b"B", release)
            return m

        mb = new_b()
        server = _Mounted(kind, mb, port_b, manage)
        if not manage:
            await mb.start(serve=False)
        await server.start()
        await ma.start()
        try:
            conn = ma.connection(b)
            await conn.wait_for_connect(timeout=10)
            back = mb.connection(a)
            await back.wait_for_connect(timeout=5)
            await _exercise(ma, b, b"B")  # embedded -> mounted
            await _exercise(mb, a, b"A")  # mounted -> embedded, same connection
            st = conn.stats()
            assert st.messages_in > 300 and st.bytes_in > 1 << 20

            # The app's other routes, and the grid route without an upgrade.
            assert await _http_get(port_b, "/health") == (200, b"ok")
            status, body = await _http_get(port_b, grid.ROUTE_PATH)
            assert status == 426 and b"websocket upgrade required" in body

            # A wrong token is refused at the HTTP upgrade, as by the embedded
            # server; a host the node does not know, at the grid handshake.
            status, body = await _upgrade(port_b, "wrong")
            assert status == 403 and b"auth token: invalid token" in body
            resp = await _connect(port_b, "http://127.0.0.1:1")
            assert not resp.accepted
            assert resp.rejected_reason == "unknown incoming host: http://127.0.0.1:1"

            # Stop the server: the call in flight and new calls fail with Disconnected.
            pending = conn.request(SLOW, b"", timeout=20)
            assert await conn.request(ECHO, b"x", timeout=5) == b"B:x"  # SLOW has arrived
            await server.stop()
            with pytest.raises(grid.Disconnected):
                await asyncio.wait_for(pending, 10)
            with pytest.raises(grid.Disconnected):
                await conn.request(ECHO, b"x", timeout=5)
            assert conn.state is not grid.State.CONNECTED

            # Restart it (a new node if the server owned the manager): reconnected.
            if manage:
                assert mb.connections[a].state is grid.State.SHUTDOWN  # closed with its server
                mb = new_b()
                server = _Mounted(kind, mb, port_b, manage)
            await server.start()
            await conn.wait_for_connect(timeout=10)
            assert await conn.request(ECHO, b"again", timeout=5) == b"B:again"
            back = mb.connection(a)
            await back.wait_for_connect(timeout=5)
            assert await back.request(ECHO, b"back", timeout=5) == b"A:back"
            assert conn.stats().reconnects == 1
        finally:
            release.set()
            for c_ in ma.connections.values():
                c_._shutting_down()  # quiet: everyone is leaving
            await ma.close()
            if server._stop is not None:
                await server.stop()
            await mb.close()

    run(loop_kind, main, timeout=60)


# ---------------------------------------------------------------- back-pressure


async def _open_raw(port: int, token: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter,
                                                   int, bytes]:
    """A grid dial by hand, up to the upgrade response: (reader, writer,
    status, head + whatever body has arrived)."""
    r, w = await asyncio.open_connection("127.0.0.1", port, limit=1 << 16)
    addr = _http.parse_host(f"http://127.0.0.1:{port}")
    w.write(_http.upgrade_request(addr, grid.ROUTE_PATH, _http.new_key(), token, time.time_ns()))
    head = await r.readuntil(b"\r\n\r\n")
    return r, w, int(head.split(b" ", 2)[1]), head


async def _upgrade(port: int, token: str) -> tuple[int, bytes]:
    """Status and body of a refused upgrade."""
    r, w, status, head = await _open_raw(port, token)
    try:
        length = [int(line.split(b":", 1)[1]) for line in head.lower().split(b"\r\n")
                  if line.startswith(b"content-length:")]
        body = await (r.readexactly(length[0]) if length else r.read())
    finally:
        w.close()
    return status, body


async def _handshake(port: int, local: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter,
                                                     _payloads.ConnectResponse, list[int]]:
    """A grid handshake by hand as ``local``: (reader, writer, the
    ConnectResponse, opcodes of the frames that arrived after it)."""
    r, w, status, head = await _open_raw(port, TOKEN)
    assert status == 101, head
    req = _payloads.ConnectRequest(os.urandom(16), local, time.time_ns(), TOKEN)
    msg = _codec_py.encode_message(0, 0, 0, 0, int(Op.CONNECT), 0, req.encode())
    w.write(_codec_py.encode_frame(msg, WS_BINARY, os.urandom(4)))
    parser = _codec_py.FrameParser(server=False)
    while True:
        data = await r.read(4096)
        assert data, "closed before the ConnectResponse"
        events = parser.feed(data)
        if events:
            resp = _payloads.ConnectResponse.decode(_codec_py.decode_message(events[0][1]).payload)
            return r, w, resp, [op for op, _ in events[1:]]


async def _connect(port: int, local: str) -> _payloads.ConnectResponse:
    """The ConnectResponse to a handshake as ``local``, after which the
    server closes the WebSocket (a close frame, or EOF)."""
    r, w, resp, after = await _handshake(port, local)
    parser = _codec_py.FrameParser(server=False)
    try:
        while 8 not in after:
            data = await r.read(4096)
            if not data:
                break
            after = [op for op, _ in parser.feed(data)]
    finally:
        w.close()
    return resp


async def _raw_peer(port: int, local: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A grid peer by hand: upgrade, Connect, read the ConnectResponse, and
    then never read again."""
    r, w, resp, _ = await _handshake(port, local)
    assert resp.accepted, resp.rejected_reason
    return r, w


@pytest.mark.parametrize("kind", SERVERS)
def test_peer_that_stops_reading_is_dropped(kind: str) -> None:
    """Calls towards a peer that does not read pause at the high-water mark
    (nothing queues without bound) and the connection is dropped after
    ``write_timeout``, as with the embedded server."""
    _need(kind)

    async def main() -> None:
        port = free_port()
        b = f"http://127.0.0.1:{port}"
        c = _dialer_of(b)
        mb = grid.Manager(b, [c, b], lambda: TOKEN, _check, write_timeout=0.5,
                          max_write_buffer=8 * 1024 * 1024)
        server = _Mounted(kind, mb, port, manage=False)
        await mb.start(serve=False)
        await server.start()
        r, w = await _raw_peer(port, c)
        try:
            conn = mb.connection(c)
            await conn.wait_for_connect(timeout=5)
            chunk = os.urandom(64 * 1024)
            # Up to 32 MiB of calls, one per loop iteration (each batch is
            # flushed before the next call): far over the socket buffers, the
            # high-water mark and max_write_buffer.  Once paused, calls wait.
            calls = []
            for _ in range(512):
                calls.append(asyncio.ensure_future(conn.request(ECHO, chunk, timeout=20)))
                await asyncio.sleep(0)
                if not conn.connected:
                    break
            done = await asyncio.gather(*calls, return_exceptions=True)
            assert all(isinstance(x, grid.Disconnected) for x in done), done[:3]
            # Dropped for stalling while paused, never for exceeding max_write_buffer.
            assert conn.last_error is not None and "stalled" in conn.last_error, conn.last_error
            assert conn.stats().bytes_out < 8 * 1024 * 1024
        finally:
            w.close()
            await server.stop()
            await mb.close()

    run("asyncio", main, timeout=60)


# ---------------------------------------------------------------- the examples


@pytest.mark.parametrize("args", [["aiohttp_app.py"], ["asgi_app.py", "--server", "uvicorn"],
                                  ["asgi_app.py", "--server", "hypercorn"]],
                         ids=["aiohttp", "uvicorn", "hypercorn"])
def test_example_demo_runs(args: list[str]) -> None:
    """``examples/*_app.py --demo``: a two-node grid through the mounted route."""
    import subprocess
    import sys
    from pathlib import Path

    if "--server" in args:
        _need(args[-1])
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(root))
    out = subprocess.run([sys.executable, str(root / "examples" / args[0]), "--demo", *args[1:]],
                         capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].endswith("node: hello") and lines[1] == "embedded node: hello back", out.stdout
