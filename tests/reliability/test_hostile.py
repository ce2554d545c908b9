"""A hostile client against a live node.

A raw client (plain asyncio streams, its own WebSocket framing) talks to a
``grid.Manager`` and misbehaves in one way per test: before the HTTP upgrade,
between the upgrade and the grid handshake, and after a complete handshake as
a legitimate peer.  Each test asserts the documented outcome (ignored, an
error reply, or the close of that one connection) and that a second,
well-behaved peer (a normal Manager connected to the same node) keeps getting
correct answers meanwhile, without reconnecting.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import time
from collections import deque
from typing import Any

import msgpack
import pytest

import grid
from grid import _codec_py, _payloads
from grid._consts import (
    FLAG_CRC,
    FLAG_EOF,
    FLAG_PAYLOAD_IS_ERR,
    FLAG_STATELESS,
    FLAG_SUBROUTE,
    Op,
    WS_BINARY,
    WS_CLOSE,
    WS_CONTINUATION,
    WS_PING,
    WS_PONG,
    WS_TEXT,
)
from grid._impl import local_dials
from support import NodeWithGoodPeer, host_where, run

TOKEN = "hostile-test-token"
MAX_MSG = 4096  # the node's max_message_size
MAX_STREAMS = 8  # the node's max_streams per peer

ECHO, BIG = 1, 2
SINK, HOLD, FIRST = 10, 11, 12  # stream handlers
BIG_REPLY = b"\xab" * (1 << 20)

encode_message = _codec_py.encode_message
encode_frame = _codec_py.encode_frame
REQ_FLAGS = FLAG_CRC | FLAG_EOF


def request(mux: int, payload: bytes | None, handler: int = ECHO, *, flags: int = REQ_FLAGS,
            sub: bytes | None = None) -> bytes:
    """An OpRequest as a well-behaved caller would encode it."""
    if sub is not None:
        flags |= FLAG_SUBROUTE
    return encode_message(mux, 0, 5000, handler, int(Op.REQUEST), flags, payload, sub)


def msg(mux: int, op: int, payload: bytes | None = None, *, seq: int = 0, handler: int = 0,
        flags: int = FLAG_CRC, dl: int = 0) -> bytes:
    return encode_message(mux, seq, dl, handler, op, flags, payload)


def merged(count: int, inner: list[bytes], tail: bytes = b"") -> bytes:
    """An OpMerged container announcing ``count`` and holding ``inner``."""
    out = bytearray(encode_message(0, count, 0, 0, int(Op.MERGED), 0, None))
    for m in inner:
        out += msgpack.packb(m, use_bin_type=True)
    return bytes(out) + tail


def mask() -> bytes:
    return os.urandom(4)


def http_request(path: str = grid.ROUTE_PATH, method: str = "GET", version: str = "HTTP/1.1",
                 upgrade: bool = True, auth: str | None = f"Bearer {TOKEN}",
                 time_ns: int | None = 0, ws_version: str = "13") -> bytes:
    lines = [f"{method} {path} {version}", "Host: 127.0.0.1"]
    if upgrade:
        lines += ["Upgrade: websocket", "Connection: Upgrade"]
    lines += [f"Sec-WebSocket-Version: {ws_version}", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="]
    if auth is not None:
        lines.append(f"Authorization: {auth}")
    if time_ns is not None:
        # 0: now; negative: that many ns before now
        lines.append(f"X-Minio-Time: {time.time_ns() + time_ns if time_ns <= 0 else time_ns}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Raw:
    """A hand-driven client socket: raw bytes, then masked WebSocket frames."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.r, self.w = reader, writer
        self.head = bytearray()
        self.parser: Any = None
        self.events: deque[tuple[int, bytes]] = deque()
        self.controls: list[tuple[int, bytes]] = []
        self.msgs: deque[Any] = deque()
        self.eof = False

    @classmethod
    async def open(cls, port: int, rcvbuf: int | None = None) -> Raw:
        if rcvbuf is None:
            r, w = await asyncio.open_connection("127.0.0.1", port)
        else:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
            r, w = await asyncio.open_connection(sock=sock, limit=rcvbuf)
        return cls(r, w)

    def close(self) -> None:
        self.w.transport.abort()

    # -- sending

    def send(self, data: bytes) -> None:
        self.w.write(data)

    def send_frame(self, payload: bytes, opcode: int = WS_BINARY, fin: bool = True) -> None:
        self.w.write(encode_frame(payload, opcode, mask(), fin))

    # -- receiving

    async def _read(self, deadline: float) -> bytes:
        if self.eof:
            return b""
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            raise TimeoutError("raw client: nothing more within the bound")
        try:
            data = await asyncio.wait_for(self.r.read(65536), left)
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        if not data:
            self.eof = True
        return data

    async def read_http(self, timeout: float = 2.0) -> tuple[int | None, bytes, bytes]:
        """(status, head, body) of the response; status None if the node
        closed without answering."""
        deadline = asyncio.get_running_loop().time() + timeout
        while b"\r\n\r\n" not in self.head:
            data = await self._read(deadline)
            if not data:
                return None, bytes(self.head), b""
            self.head += data
        raw, rest = bytes(self.head).split(b"\r\n\r\n", 1)
        status = int(raw.split(b" ", 2)[1])
        length = 0
        for line in raw.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if status == 101:
            self.head = bytearray()
            self.parser = _codec_py.FrameParser(server=False)
            self.events.extend(self.parser.feed(rest))
            return status, raw, b""
        while len(rest) < length:
            data = await self._read(deadline)
            if not data:
                break
            rest += data
        return status, raw, rest[:length]

    async def upgrade(self) -> None:
        self.send(http_request())
        status, head, _ = await self.read_http()
        assert status == 101, head

    async def next_event(self, timeout: float = 2.0) -> tuple[int, bytes] | None:
        """The next WebSocket event from the node, None at EOF."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not self.events:
            data = await self._read(deadline)
            if not data:
                return None
            self.events.extend(self.parser.feed(data))
        return self.events.popleft()

    async def next_msg(self, timeout: float = 2.0) -> Any:
        """The next grid message (merged containers expanded, connection
        pings skipped, control frames set aside); EOFError at EOF."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not self.msgs:
            ev = await self.next_event(max(0.0, deadline - asyncio.get_running_loop().time()))
            if ev is None:
                raise EOFError("node closed the connection")
            opcode, payload = ev
            if opcode != WS_BINARY:
                self.controls.append(ev)
                continue
            for m in _codec_py.decode_messages(payload):
                if not (m.op == Op.PING and m.mux_id == 0):
                    self.msgs.append(m)
        return self.msgs.popleft()

    async def expect_closed(self, timeout: float = 2.0) -> list[tuple[int, bytes]]:
        """Read until the node closes the socket; return the events seen."""
        deadline = asyncio.get_running_loop().time() + timeout
        seen = list(self.events)
        self.events.clear()
        while True:
            data = await self._read(deadline)
            if not data:
                return seen
            if self.parser is not None:
                try:
                    seen += self.parser.feed(data)
                except grid.ProtocolError:
                    pass

    async def connect(self, host: str, token: str = TOKEN, time_ns: int | None = None,
                      opcode: int = WS_BINARY) -> _payloads.ConnectResponse:
        """Send OpConnect as ``host``; return the node's ConnectResponse."""
        req = _payloads.ConnectRequest(os.urandom(16), host, time_ns or time.time_ns(), token)
        self.send_frame(encode_message(0, 0, 0, 0, int(Op.CONNECT), 0, req.encode()), opcode)
        return await self.connect_response()

    async def connect_response(self) -> _payloads.ConnectResponse:
        m = await self.next_msg()
        assert m.op == Op.CONNECT_RESPONSE and m.flags == 0
        return _payloads.ConnectResponse.decode(m.payload)

    async def until(self, mux: int, op: int, timeout: float = 2.0) -> tuple[Any, list[Any]]:
        """Read until a message with this mux id and op; return it and the
        messages seen before it."""
        before = []
        while True:
            m = await self.next_msg(timeout)
            if m.mux_id == mux and m.op == op:
                return m, before
            before.append(m)

    async def roundtrip(self, mux: int, payload: bytes = b"still-here") -> list[Any]:
        """One echo request; return every message that arrived before its
        response (nothing, when what was sent before it was ignored)."""
        self.send_frame(request(mux, payload))
        resp, before = await self.until(mux, Op.RESPONSE)
        assert resp.payload == payload and resp.flags & FLAG_EOF
        assert not resp.flags & FLAG_PAYLOAD_IS_ERR
        return before


