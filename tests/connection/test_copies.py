"""A large payload is copied once on each side (docs: ARCHITECTURE.md,
"Copies of a message"): the compiled core queues a message whose payload has
SPLIT_FRAME bytes or more in parts, holding the caller's payload object, and
frames it straight from there; the receiver copies it out of its read window
once.  What goes on the wire is byte for byte what the pure twin sends."""

from __future__ import annotations

import asyncio
import os
from types import ModuleType
from typing import Any, AsyncIterator

import pytest

import grid
from grid import _codec_py, _mux_py
from grid._consts import FLAG_CRC, FLAG_EOF, FLAG_SUBROUTE, LARGE_MESSAGE, Op
from grid.testing import TestGrid
from support import run

from conftest import MUX_TWINS, mux_cy

SPLIT = _codec_py.SPLIT_FRAME
KEY = b"\x10\x32\x54\x76"
ECHO, ITEMS = 1, 2
SIZES = [SPLIT - 1, SPLIT, SPLIT + 3, 32 * 1024, 200_000, LARGE_MESSAGE - 1]


class _Owner:
    """A ConnCore owner that only lets the core queue."""

    def _schedule_flush(self) -> None:
        pass

    def _flush_early(self) -> None:
        pass


def _queue_all(mux: ModuleType, payloads: list[bytes], sub: bytes) -> Any:
    core = mux.ConnCore(_Owner(), False, 1 << 24, None)
    for i, p in enumerate(payloads):
        core.send_message(i + 1, 0, 1000, 3, 14, FLAG_CRC | FLAG_EOF, p, None)
        core.send_message(i + 1, 0, 1000, 3, 14, FLAG_CRC | FLAG_SUBROUTE, p, sub)
        core.respond(i + 100, 0, p, None)
    return core


@pytest.mark.parametrize("mask_key", [None, KEY], ids=["unmasked", "masked"])
def test_core_frames_match_the_pure_twin(mask_key: bytes | None) -> None:
    payloads = [os.urandom(n) for n in SIZES] + [b"", b"x", os.urandom(3000)]
    sub = os.urandom(32)
    want = _queue_all(_mux_py, payloads, sub).take_frames(mask_key)
    for mux in MUX_TWINS:
        core = _queue_all(mux, payloads, sub)
        assert core.take_frames(mask_key) == want
        # The batches a server framing messages itself would send, as bytes.
        core = _queue_all(mux, payloads, sub)
        got = core.take_messages()
        assert all(type(b) is bytes for b in got)
        assert got == _queue_all(_mux_py, payloads, sub).take_messages()


@pytest.mark.skipif(mux_cy is None, reason="the compiled core is not built")
def test_compiled_core_queues_the_payload_object() -> None:
    payload = os.urandom(SPLIT)
    small = os.urandom(SPLIT - 1)
    core = mux_cy.ConnCore(_Owner(), False, 1 << 24, None)
    core.send_message(1, 0, 0, 3, 14, FLAG_CRC, payload, None)
    core.send_message(2, 0, 0, 3, 14, FLAG_CRC, small, None)
    core.send_message(3, 0, 0, 3, 14, FLAG_CRC, bytearray(payload), None)
    big, plain, copied = core.queue
    assert big.payload is payload  # not copied: framed straight from the caller's object
    assert type(plain) is bytes and type(copied) is bytes  # small, or mutable: encoded at once
    assert bytes(big) == _codec_py.encode_message(1, 0, 0, 3, 14, FLAG_CRC, payload)
    assert core.queued_bytes == len(big) + len(plain) + len(copied)


def _queue_items(mux: ModuleType, items: list[bytes]) -> Any:
    core = mux.ConnCore(_Owner(), False, 1 << 24, None)
    core.base_flags = FLAG_CRC
    state = mux.MuxState(9, send_seq=0xFFFFFFFE, credits=len(items))  # the Seq wraps
    state.fast = True
    state.item_op = int(Op.MUX_SERVER_MSG)
    for item in items:
        assert core.send_item(state, item)
    return core


