"""Byte bounds, write bounds, close handling and quiet logs, attacked over
real sockets while a well-behaved peer keeps calling the node.

The raw clients are those of test_hostile.py.  Memory is read from
/proc/self/statm: node and attackers share this process, so the attackers
send from one reused chunk and never hold what they send.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import os
import random
import struct
from typing import Any, Optional

import pytest

import grid
from grid import _codec_py
from grid._budget import ByteBudget
from grid._consts import HANDSHAKE_MESSAGE_MAX, WS_CLOSE, WS_PING
from grid._impl import local_dials
from grid._loglimit import LogLimit
from grid._wire import close_reply
from support import host_where, run
from test_hostile import ECHO, Node, Raw, http_request

MiB = 1 << 20
_PAGE = os.sysconf("SC_PAGE_SIZE")
_CHUNK = bytes(MiB)  # what every attacker sends: zeros, masked with a zero key


def rss() -> int:
    """This process's resident set size, in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def large_header(length: int) -> bytes:
    """A masked client frame header announcing a ``length``-byte binary
    message (mask key zero, so the payload goes as it is)."""
    return bytes([0x82, 0x80 | 127]) + struct.pack(">Q", length) + b"\0\0\0\0"


async def send_zeros(raw: Raw, n: int) -> None:
    for _ in range(n // MiB):
        if raw.w.transport.is_closing():
            return
        raw.w.write(_CHUNK)
        try:
            await raw.w.drain()
        except ConnectionError:  # the node dropped the socket
            return


async def until(cond: Any, within: float, what: str) -> None:
    """Poll ``cond()`` on the loop until it holds, at most ``within`` s."""
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"not within {within} s: {what}")
        await asyncio.sleep(0.005)


class Peers(Node):
    """Test_hostile's node with ``n`` more identities a raw client may
    complete the handshake as (hosts that dial the node)."""

    def __init__(self, n: int, **kwargs: Any) -> None:
        self.n = n
        super().__init__(**kwargs)

    def more_hosts(self) -> list[str]:
        hosts = super().more_hosts()
        self.extra: list[str] = []
        while len(self.extra) < self.n:
            self.extra.append(host_where(
                lambda h: h not in (self.host, self.good_host, self.peer, *hosts, *self.extra)
                and local_dials(h, self.host)))
        return hosts + self.extra

    async def as_peer(self, host: str) -> Raw:
        r = await self.raw()
        await r.upgrade()
        resp = await r.connect(host)
        assert resp.accepted, resp.rejected_reason
        await until(lambda: self.mgr.connection(host).state is grid.State.CONNECTED, 2,
                    "attached")
        return r


# =================================================================== partly received frames


def test_unauthenticated_large_frames_dropped(loop_kind: str) -> None:
    """16 sockets with only a bearer token announce 127 MiB frames: each is
    dropped at its frame header (before the handshake a socket may send 64
    KiB), the node holds nothing for them and the good peer sees no error."""

    async def main() -> None:
        async with Node(max_message_size=128 * MiB) as node:
            raws = [await node.upgraded() for _ in range(16)]
            before = rss()
            for r in raws:
                r.send(large_header(127 * MiB))
            await asyncio.gather(*(send_zeros(r, 4 * MiB) for r in raws))
            for r in raws:
                await r.expect_closed()
            assert rss() - before < 32 * MiB
            assert node.mgr._handshake.frame_budget.held == 0
            await node.check_good()

    run(loop_kind, main)


def test_handshake_message_limit(loop_kind: str) -> None:
    """A first message of HANDSHAKE_MESSAGE_MAX bytes is read (and rejected
    as a Connect that does not decode); one byte more is refused from its
    frame header, with the reason."""

    async def main() -> None:
        async with Node(max_message_size=128 * MiB) as node:
            for size in (HANDSHAKE_MESSAGE_MAX, HANDSHAKE_MESSAGE_MAX + 1):
                raw = await node.upgraded()
                raw.send_frame(b"\0" * size)
                resp = await raw.connect_response()
                assert not resp.accepted
                too_big = f"exceeds the limit of {HANDSHAKE_MESSAGE_MAX} bytes"
                assert (too_big in resp.rejected_reason) == (size > HANDSHAKE_MESSAGE_MAX)
                await raw.expect_closed()
            await node.check_good()

    run(loop_kind, main)