class Node(NodeWithGoodPeer):
    """The node under attack, plus a well-behaved peer connected to it.

    Host strings: ``peer`` is the identity the raw client presents (it is in
    the node's list and is the side that dials), ``wrong_side`` is in the list
    but is a host the node dials itself.
    """

    def __init__(self, **kwargs: Any) -> None:
        opts: dict[str, Any] = dict(max_message_size=MAX_MSG, max_streams=MAX_STREAMS,
                                    handshake_timeout=5.0)
        opts.update(kwargs)
        self.raws: list[Raw] = []
        self.good_calls = 0
        super().__init__(TOKEN, **opts)

    def more_hosts(self) -> list[str]:
        self.wrong_side = host_where(lambda h: h not in (self.host, self.good_host, self.peer)
                                     and local_dials(self.host, h))
        return [self.wrong_side]

    def setup(self, m: grid.Manager) -> None:
        async def sink(ctx: Any, payload: Any, inbound: Any, out: Any) -> None:
            async for _ in inbound:
                pass

        async def hold(ctx: Any, payload: Any, inbound: Any, out: Any) -> None:
            while True:  # bounded by credits: a caller that never unblocks stops it
                await out.send(b"tick")

        async def first(ctx: Any, payload: Any, inbound: Any, out: Any) -> None:
            await out.send(payload or b"")
            async for _ in inbound:
                pass

        m.register_single(ECHO, lambda p: p)
        m.register_single(ECHO, lambda p: b"sub:" + (p or b""), subroute="disk/1")
        m.register_single(BIG, lambda p: BIG_REPLY)
        m.register_stream(SINK, grid.StreamHandler(sink, in_capacity=4, out_capacity=1))
        m.register_stream(HOLD, grid.StreamHandler(hold, in_capacity=0, out_capacity=1))
        m.register_stream(FIRST, grid.StreamHandler(first, in_capacity=1, out_capacity=1))

    async def __aenter__(self) -> Node:
        await super().__aenter__()
        await self.check_good()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for r in self.raws:
            r.close()
        await super().__aexit__(*exc)

    @property
    def peer_conn(self) -> Any:
        """The node's Connection for the raw client's identity."""
        return self.mgr.connection(self.peer)

    async def check_good(self) -> None:
        """The well-behaved peer still gets correct answers on the same connection."""
        self.good_calls += 1
        c = self.good_conn
        want = b"good-%d" % self.good_calls
        assert await c.request(ECHO, want, timeout=5) == want
        assert await c.subroute("disk", "1").request(ECHO, b"x", timeout=5) == b"sub:x"
        assert c.state is grid.State.CONNECTED
        assert c.stats().reconnects == 0
        back = self.mgr.connection(self.good_host)
        assert back.state is grid.State.CONNECTED and back.stats().reconnects == 0

    async def raw(self, **kwargs: Any) -> Raw:
        r = await Raw.open(self.port, **kwargs)
        self.raws.append(r)
        return r

    async def upgraded(self) -> Raw:
        r = await self.raw()
        await r.upgrade()
        return r

    async def peer_raw(self, **kwargs: Any) -> Raw:
        """A raw client that completed the handshake as the legitimate ``peer``."""
        r = await self.raw(**kwargs)
        await r.upgrade()
        resp = await r.connect(self.peer)
        assert resp.accepted, resp.rejected_reason
        assert resp.instance_id == self.mgr.instance_id
        for _ in range(100):
            if self.peer_conn.state is grid.State.CONNECTED:
                break
            await asyncio.sleep(0.01)
        assert self.peer_conn.state is grid.State.CONNECTED
        return r