@pytest.mark.parametrize("mask_key", [None, KEY], ids=["unmasked", "masked"])
def test_stream_items_frame_as_the_pure_twin(mask_key: bytes | None) -> None:
    """Stream items of every size up to SPLIT_FRAME, in containers and
    alone: the compiled core's frames are the pure twin's, byte for byte."""
    items = [os.urandom(n) for n in (0, 1, 1023, 1024, 1025, 4096, 9000, SPLIT - 1, SPLIT)]
    want = _queue_items(_mux_py, items).take_frames(mask_key)
    for mux in MUX_TWINS:
        assert _queue_items(mux, items).take_frames(mask_key) == want
        for item in items:
            assert _queue_items(mux, [item]).take_frames(mask_key) == \
                _queue_items(_mux_py, [item]).take_frames(mask_key)
        assert _queue_items(mux, items).take_messages() == \
            _queue_items(_mux_py, items).take_messages()


@pytest.mark.skipif(mux_cy is None, reason="the compiled core is not built")
def test_compiled_core_queues_stream_items_of_a_kib_whole() -> None:
    """A stream item of 1 KiB or more is queued as the item object itself,
    copied once, into its frame; a smaller one is encoded at once."""
    small, item = os.urandom(1023), os.urandom(4096)
    core = _queue_items(mux_cy, [small, item])
    plain, split = core.queue
    assert type(plain) is bytes
    assert split.payload is item
    assert bytes(split) == _codec_py.encode_message(9, 0xFFFFFFFF, 0, 0, int(Op.MUX_SERVER_MSG),
                                                    FLAG_CRC, item)


# ---------------------------------------------------------------- over sockets


def _setup(m: grid.Manager) -> None:
    m.register_single(ECHO, lambda p: p)
    m.register_single(ECHO, lambda p: p, subroute="disk/1")

    async def items(ctx: grid.StreamContext, payload: bytes | None,
                    inbound: AsyncIterator[bytes] | None, out: grid.StreamOut) -> None:
        assert inbound is not None
        async for item in inbound:
            await out.send(item)

    m.register_stream(ITEMS, grid.StreamHandler(items, in_capacity=4, out_capacity=4))


@pytest.mark.parametrize("sizes", [[32 * 1024] * 16, SIZES], ids=["32KiB-x16", "mixed"])
def test_large_echo_in_flight_both_ways(loop_kind: str, sizes: list[int]) -> None:
    """Requests and replies of every size around SPLIT_FRAME, all in flight
    at once, plain and subrouted, in both directions (so each side sends
    masked and unmasked frames): every payload comes back intact."""
    async def main() -> None:
        async with TestGrid(2, setup=_setup) as g:
            for a, b in ((0, 1), (1, 0)):
                conn = g.conn(a, b)
                sub = conn.subroute("disk", "1")
                payloads = [os.urandom(n) for n in sizes]
                got = await asyncio.gather(*(c.request(ECHO, p, timeout=30)
                                             for p in payloads for c in (conn, sub)))
                assert got == [p for p in payloads for _ in (conn, sub)]

    run(loop_kind, main)


def test_large_stream_items_both_ways(loop_kind: str) -> None:
    """Stream items of SPLIT_FRAME bytes or more take the same path."""
    async def main() -> None:
        async with TestGrid(2, setup=_setup) as g:
            items = [os.urandom(n) for n in SIZES[:5]] * 2
            stream = await g.conn(0, 1).new_stream(ITEMS, None, in_capacity=4, out_capacity=4)
            got: list[bytes] = []

            async def send() -> None:
                for item in items:
                    await stream.send(item)
                await stream.close_send()

            sender = asyncio.ensure_future(send())
            async for item in stream:
                got.append(item)
            await sender
            assert got == items

    run(loop_kind, main)