def test_partial_bytes_capped_and_released_without_gc(loop_kind: str) -> None:
    """Authenticated peers announcing large frames share max_partial_bytes:
    the one whose frame would pass it is dropped, the others hold theirs;
    once a socket closes its memory is back within 1 s with the cyclic
    garbage collector off (no reference cycle holds a parser's buffer)."""

    async def main() -> None:
        async with Peers(3, max_message_size=128 * MiB, max_partial_bytes=160 * MiB) as node:
            budget = node.mgr._handshake.frame_budget
            a, b, c = [await node.as_peer(h) for h in node.extra]
            start = rss()
            gc.disable()
            try:
                a.send(large_header(100 * MiB))
                await send_zeros(a, 96 * MiB)
                await until(lambda: budget.held == 100 * MiB, 5, "a's frame held")
                assert rss() - start > 64 * MiB  # the attack costs what it sends
                b.send(large_header(61 * MiB))  # 161 MiB: over the limit
                await send_zeros(b, MiB)
                await b.expect_closed()
                c.send(large_header(60 * MiB))  # 160 MiB: fits
                await send_zeros(c, 8 * MiB)
                await until(lambda: budget.held == 160 * MiB, 2, "c's frame held")
                assert node.mgr.connection(node.extra[0]).state is grid.State.CONNECTED
                await node.check_good()
                peak = rss()
                a.close()
                c.close()
                await until(lambda: budget.held == 0, 1, "budget given back")
                await until(lambda: rss() - start < 32 * MiB, 1,
                            f"memory released (peak {peak - start >> 20} MiB over start)")
            finally:
                gc.enable()
            await node.check_good()

    run(loop_kind, main)


def test_fragments_count_against_the_budget(loop_kind: str) -> None:
    """A message sent as fragments (each frame unfinished while it arrives)
    counts too: past the limit that socket is dropped."""

    async def main() -> None:
        async with Peers(1, max_message_size=128 * MiB, max_partial_bytes=16 * MiB) as node:
            raw = await node.as_peer(node.extra[0])
            budget = node.mgr._handshake.frame_budget
            for _ in range(4):  # four whole 4 MiB fragments: 16 MiB held, then more
                raw.w.write(bytes([0x02 if _ == 0 else 0x00, 0x80 | 127])
                            + struct.pack(">Q", 4 * MiB) + b"\0\0\0\0")
                await send_zeros(raw, 4 * MiB)
            raw.w.write(bytes([0x00, 0x80 | 127]) + struct.pack(">Q", MiB) + b"\0\0\0\0")
            raw.w.write(b"\0" * 1024)
            await raw.expect_closed()
            assert "limit of 16777216 bytes" in (
                node.mgr.connection(node.extra[0]).last_error or "")
            await until(lambda: budget.held == 0, 1, "budget given back")
            await node.check_good()

    run(loop_kind, main)


def test_pending_handshakes_capped(loop_kind: str) -> None:
    """Past max_pending_handshakes upgraded sockets waiting for their
    handshake, an upgrade is refused with HTTP 503; a slot frees as one goes."""

    async def main() -> None:
        async with Node(max_pending_handshakes=4) as node:
            waiting = [await node.upgraded() for _ in range(4)]
            extra = await node.raw()
            extra.send(http_request())
            status, _, body = await extra.read_http()
            assert status == 503 and b"too many handshakes" in body
            await extra.expect_closed()
            waiting[0].close()
            await until(lambda: len(node.mgr._handshake.upgraded) == 3, 1, "slot freed")
            await node.upgraded()
            await node.check_good()

    run(loop_kind, main)


# =================================================================== writes