# =================================================================== before the upgrade


HTTP_CASES = [
    ("wrong-path", dict(path="/minio/other/v1"), 404, "grid: not found"),
    ("plain-get", dict(upgrade=False), 426, "websocket upgrade required"),
    ("no-token", dict(auth=None), 403, "grid: missing bearer token"),
    ("bad-token", dict(auth="Bearer nope"), 403, "grid: auth token: invalid token"),
    ("basic-auth", dict(auth="Basic Zm9vOmJhcg=="), 403, "missing bearer token"),
    ("no-time", dict(time_ns=None), 403, "X-Minio-Time"),
    ("clock-skew", dict(time_ns=-3600 * 10**9), 403, "clock skew"),
    ("post", dict(method="POST"), 405, "method not allowed"),
    ("http-1.0", dict(version="HTTP/1.0"), 400, "HTTP/1.1 required"),
    ("ws-version", dict(ws_version="8"), 400, "bad websocket key or version"),
    ("garbage", b"\x00\xff\xfe\x01garbage\r\n\r\n", 400, "malformed HTTP start line"),
    ("garbage-header", b"GET /minio/grid/v1 HTTP/1.1\r\nno colon here\r\n\r\n", 400,
     "malformed HTTP header line"),
    ("binary-words", b"\x16\x03 \x01\x02\r\n\r\n", 405, ""),
]


@pytest.mark.parametrize("name,data,status,text", HTTP_CASES, ids=[c[0] for c in HTTP_CASES])
def test_http_refused(name: str, data: Any, status: int, text: str) -> None:
    """Anything but a valid upgrade gets an HTTP error and the close; never
    a 101 and never a WebSocket frame."""

    async def main() -> None:
        async with Node() as node:
            raw = await node.raw()
            # Built now: X-Minio-Time must be fresh.
            raw.send(http_request(**data) if isinstance(data, dict) else data)
            t0 = time.monotonic()
            got, head, body = await raw.read_http()
            assert got == status, head
            assert head.startswith(b"HTTP/1.1 %d " % status)
            assert text.encode() in body
            await raw.expect_closed()
            assert time.monotonic() - t0 < 2.0  # not the handshake timeout
            await node.check_good()

    run("uvloop", main)


@pytest.mark.parametrize("shape", ["unterminated", "terminated", "many-headers"])
def test_huge_header_block(shape: str) -> None:
    """More than 16 KiB of header: the connection is closed (an HTTP 431 may
    precede the close), long before the handshake timeout."""

    async def main() -> None:
        async with Node() as node:
            raw = await node.raw()
            start = b"GET /minio/grid/v1 HTTP/1.1\r\nHost: x\r\n"
            if shape == "unterminated":
                data = start + b"X-Pad: " + b"a" * 17000
            elif shape == "terminated":
                data = start + b"X-Pad: " + b"a" * 20000 + b"\r\n\r\n"
            else:
                data = start + b"".join(b"X-H%d: v\r\n" % i for i in range(2000)) + b"\r\n"
            assert len(data) > 16 * 1024
            t0 = time.monotonic()
            raw.send(data)
            try:
                await raw.w.drain()
            except ConnectionError:
                pass
            # An HTTP 431, unless the close (with our bytes still unread on
            # the node) reset the socket before we read it; never a WS frame.
            status, head, _ = await raw.read_http()
            assert status == 431 or (status is None and head == b""), head
            await raw.expect_closed()
            assert time.monotonic() - t0 < 2.0
            await node.check_good()

    run("uvloop", main)


@pytest.mark.parametrize("how", ["silent", "drip", "upgraded-silent", "partial-frame"])
def test_slowloris_closed_after_handshake_timeout(loop_kind: str, how: str) -> None:
    """A socket that never completes the upgrade and the grid handshake is
    closed once handshake_timeout (0.3 s here) has passed since it connected."""

    async def main() -> None:
        async with Node(handshake_timeout=0.3) as node:
            t0 = time.monotonic()
            raw = await node.raw()
            if how in ("upgraded-silent", "partial-frame"):
                await raw.upgrade()
                if how == "partial-frame":
                    raw.send(b"\x82")

            async def drip() -> None:
                for b in b"GET /minio/grid/v1 HTTP/1.1\r\nHost: 127.0.0.1\r\n":
                    raw.send(bytes([b]))
                    await asyncio.sleep(0.05)

            dripper = asyncio.ensure_future(drip()) if how == "drip" else None
            try:
                events = await raw.expect_closed(timeout=3.0)
            finally:
                if dripper is not None:
                    dripper.cancel()
            elapsed = time.monotonic() - t0
            assert 0.25 <= elapsed < 1.5, elapsed
            assert events == []  # no grid message, no close frame: just the TCP close
            assert raw.head == b""  # nor an HTTP response
            await node.check_good()

    run(loop_kind, main)


# =================================================================== after the upgrade, before OpConnect


@pytest.mark.parametrize("op,name", [(Op.PING, "Ping"), (Op.REQUEST, "Request"),
                                     (Op.CONNECT_RESPONSE, "ConnectResponse"), (99, "Op(99)")])
