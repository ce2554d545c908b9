"""Large messages leave without holding the event loop (issue 8, fairness):
a payload of LARGE_MESSAGE bytes or more is encoded and framed on the
manager's encoder thread (``encode_message_frame``, its copies, CRC and mask
without the GIL) and written in order with everything else on the wire."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from types import ModuleType
from typing import Any, AsyncIterator

import pytest

import grid
from grid import _codec_py
from grid._consts import FLAG_CRC, FLAG_EOF, FLAG_SUBROUTE, LARGE_MESSAGE
from grid.testing import TestGrid
from support import run

ECHO, GATED, DIGESTS, PRODUCE = 1, 2, 10, 11
BIG = 2 * LARGE_MESSAGE


def _digest(item: bytes) -> bytes:
    return len(item).to_bytes(8, "big") + hashlib.sha256(item).digest()


# ---------------------------------------------------------------- codec twins


@pytest.mark.parametrize("size", [0, 1, 125, 126, 0xFFFF, 0x10000, LARGE_MESSAGE - 1,
                                  LARGE_MESSAGE, LARGE_MESSAGE + 3])
@pytest.mark.parametrize("flags", [0, FLAG_CRC, FLAG_CRC | FLAG_EOF | FLAG_SUBROUTE])
@pytest.mark.parametrize("mask_key", [None, b"\x01\x02\x03\x04"])
def test_encode_message_frame_is_one_framed_message(codec: ModuleType, size: int, flags: int,
                                                    mask_key: bytes | None) -> None:
    payload = os.urandom(size)
    sub = os.urandom(32) if flags & FLAG_SUBROUTE else None
    frame = codec.encode_message_frame(7, 3, 1000, 9, 14, flags, payload, sub, mask_key)
    want = _codec_py.encode_frames([_codec_py.encode_message(7, 3, 1000, 9, 14, flags, payload,
                                                             sub)], mask_key)
    assert frame == want
    events = _codec_py.FrameParser(server=mask_key is not None,
                                   max_message_size=size + 1024).feed(frame)
    assert len(events) == 1
    assert (_codec_py.decode_message(events[0][1]).payload or b"") == payload  # b"" reads as absent without FlagPayloadIsZero


def test_encode_message_frame_random_key_round_trips(codec: ModuleType) -> None:
    payload = os.urandom(LARGE_MESSAGE)
    frames = {codec.encode_message_frame(1, 0, 0, 2, 14, FLAG_CRC, payload, None, b"")
              for _ in range(3)}
    assert len(frames) == 3  # a fresh key each time
    for frame in frames:
        (op, body), = _codec_py.FrameParser(True, 2 * LARGE_MESSAGE).feed(frame)
        assert _codec_py.decode_message(body).payload == payload


@pytest.mark.parametrize("args", [
    (1, 2, 3, 4, 5, 0, b"x", None, b"abc"),             # mask key of 3 bytes
    (1, 2, 3, 4, 5, FLAG_SUBROUTE, b"x", None, None),   # subroute flag without an id
    (1, 2, 3, 4, 5, 0, "text", None, None),              # not bytes-like
    (1, 2, 3, 256, 5, 0, b"", None, None),              # handler out of range
    (1, 2, 3, 4, 5, 0, b"", None, 7),                   # mask key not bytes-like
])
def test_encode_message_frame_errors_match_pure(codec: ModuleType, args: tuple[Any, ...]) -> None:
    with pytest.raises(Exception) as want:
        _codec_py.encode_message_frame(*args)
    with pytest.raises(type(want.value)) as got:
        codec.encode_message_frame(*args)
    assert str(got.value) == str(want.value)


# ---------------------------------------------------------------- over sockets


def _setup(m: grid.Manager) -> None:
    m.register_single(ECHO, lambda p: p)
    m.register_single(ECHO, lambda p: p, subroute="disk/1")

    async def gated(payload: bytes | None) -> bytes | None:
        gate = GATES[m.local]
        gate[0].set()  # the request has arrived
        await gate[1]
        return payload

    m.register_single(GATED, gated)

    async def digests(ctx: grid.StreamContext, payload: bytes | None,
                      inbound: AsyncIterator[bytes] | None, out: grid.StreamOut) -> None:
        assert inbound is not None
        async for item in inbound:
            await out.send(_digest(item))

    m.register_stream(DIGESTS, grid.StreamHandler(digests, in_capacity=4, out_capacity=4))

    async def produce(ctx: grid.StreamContext, payload: bytes | None,
                      inbound: AsyncIterator[bytes] | None, out: grid.StreamOut) -> None:
        assert payload is not None
        for size in payload.split(b","):
            n = int(size)
            await out.send(bytes([n % 251]) * n)

    m.register_stream(PRODUCE, grid.StreamHandler(produce, in_capacity=0, out_capacity=4))


#: Per host: (arrived, gate) for the GATED handler of the graceful-close test.
GATES: dict[str, tuple[asyncio.Event, asyncio.Future[None]]] = {}


def _grid(**kw: Any) -> TestGrid:
    return TestGrid(2, setup=_setup, max_message_size=8 * LARGE_MESSAGE, **kw)


def _encoder_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith("grid-encode"))


def test_large_requests_and_replies_use_the_encoder_thread(loop_kind: str) -> None:
    """Large requests and replies, plain and subrouted, both directions."""
    async def main() -> None:
        async with _grid() as g:
            ab, ba = g.conn(0, 1), g.conn(1, 0)
            before = ab.stats().messages_out
            payload = os.urandom(BIG)
            assert await ab.request(ECHO, payload, timeout=30) == payload
            assert await ab.subroute("disk", "1").request(ECHO, payload, timeout=30) == payload
            assert await ba.request(ECHO, payload, timeout=30) == payload
            # Compiled: framed on the encoder thread.  Pure: inline (the pure
            # codec holds the GIL, a thread would only contend for it).
            assert (_encoder_threads() >= 1) == grid._impl.ACCELERATED
            assert ab.stats().messages_out - before >= 2

    run(loop_kind, main)


def test_small_and_large_requests_mixed_on_one_connection(loop_kind: str) -> None:
    async def main() -> None:
        async with _grid() as g:
            ab = g.conn(0, 1)
            payloads = [os.urandom(LARGE_MESSAGE + i * 4099 if i % 5 == 0 else 100 + i)
                        for i in range(60)]
            replies = await asyncio.gather(*(ab.request(ECHO, p, timeout=60) for p in payloads))
            assert replies == payloads
            assert ab.stats().reconnects == 0

    run(loop_kind, main)


def test_stream_items_keep_their_order_around_large_ones(loop_kind: str) -> None:
    async def main() -> None:
        sizes = [10, BIG, 0, 3, LARGE_MESSAGE, LARGE_MESSAGE - 1, 7, BIG + 1, 5, 1]
        async with _grid() as g:
            ab = g.conn(0, 1)
            # Caller -> handler: the handler answers each item with its digest.
            items = [os.urandom(n) for n in sizes]
            st = await ab.new_stream(DIGESTS, None, in_capacity=4, out_capacity=4)

            async def feed() -> None:
                for item in items:
                    await st.send(item)
                await st.close_send()

            feeder = asyncio.create_task(feed())
            got = [d async for d in st]
            await feeder
            assert got == [_digest(i) for i in items]
            # Handler -> caller: large and small items arrive in order, intact.
            st2 = await ab.new_stream(PRODUCE, b",".join(str(n).encode() for n in sizes),
                                      in_capacity=0, out_capacity=4)
            received = [item async for item in st2]
            assert received == [bytes([n % 251]) * n for n in sizes]
            assert ab.stats().outstanding_streams == 0

    run(loop_kind, main)


def test_drop_while_framing_fails_the_call_and_the_next_connection_works(loop_kind: str) -> None:
    async def main() -> None:
        async with _grid() as g:
            ab = g.conn(0, 1)
            payload = os.urandom(6 * LARGE_MESSAGE)
            call = ab.request(ECHO, payload, timeout=30)
            wire = ab._wire
            assert wire is not None and wire.transport is not None
            wire.transport.abort()  # the frame is still being built on the encoder thread
            with pytest.raises(grid.Disconnected):
                await call
            await ab.wait_for_connect(timeout=10)
            assert await ab.request(ECHO, payload, timeout=30) == payload

    run(loop_kind, main)


def test_graceful_close_waits_for_a_large_reply(loop_kind: str) -> None:
    async def main() -> None:
        async with _grid() as g:
            ab = g.conn(0, 1)
            arrived, gate = asyncio.Event(), asyncio.get_running_loop().create_future()
            GATES[g.hosts[1]] = (arrived, gate)
            payload = os.urandom(4 * LARGE_MESSAGE)
            call = asyncio.ensure_future(ab.request(GATED, payload, timeout=30))
            await arrived.wait()
            closing = asyncio.create_task(g.managers[1].close(grace=20))
            await asyncio.sleep(0)  # close() is now draining
            assert g.managers[1].draining
            gate.set_result(None)  # the handler returns its 4 MiB reply while draining
            await closing
            assert await call == payload
            GATES.pop(g.hosts[1])

    run(loop_kind, main)