@pytest.mark.parametrize("phase", ["handshake", "connected"])
def test_ping_flood_without_reading(loop_kind: str, phase: str) -> None:
    """A peer that sends pings and never reads: the node keeps only the
    answer to the latest ping while its writes are paused, so what it
    buffers stays near the transport's high-water mark; the socket is then
    dropped by the write stall (connected) or the handshake timeout."""

    async def main() -> None:
        async with Node(write_timeout=0.5, handshake_timeout=1.0) as node:
            raw = await node.raw(rcvbuf=4096)
            await raw.upgrade()
            if phase == "connected":
                resp = await raw.connect(node.peer)
                assert resp.accepted
                await until(lambda: node.peer_conn.state is grid.State.CONNECTED, 2, "attached")
                wire = node.peer_conn._wire
            else:
                (wire,) = node.mgr._handshake.upgraded
            ping = _codec_py.encode_frame(b"p" * 125, WS_PING, b"\0\0\0\0") * 1000
            most = 0
            for _ in range(100):  # 100,000 pings: 13 MB of pongs were it to answer each
                if raw.w.transport.is_closing():
                    break
                raw.w.write(ping)
                try:
                    await raw.w.drain()
                except ConnectionError:
                    break
                if wire.transport is not None:
                    most = max(most, wire.transport.get_write_buffer_size())
            assert 0 < most < MiB
            if phase == "connected":  # dropped while the peer still does not read
                await until(lambda: node.peer_conn.state is not grid.State.CONNECTED, 3,
                            "dropped by the write stall")
                assert "writes stalled" in (node.peer_conn.last_error or "")
            await raw.expect_closed(timeout=5)
            await node.check_good()

    run(loop_kind, main)


# =================================================================== close frames


CLOSE_CASES = [
    (b"", b""), (b"\x03", b"\x03\xea"),
    *[(struct.pack(">H", code), b"\x03\xea")
      for code in (0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535)],
    *[(struct.pack(">H", code) + b"bye", struct.pack(">H", code))
      for code in (1000, 1001, 1002, 1003, 1007, 1011, 1012, 1014, 3000, 4999)],
    (b"\x03\xe8\xff\xfe", b"\x03\xea"), (b"\x03\xe8caf\xc3\xa9", b"\x03\xe8"),
]


@pytest.mark.parametrize("payload,reply", CLOSE_CASES)
def test_close_reply(payload: bytes, reply: bytes) -> None:
    assert close_reply(payload) == reply


@pytest.mark.parametrize("phase", ["handshake", "connected"])
@pytest.mark.parametrize("payload,reply", [(b"\x03", b"\x03\xea"), (b"\x00\x00", b"\x03\xea"),
                                           (b"\x03\xed", b"\x03\xea"), (b"\x13\x88", b"\x03\xea"),
                                           (b"\x03\xe8\xc3", b"\x03\xea"),
                                           (b"\x0b\xb8ok", b"\x0b\xb8")],
                         ids=["1-byte", "0", "1005", "5000", "bad-utf8", "3000"])
def test_close_frame_answered(loop_kind: str, phase: str, payload: bytes, reply: bytes) -> None:
    """Invalid close frames are answered with 1002, valid ones echoed; then
    the socket closes and the good peer is unaffected."""

    async def main() -> None:
        async with Node() as node:
            raw = await (node.upgraded() if phase == "handshake" else node.peer_raw())
            raw.send_frame(payload, WS_CLOSE)
            assert await raw.expect_closed() == [(WS_CLOSE, reply)]
            await node.check_good()

    run(loop_kind, main)


# =================================================================== logs


@dataclasses.dataclass
class Tree:
    name: str = ""
    kids: list[Tree] = dataclasses.field(default_factory=list)
    up: Optional[Tree] = None


TREE = grid.SingleHandler(40, Tree, Tree)
BOOM = 41


def _nested(depth: int) -> bytes:
    """A Tree payload ``depth`` levels deep through ``up`` (fixmap entries)."""
    return b"\x81\xa2up" * depth + b"\xc0"