def test_first_message_not_connect(op: int, name: str) -> None:
    async def main() -> None:
        async with Node() as node:
            raw = await node.upgraded()
            raw.send_frame(msg(0, op, _payloads.encode_ping(time.time_ns()), flags=0))
            resp = await raw.connect_response()
            assert not resp.accepted
            assert resp.rejected_reason == f"unexpected connect op: {name}"
            assert resp.instance_id == node.mgr.instance_id
            await raw.expect_closed()
            assert node.peer_conn.state is not grid.State.CONNECTED
            await node.check_good()

    run("uvloop", main)


def _connect_cases(node: Node) -> dict[str, tuple[dict[str, Any], str]]:
    now = time.time_ns()
    return {
        "unknown-host": (dict(host="http://127.0.0.1:1"),
                         "unknown incoming host: http://127.0.0.1:1"),
        "bad-token": (dict(token="nope"), "auth token: invalid token"),
        "clock-behind": (dict(time_ns=now - 3600 * 10**9),
                         "time difference too large between servers: "),
        "clock-ahead": (dict(time_ns=now + 3600 * 10**9),
                        "time difference too large between servers: "),
        "wrong-side": (dict(host=node.wrong_side),
                       "grid: expected to be client side, not server side"),
    }


@pytest.mark.parametrize("case", ["unknown-host", "bad-token", "clock-behind", "clock-ahead",
                                  "wrong-side"])
def test_connect_rejected(case: str) -> None:
    async def main() -> None:
        async with Node() as node:
            kwargs, reason = _connect_cases(node)[case]
            kwargs.setdefault("host", node.peer)
            raw = await node.upgraded()
            resp = await raw.connect(**kwargs)
            assert not resp.accepted
            if reason.endswith(": "):
                assert resp.rejected_reason.startswith(reason), resp.rejected_reason
            else:
                assert resp.rejected_reason == reason
            await raw.expect_closed()
            assert node.peer_conn.state is not grid.State.CONNECTED
            await node.check_good()

    run("uvloop", main)


@pytest.mark.parametrize("name,body,reason", [
    ("not-a-map", encode_message(0, 0, 0, 0, 1, 0, b"\x93\x01\x02\x03"),
     "error parsing connectReq: want a map, got list"),
    ("short-id", encode_message(0, 0, 0, 0, 1, 0, msgpack.packb({"ID": b"abc"})),
     "error parsing connectReq: ID must be 16 bytes of bin"),
    ("bad-msgpack", encode_message(0, 0, 0, 0, 1, 0, b"\xc1"), "error parsing connectReq: "),
    ("bad-crc", encode_message(0, 0, 0, 0, 1, FLAG_CRC, b"x")[:-1] + b"\x00",
     "error parsing grid connect: crc mismatch"),
    ("bad-envelope", b"\x96\x00\x00\x00\x00\x01\x00", "error parsing grid connect: wrong array"),
    ("text-garbage", b"\x01\x02 not msgpack", "error parsing grid connect: "),
])
def test_bad_connect_message(name: str, body: bytes, reason: str) -> None:
    async def main() -> None:
        async with Node() as node:
            raw = await node.upgraded()
            raw.send_frame(body, WS_TEXT if name.startswith("text") else WS_BINARY)
            resp = await raw.connect_response()
            assert not resp.accepted
            assert resp.rejected_reason.startswith(reason), resp.rejected_reason
            await raw.expect_closed()
            await node.check_good()

    run("uvloop", main)


def test_text_handshake_accepted_text_after_ignored() -> None:
    """Go reads the handshake as text or binary; after it, text is ignored."""

    async def main() -> None:
        async with Node() as node:
            raw = await node.upgraded()
            resp = await raw.connect(node.peer, opcode=WS_TEXT)
            assert resp.accepted
            raw.send_frame(request(5, b"as-text"), WS_TEXT)
            raw.send_frame(b"\x01\x02 not even msgpack", WS_TEXT)
            assert await raw.roundtrip(6) == []  # no reply to the text frames
            assert node.peer_conn.state is grid.State.CONNECTED
            await node.check_good()

    run("uvloop", main)


# =================================================================== WebSocket framing, both phases


def _frame(b0: int, length_bytes: bytes, payload: bytes = b"", masked: bool = True) -> bytes:
    key = mask()
    b1 = (0x80 if masked else 0) | length_bytes[0]
    body = _codec_py.apply_mask(payload, key) if masked else payload
    return bytes((b0, b1)) + length_bytes[1:] + (key if masked else b"") + body


_REQ = request(9, b"x")
FRAME_CASES = [
    ("unmasked", encode_frame(_REQ, WS_BINARY, None), "unmasked client frame"),
    ("rsv1", _frame(0xC2, bytes([len(_REQ)]), _REQ), "reserved bits set"),
    ("rsv3", _frame(0x92, bytes([len(_REQ)]), _REQ), "reserved bits set"),
    ("reserved-opcode", _frame(0x83, bytes([len(_REQ)]), _REQ), "reserved opcode 0x3"),
    ("reserved-control-opcode", _frame(0x8B, b"\x00"), "reserved opcode 0xb"),
    ("length-2^63", _frame(0x82, b"\x7f" + struct.pack(">Q", 1 << 63)),
     "invalid 64-bit frame length"),
    ("over-max-size", _frame(0x82, b"\x7e" + struct.pack(">H", MAX_MSG + 1), b"\0" * 100),
     f"exceeds the limit of {MAX_MSG} bytes"),
    ("over-max-size-64", _frame(0x82, b"\x7f" + struct.pack(">Q", 1 << 40)),
     f"exceeds the limit of {MAX_MSG} bytes"),
    ("over-max-size-fragmented",
     encode_frame(b"\0" * 3000, WS_BINARY, mask(), False)
     + _frame(0x80, b"\x7e" + struct.pack(">H", 3000)), "message of 6000 bytes exceeds"),
    ("fragmented-ping", encode_frame(b"hi", WS_PING, mask(), False), "fragmented control frame"),
    ("fragmented-close", encode_frame(b"\x03\xe8", WS_CLOSE, mask(), False),
     "fragmented control frame"),
    ("oversized-ping", encode_frame(b"p" * 126, WS_PING, mask()), "oversized control frame"),
    ("stray-continuation", encode_frame(_REQ, WS_CONTINUATION, mask()),
     "stray continuation frame"),
    ("data-inside-fragment", encode_frame(b"\x97", WS_BINARY, mask(), False)
     + encode_frame(_REQ, WS_BINARY, mask()), "new data frame inside a fragmented message"),
]


@pytest.mark.parametrize("phase", ["handshake", "connected"])
@pytest.mark.parametrize("name,data,error", FRAME_CASES, ids=[c[0] for c in FRAME_CASES])
def test_frame_violation_closes(phase: str, name: str, data: bytes, error: str) -> None:
    """An RFC 6455 violation: before OpConnect the node answers with a
    rejection naming it and closes; after the handshake it drops that
    connection only (the raw peer can then reconnect)."""

    async def main() -> None:
        async with Node() as node:
            if phase == "handshake":
                raw = await node.upgraded()
                raw.send(data)
                resp = await raw.connect_response()
                assert not resp.accepted
                assert resp.rejected_reason.startswith("error parsing grid connect: ")
                assert error in resp.rejected_reason
                await raw.expect_closed()
            else:
                raw = await node.peer_raw()
                assert await raw.roundtrip(1) == []
                raw.send(data)
                events = await raw.expect_closed()
                assert all(op != WS_CLOSE for op, _ in events)  # dropped, as Go does
                err = node.peer_conn.last_error or ""
                assert err.startswith("protocol error: ") and error in err, err
                assert node.peer_conn.state is grid.State.CONNECTION_ERROR
                again = await node.peer_raw()  # the same peer comes back
                assert await again.roundtrip(2) == []
            await node.check_good()

    run("uvloop", main)


def test_fragmented_message_with_interleaved_control_frames() -> None:
    """Legal framing the node must accept: a request in three fragments with a
    ping and a pong between them; the ping is answered with its payload."""

    async def main() -> None:
        async with Node() as node:
            raw = await node.peer_raw()
            body = request(3, b"fragmented")
            raw.send(encode_frame(body[:5], WS_BINARY, mask(), False))
            raw.send_frame(b"ping-data", WS_PING)
            raw.send(encode_frame(body[5:9], WS_CONTINUATION, mask(), False))
            raw.send_frame(b"unsolicited", WS_PONG)
            raw.send(encode_frame(body[9:], WS_CONTINUATION, mask(), True))
            resp, before = await raw.until(3, Op.RESPONSE)
            assert resp.payload == b"fragmented" and before == []
            assert raw.controls == [(WS_PONG, b"ping-data")]
            assert await raw.roundtrip(4) == []
            await node.check_good()

    run("uvloop", main)


@pytest.mark.parametrize("phase", ["handshake", "connected"])
@pytest.mark.parametrize("payload", [b"\x03\xe9going away", b"\x0f\xa0", b""],
                         ids=["1001+reason", "4000", "empty"])
def test_close_frame_echoed(loop_kind: str, phase: str, payload: bytes) -> None:
    """A close frame is answered with a close carrying the same status code
    (no reason), then the TCP connection is closed."""

    async def main() -> None:
        async with Node() as node:
            if phase == "handshake":
                raw = await node.upgraded()
            else:
                raw = await node.peer_raw()
            raw.send_frame(payload, WS_CLOSE)
            events = await raw.expect_closed()
            assert events == [(WS_CLOSE, payload[:2])]
            if phase == "connected":
                assert node.peer_conn.state is grid.State.CONNECTION_ERROR
                assert "close frame" in (node.peer_conn.last_error or "")
            await node.check_good()

    run(loop_kind, main)


# =================================================================== envelopes after the handshake


def _bad_crc() -> bytes:
    m = bytearray(request(5, b"hello"))
    m[-1] ^= 0xFF
    return bytes(m)


ENVELOPE_CASES = [
    ("bad-crc", _bad_crc(), "crc mismatch"),
    ("crc-flag-no-trailer", b"\x97\x05\x00\x00\x01\x0e\x03\xc4\x00", "want crc len 4, got 0"),
    ("subroute-flag-short", b"\x97\x05\x00\x00\x01\x0e\x22\xc4\x00" + b"\x01" * 10,
     "want subroute len 32"),
    ("truncated-payload", request(5, b"hello", flags=FLAG_EOF)[:-2], "truncated envelope"),
    ("truncated-tuple", b"\x97\x05\x00", "truncated envelope"),
    ("truncated-uint", b"\x97\xcd\x01", "truncated envelope"),
    ("empty", b"", "truncated envelope"),
    ("array-6", b"\x96\x05\x00\x00\x01\x0e\x02", "wrong array length: 6"),
    ("array-8", b"\x98\x05\x00\x00\x01\x0e\x02\xc4\x00\x00", "wrong array length: 8"),
    ("array16-8", b"\xdc\x00\x08\x05\x00\x00\x01\x0e\x02\xc4\x00\x00", "wrong array length: 8"),
    ("map", b"\x81\xa1a\x01", "bad msgpack type 0x81"),
    ("nil", b"\xc0", "bad msgpack type 0xc0"),
    ("str-mux-id", b"\x97\xa1x\x00\x00\x01\x0e\x02\xc4\x00", "bad msgpack type 0xa1 for MuxID"),
    ("float-seq", b"\x97\x05\xca\x00\x00\x00\x00\x00\x01\x0e\x02\xc4\x00",
     "bad msgpack type 0xca for Seq"),
    ("nil-payload", b"\x97\x05\x00\x00\x01\x0e\x02\xc0", "bad msgpack type 0xc0 for Payload"),
    ("str-payload", b"\x97\x05\x00\x00\x01\x0e\x02\xa2hi", "bad msgpack type 0xa2 for Payload"),
    ("negative-fixint", b"\x97\xff\x00\x00\x01\x0e\x02\xc4\x00", "negative"),
    ("negative-int8", b"\x97\x05\x00\x00\xd0\xff\x0e\x02\xc4\x00", "negative"),
    ("wide-handler", b"\x97\x05\x00\x00\xcd\x01\x00\x0e\x02\xc4\x00", "overflows"),
    ("wide-seq", b"\x97\x05\xcf\x00\x00\x00\x01\x00\x00\x00\x00\x00\x01\x0e\x02\xc4\x00",
     "overflows"),
    ("merged-too-many", merged(3, [request(5, b"a"), request(6, b"b")]),
     "announces 3 messages, holds 2"),
    ("merged-inner-bad-crc", merged(2, [request(5, b"a"), _bad_crc()]), "crc mismatch"),
    ("merged-inner-truncated", merged(1, [b"\x97\x05"]), "truncated envelope"),
    ("merged-bin-overflows", merged(1, [])[:] + b"\xc4\x50" + request(5, b"a"),
     "truncated envelope"),
    ("merged-not-bin", merged(1, []) + b"\xa1x", "bad msgpack type 0xa1"),
]