def test_typed_nesting_and_handler_errors_are_quiet(loop_kind: str,
                                                   caplog: pytest.LogCaptureFixture,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Typed payloads nested past what the decoder takes are a decode error
    for the caller (Go's msgp text), never a handler crash; handler
    exceptions log their traceback only for the first few per interval."""

    monkeypatch.setattr(grid.typed, "_decode_log", LogLimit(burst=3))  # a fresh interval

    async def main() -> None:
        async with Node(max_message_size=MiB) as node:
            TREE.register(node.mgr, lambda t: Tree(name=t.name))

            def boom(p: Any) -> bytes:
                raise ValueError("boom")

            node.mgr.register_single(BOOM, boom)
            c = node.good_conn
            with caplog.at_level(logging.DEBUG, logger="grid"):
                assert (await TREE.call(c, Tree(name="x", up=Tree()))).name == "x"
                for depth in (600, 5000) * 20:
                    with pytest.raises(grid.RemoteError) as ei:
                        await c.request(TREE.handler_id, _nested(depth), timeout=5)
                    assert ei.value.message == "msgp: recursion limit reached"
                for _ in range(50):
                    with pytest.raises(grid.RemoteError) as ei:
                        await c.request(BOOM, b"", timeout=5)
                    assert ei.value.message == "ValueError: boom"
                await node.check_good()
            loud = [r for r in caplog.records if r.levelno >= logging.INFO]
            with_tb = [r for r in loud if r.exc_info]
            assert len(with_tb) == 5 and all("boom" in r.getMessage() for r in with_tb)
            assert len([r for r in loud if "did not decode" in r.getMessage()]) == 3
            assert not any("RecursionError" in r.getMessage() for r in caplog.records)
            assert len([r for r in caplog.records if "raised" in r.getMessage()]) == 50

    run(loop_kind, main)


def test_restart_lines_rate_limited(loop_kind: str, caplog: pytest.LogCaptureFixture) -> None:
    """A peer reconnecting with a new instance id every time: one
    "restarted" line per interval, the rest counted at DEBUG."""

    async def main() -> None:
        async with Node() as node:
            with caplog.at_level(logging.DEBUG, logger="grid"):
                for _ in range(40):
                    await node.peer_raw()
                await node.check_good()
            lines = [r for r in caplog.records if "restarted" in r.getMessage()]
            assert len(lines) == 39
            assert len([r for r in lines if r.levelno >= logging.INFO]) == 1

    run(loop_kind, main)


# =================================================================== the parser's budget, both twins


def _stream(rng: random.Random) -> bytes:
    """Frames a client sends: small ones, a large one, fragments."""
    out = bytearray()
    enc = _codec_py.encode_frame
    for _ in range(rng.randrange(1, 6)):
        kind = rng.randrange(4)
        if kind == 0:
            out += enc(os.urandom(rng.randrange(0, 2000)), 2, os.urandom(4))
        elif kind == 1:
            out += enc(os.urandom(rng.randrange(256 * 1024, 700 * 1024)), 2, os.urandom(4))
        elif kind == 2:
            out += enc(os.urandom(rng.randrange(100 * 1024, 300 * 1024)), 2, os.urandom(4), False)
            out += enc(b"ping", WS_PING, os.urandom(4))
            out += enc(os.urandom(rng.randrange(100 * 1024, 300 * 1024)), 0, os.urandom(4))
        else:
            out += enc(os.urandom(200 * 1024), 2, os.urandom(4), False)
            out += enc(os.urandom(1000), 0, os.urandom(4), True)
    return bytes(out)


@pytest.mark.parametrize("seed", range(12))
def test_parser_budget_twins_agree(codec_pair: Any, seed: int) -> None:
    """Both twins take and give the same bytes of a shared budget at every
    read, fail on the same read with the same text, and give everything back
    when they fail or close."""
    rng = random.Random(seed)
    data = _stream(rng)
    limit = rng.choice([300 * 1024, 600 * 1024, 2 * MiB])
    results = []
    for codec in codec_pair:
        budget = ByteBudget(limit)
        p = codec.FrameParser(True, 4 * MiB, split_large=bool(seed & 1))
        p.budget = budget
        trace: list[Any] = []
        r = random.Random(seed)
        pos = 0
        while pos < len(data):
            n = r.randrange(1, 400 * 1024)
            try:
                events = p.feed(data[pos:pos + n])
            except grid.ProtocolError as exc:
                trace.append(("error", str(exc), budget.held))
                break
            trace.append(([(op, e if isinstance(e, bytes) else e.head + e.payload + e.tail)
                           for op, e in events], p.held, budget.held))
            assert p.held == budget.held <= limit
            pos += n
        p.close()
        assert budget.held == 0 and p.held == 0 and p.failed
        results.append(trace)
    assert results[0] == results[1]