@pytest.mark.parametrize("name,data,error", ENVELOPE_CASES, ids=[c[0] for c in ENVELOPE_CASES])
def test_bad_envelope_drops_connection(name: str, data: bytes, error: str) -> None:
    """A malformed grid message drops that connection (as Go does) and
    nothing else; nothing in it is dispatched, and the peer can reconnect."""

    async def main() -> None:
        async with Node() as node:
            raw = await node.peer_raw()
            assert await raw.roundtrip(1) == []
            raw.send_frame(data)
            events = await raw.expect_closed()
            # Not even the valid requests ahead of the bad part of a container.
            assert events == [], events
            err = node.peer_conn.last_error or ""
            assert err.startswith("protocol error: ") and error in err, err
            assert node.peer_conn.state is grid.State.CONNECTION_ERROR
            assert node.peer_conn.stats().send_queue_depth == 0
            await node.check_good()
            again = await node.peer_raw()
            assert await again.roundtrip(2) == []
            await node.check_good()

    run("uvloop", main)


def test_merged_count_too_small_ignores_the_rest() -> None:
    """A container announcing fewer bins than it holds: the announced ones
    are dispatched, the extra bins and trailing bytes ignored; the connection
    stays."""

    async def main() -> None:
        async with Node() as node:
            raw = await node.peer_raw()
            raw.send_frame(merged(1, [request(5, b"a"), request(6, b"b")], tail=b"\xc1junk"))
            resp, before = await raw.until(5, Op.RESPONSE)
            assert resp.payload == b"a" and before == []
            assert await raw.roundtrip(7) == []  # no reply to mux 6
            raw.send_frame(merged(0, [request(8, b"c")]))  # count 0: nothing at all
            assert await raw.roundtrip(9) == []
            assert node.peer_conn.state is grid.State.CONNECTED
            await node.check_good()

    run("uvloop", main)


def test_nested_merged_ignored() -> None:
    async def main() -> None:
        async with Node() as node:
            raw = await node.peer_raw()
            inner = merged(2, [request(5, b"nested-1"), request(6, b"nested-2")])
            raw.send_frame(merged(2, [inner, request(7, b"outer")]))
            resp, before = await raw.until(7, Op.RESPONSE)
            assert resp.payload == b"outer" and before == []
            assert await raw.roundtrip(8) == []  # nothing for 5 or 6
            assert node.peer_conn.state is grid.State.CONNECTED
            await node.check_good()

    run("uvloop", main)


@pytest.mark.parametrize("op", [0, int(Op.CONNECT), int(Op.CONNECT_RESPONSE),
                                int(Op.DISCONNECT), 18, 100, 255])
def test_unknown_ops_ignored(op: int) -> None:
    async def main() -> None:
        async with Node() as node:
            raw = await node.peer_raw()
            if op == Op.CONNECT:  # a second handshake on a live connection
                req = _payloads.ConnectRequest(os.urandom(16), node.peer, time.time_ns(), TOKEN)
                raw.send_frame(msg(0, op, req.encode(), flags=0))
            else:
                raw.send_frame(msg(3, op, b"payload", handler=ECHO, flags=REQ_FLAGS))
            raw.send_frame(merged(2, [msg(4, op, None), msg(5, op, b"x", seq=9)]))
            assert await raw.roundtrip(6) == []
            assert node.peer_conn.state is grid.State.CONNECTED
            assert node.peer_conn.stats().reconnects == 0
            await node.check_good()

    run("uvloop", main)


def _sub(route: str, handler: int) -> bytes:
    return _codec_py.subroute_id(route, handler)


UNKNOWN_HANDLER_CASES = [
    ("request-unregistered", Op.REQUEST, 200, None, 0, "Invalid Handler for type: HandlerID(200)"),
    ("request-go-name", Op.REQUEST, 77, None, 0, "Invalid Handler for type: CheckParts3"),
    ("request-zero", Op.REQUEST, 0, None, 0, "Invalid Handler"),
    ("request-subroute", Op.REQUEST, ECHO, _sub("disk/2", ECHO), 0,
     "Invalid Handler for type: [" + " ".join(str(b) for b in _sub("disk/2", ECHO)) + "]"),
    ("request-stream-id", Op.REQUEST, SINK, None, 0, "Invalid Handler for type: NSScanner"),
    ("mux-unregistered", Op.CONNECT_MUX, 201, None, 0, "Invalid Handler for type: HandlerID(201)"),
    ("mux-single-id", Op.CONNECT_MUX, ECHO, None, 0, "Invalid Handler for type: LockLock"),
    ("mux-subroute", Op.CONNECT_MUX, SINK, _sub("x", SINK), 0,
     "Invalid Handler for type: [" + " ".join(str(b) for b in _sub("x", SINK)) + "]"),
    ("mux-stateless", Op.CONNECT_MUX, SINK, None, FLAG_STATELESS,
     "Stateless streams not supported"),
]


@pytest.mark.parametrize("name,op,handler,sub,extra,text", UNKNOWN_HANDLER_CASES,
                         ids=[c[0] for c in UNKNOWN_HANDLER_CASES])
def test_unknown_handler_gets_mux_connect_error(name: str, op: int, handler: int,
                                                sub: bytes | None, extra: int, text: str) -> None:
    """Answered with OpMuxConnectError carrying Go's text, built from the
    request (§2.5: same mux id, seq and handler, no subroute); the connection
    stays."""

    async def main() -> None:
        async with Node() as node:
            raw = await node.peer_raw()
            flags = FLAG_CRC | FLAG_EOF | extra | (FLAG_SUBROUTE if sub else 0)
            raw.send_frame(encode_message(42, 0, 3000, handler, op, flags, b"p", sub))
            err, before = await raw.until(42, Op.MUX_CONNECT_ERROR)
            assert before == []
            assert _payloads.decode_mux_connect_error(err.payload) == text
            assert (err.seq, err.deadline_ms, err.handler) == (0, 3000, handler)
            assert err.subroute is None and err.flags & FLAG_CRC
            assert await raw.roundtrip(43) == []
            assert node.peer_conn.stats().outstanding_streams == 0
            await node.check_good()

    run("uvloop", main)


# =================================================================== streams


async def _open(raw: Raw, mux: int, handler: int, payload: bytes = b"init") -> None:
    raw.send_frame(encode_message(mux, 0, 0, handler, int(Op.CONNECT_MUX), FLAG_CRC, payload))
    ack, _ = await raw.until(mux, Op.ACK_MUX)
    assert ack.seq == 0


@pytest.mark.parametrize("op", [Op.MUX_CLIENT_MSG, Op.UNBLOCK_SRV_MUX, Op.PING])
def test_out_of_sequence_aborts_stream_only(op: int) -> None:
    """A gap in the caller's sequence ends that stream with the callee's
    'receive sequence number mismatch' error; the connection stays."""

    async def main() -> None:
        async with Node() as node:
            raw = await node.peer_raw()
            await _open(raw, 5, SINK)
            raw.send_frame(msg(5, Op.MUX_CLIENT_MSG, b"item-1", seq=1))  # in sequence
            unblock, _ = await raw.until(5, Op.UNBLOCK_CL_MUX)
            assert node.peer_conn.stats().outstanding_streams == 1
            raw.send_frame(msg(5, op, b"item-x" if op == Op.MUX_CLIENT_MSG else None, seq=7))
            want = "receive sequence number mismatch. want 2, got 7"
            end, before = await raw.until(5, Op.MUX_SERVER_MSG)
            assert end.flags & FLAG_EOF and end.flags & FLAG_PAYLOAD_IS_ERR
            assert end.payload == want.encode()
            if op == Op.PING:  # the pong carries the same text (§8.7)
                pong = [m for m in list(raw.msgs) + before if m.op == Op.PONG]
                if not pong:
                    pong = [(await raw.until(5, Op.PONG))[0]]
                assert _payloads.Pong.decode(pong[0].payload).error == want
            for _ in range(100):
                if node.peer_conn.stats().outstanding_streams == 0:
                    break
                await asyncio.sleep(0.01)
            assert node.peer_conn.stats().outstanding_streams == 0
            # The stream is gone: a further item is answered as for an unknown mux.
            raw.send_frame(msg(5, Op.MUX_CLIENT_MSG, b"late", seq=2))
            disc, _ = await raw.until(5, Op.DISCONNECT_CLIENT_MUX)
            assert await raw.roundtrip(6) == []
            assert node.peer_conn.state is grid.State.CONNECTED
            await node.check_good()

    run("uvloop", main)


def test_connect_mux_flood_bounded_by_max_streams() -> None:
    """Streams the raw peer opens and never reads: past max_streams every
    ConnectMux is refused with 'too many open streams'; closing some frees
    their slots; the well-behaved peer's streams are unaffected."""

    async def main() -> None:
        async with Node() as node:
            raw = await node.peer_raw()
            n = MAX_STREAMS + 12
            for mux in range(1, n + 1):
                raw.send_frame(encode_message(mux, 0, 0, HOLD, int(Op.CONNECT_MUX),
                                              FLAG_CRC | FLAG_EOF, b"go"))
            acked: set[int] = set()
            refused: set[int] = set()
            items: dict[int, int] = {}
            while len(acked) + len(refused) < n or len(items) < MAX_STREAMS:
                m = await raw.next_msg()
                if m.op == Op.ACK_MUX:
                    acked.add(m.mux_id)
                elif m.op == Op.MUX_CONNECT_ERROR:
                    assert _payloads.decode_mux_connect_error(m.payload) == "too many open streams"
                    refused.add(m.mux_id)
                elif m.op == Op.MUX_SERVER_MSG:
                    items[m.mux_id] = items.get(m.mux_id, 0) + 1
            assert acked == set(range(1, MAX_STREAMS + 1))
            assert refused == set(range(MAX_STREAMS + 1, n + 1))
            # One item each (out_capacity 1), then every handler waits for credit.
            await asyncio.sleep(0.1)
            assert all(v == 1 for v in items.values()) and not raw.msgs
            assert node.peer_conn.stats().outstanding_streams == MAX_STREAMS
            await node.check_good()
            # The good peer can still stream from the node.
            st = await node.good_conn.new_stream(HOLD, b"go", timeout=5)
            assert await st.__anext__() == b"tick"
            st.cancel()
            # Cancel two of the raw streams: two new ones fit, the next does not.
            for mux in (1, 2):
                raw.send_frame(msg(mux, Op.DISCONNECT_SERVER_MUX, seq=1))
            for mux in (100, 101, 102):
                raw.send_frame(encode_message(mux, 0, 0, HOLD, int(Op.CONNECT_MUX),
                                              FLAG_CRC | FLAG_EOF, b"go"))
            await raw.until(100, Op.ACK_MUX)
            await raw.until(101, Op.ACK_MUX)
            err, _ = await raw.until(102, Op.MUX_CONNECT_ERROR)
            assert _payloads.decode_mux_connect_error(err.payload) == "too many open streams"
            assert node.peer_conn.stats().outstanding_streams == MAX_STREAMS
            assert node.peer_conn.state is grid.State.CONNECTED
            await node.check_good()
            raw.close()
            for _ in range(100):  # the dropped connection releases every stream
                if node.peer_conn.stats().outstanding_streams == 0 and \
                        not node.peer_conn._link.tasks:
                    break
                await asyncio.sleep(0.01)
            assert node.peer_conn.stats().outstanding_streams == 0
            assert not node.peer_conn._link.tasks

    run("uvloop", main)


def test_duplicate_mux_id_ignored() -> None:
    """A second ConnectMux with a live id is ignored; the first stream keeps
    its state and completes normally."""

    async def main() -> None:
        async with Node() as node:
            raw = await node.peer_raw()
            await _open(raw, 7, FIRST, b"first")
            raw.send_frame(encode_message(7, 0, 0, FIRST, int(Op.CONNECT_MUX), FLAG_CRC,
                                          b"second"))
            item, before = await raw.until(7, Op.MUX_SERVER_MSG)
            assert item.payload == b"first" and before == []
            assert await raw.roundtrip(8) == []  # no second AckMux, no "second"
            assert node.peer_conn.stats().outstanding_streams == 1
            # Finish the first stream by the book: credit back, then input EOF.
            raw.send_frame(msg(7, Op.UNBLOCK_SRV_MUX, seq=1))
            raw.send_frame(msg(7, Op.MUX_CLIENT_MSG, seq=2, flags=FLAG_CRC | FLAG_EOF))
            end, before = await raw.until(7, Op.MUX_SERVER_MSG)
            assert end.flags & FLAG_EOF and not end.flags & FLAG_PAYLOAD_IS_ERR
            assert end.payload is None
            assert all(m.op != Op.MUX_SERVER_MSG for m in before)
            for _ in range(100):
                if node.peer_conn.stats().outstanding_streams == 0:
                    break
                await asyncio.sleep(0.01)
            assert node.peer_conn.stats().outstanding_streams == 0
            await node.check_good()

    run("uvloop", main)


# =================================================================== a peer that never reads


@pytest.mark.parametrize("limit", ["write-buffer", "write-stall"])
def test_peer_that_never_reads_is_dropped(loop_kind: str, limit: str) -> None:
    """The raw peer asks for 1 MiB replies and never reads them.  Over
    max_write_buffer (or after write_timeout of paused writes) the node drops
    that connection; what it buffered for it stays bounded, and the
    well-behaved peer is served throughout."""

    if limit == "write-buffer":
        opts = dict(max_write_buffer=2 << 20, write_timeout=30.0)
    else:
        opts = dict(max_write_buffer=1 << 30, write_timeout=0.3)
    # The node sends 1 MiB replies: its own max_message_size bounds what it sends.
    opts["max_message_size"] = 4 << 20

    async def main() -> None:
        async with Node(**opts) as node:
            raw = await node.peer_raw(rcvbuf=4096)
            conn = node.peer_conn
            peak = 0
            good_ok = 0
            stop = False

            async def good_traffic() -> None:
                nonlocal good_ok
                while not stop:
                    assert await node.good_conn.request(ECHO, b"g", timeout=5) == b"g"
                    good_ok += 1
                    await asyncio.sleep(0.005)

            good_task = asyncio.ensure_future(good_traffic())
            t0 = time.monotonic()
            sent = 0
            try:
                while conn.state is grid.State.CONNECTED and time.monotonic() - t0 < 10:
                    raw.send_frame(request(1000 + sent, None, BIG))
                    sent += 1
                    await asyncio.sleep(0.01)
                    wire = conn._wire
                    if wire is not None and wire.transport is not None:
                        peak = max(peak, wire.transport.get_write_buffer_size())
                elapsed = time.monotonic() - t0
            finally:
                stop = True
                await good_task
            assert conn.state is grid.State.CONNECTION_ERROR, "never dropped"
            assert "peer is not reading" in (conn.last_error or ""), conn.last_error
            if limit == "write-buffer":
                assert "send buffer over" in (conn.last_error or "")
                # The check runs after each flush: at most the limit plus one flush.
                assert peak <= (2 << 20) + 2 * len(BIG_REPLY), peak
            else:
                assert "stalled" in (conn.last_error or "")
            assert elapsed < 5.0, elapsed
            # Far fewer replies were produced than requested would have been
            # without a bound, and nothing stays queued for the dead peer.
            st = conn.stats()
            assert st.send_queue_depth == 0 and st.outstanding_streams == 0
            assert st.bytes_out < 64 * len(BIG_REPLY), st.bytes_out
            assert good_ok > 0
            await node.check_good()

    run(loop_kind, main)
