"""Encoded messages in parts: SplitFrame items in encode_frames,
encode_batches and encode_merged (how the compiled core queues a large
payload without copying it), and frames of SPLIT_FRAME bytes or more
arriving split from a parser's read window.

Every output is compared byte for byte with the pure twin's encoding of
the joined messages: the parts never change what goes on the wire.
"""

from __future__ import annotations

import os
import random
from types import ModuleType

import pytest

from grid import _codec_py
from grid._consts import FLAG_CRC, FLAG_EOF, FLAG_SUBROUTE

from conftest import CODEC_TWINS, codec_cy
from _helpers import frame

SPLIT = _codec_py.SPLIT_FRAME
KEY = b"\x9a\x01\xfe\x37"
SPLIT_CLASSES = [t.SplitFrame for t in CODEC_TWINS]


def _split(cls: type, msg: bytes) -> object:
    """``msg`` (one encoded message) as a SplitFrame of class ``cls``."""
    m = _codec_py.decode_message(msg)
    tail = (32 if m.flags & FLAG_SUBROUTE else 0) + (4 if m.flags & FLAG_CRC else 0)
    n = len(m.payload or b"")
    head = len(msg) - n - tail
    return cls(msg[:head], msg[head:head + n], msg[head + n:])


def _messages(rng: random.Random, sizes: list[int]) -> list[bytes]:
    out = []
    for i, size in enumerate(sizes):
        flags = rng.choice([0, FLAG_CRC, FLAG_CRC | FLAG_EOF, FLAG_CRC | FLAG_SUBROUTE])
        sub = os.urandom(32) if flags & FLAG_SUBROUTE else None
        out.append(_codec_py.encode_message(i + 1, i, 1000, 3, 14, flags, rng.randbytes(size),
                                            sub))
    return out


BATCHES = [
    [SPLIT], [SPLIT - 1], [40000], [0], [100, 20000], [20000, 100], [5000, 5000, 20000],
    [20000, 40000, 20000], [10] * 60 + [30000], [SPLIT, SPLIT, SPLIT],
]


@pytest.mark.parametrize("sizes", BATCHES, ids=[str(i) for i in range(len(BATCHES))])
@pytest.mark.parametrize("mask_key", [None, KEY], ids=["unmasked", "masked"])
@pytest.mark.parametrize("cls", SPLIT_CLASSES, ids=[t.__name__ for t in CODEC_TWINS])
def test_encode_frames_with_parts_is_the_joined_encoding(codec: ModuleType, cls: type,
                                                         sizes: list[int],
                                                         mask_key: bytes | None) -> None:
    msgs = _messages(random.Random(len(sizes)), sizes)
    want = _codec_py.encode_frames(msgs, mask_key)
    mixed = [_split(cls, m) if i % 2 == 0 else m for i, m in enumerate(msgs)]
    assert codec.encode_frames(mixed, mask_key) == want
    assert codec.encode_frames([_split(cls, m) for m in msgs], mask_key) == want
    # Small bounds force containers holding parts.
    assert (codec.encode_frames(mixed, mask_key, 3, 50000)
            == _codec_py.encode_frames(msgs, mask_key, 3, 50000))


@pytest.mark.parametrize("cls", SPLIT_CLASSES, ids=[t.__name__ for t in CODEC_TWINS])
def test_encode_batches_and_merged_join_parts(codec: ModuleType, cls: type) -> None:
    msgs = _messages(random.Random(7), [40000, 10, 20, 30000])
    parts = [_split(cls, m) for m in msgs]
    got = codec.encode_batches(parts)
    assert got == _codec_py.encode_batches(msgs)
    assert all(type(b) is bytes for b in got)  # a server framing them itself needs bytes
    assert codec.encode_merged(parts) == _codec_py.encode_merged(msgs)


@pytest.mark.parametrize("flen,split", [(SPLIT - 1, False), (SPLIT, True), (SPLIT + 1, True),
                                        (100_000, True)])
@pytest.mark.parametrize("server", [True, False], ids=["masked", "unmasked"])
def test_complete_frames_split_from_split_frame_on(codec: ModuleType, flen: int, split: bool,
                                                   server: bool) -> None:
    over = len(_codec_py.encode_message(1, 0, 0, 0, 15, FLAG_CRC, bytes(flen))) - flen
    msg = _codec_py.encode_message(1, 0, 0, 0, 15, FLAG_CRC, os.urandom(flen - over))
    assert len(msg) == flen
    p = codec.FrameParser(server, split_large=True)
    (op, body), = p.feed(frame(msg, 2, key=KEY if server else None))
    assert (type(body) is codec.SplitFrame) == split and bytes(body) == msg
    (m,) = codec.decode_messages(body)
    assert (m.mux_id, m.op, m.flags, m.payload) == (1, 15, FLAG_CRC, msg[len(msg) - 4 - len(m.payload):-4])
    # A container stays bytes, whatever its size.
    box = _codec_py.encode_merged([msg, msg])
    (op, body), = p.feed(frame(box, 2, key=KEY if server else None))
    assert type(body) is bytes and body == box


def test_split_payload_does_not_alias_the_read_window(codec: ModuleType) -> None:
    """The window goes back to the pool after each read and is lent again:
    a message payload copied out of it must not change when it is reused."""
    payload = os.urandom(3 * SPLIT)
    msg = _codec_py.encode_message(5, 0, 0, 0, 15, FLAG_CRC, payload)
    data = frame(msg, 2)
    p = codec.FrameParser(False, split_large=True)
    view = p.get_buffer()
    view[:len(data)] = data
    (op, body), = p.buffer_updated(len(data))
    m = codec.decode_message(body)
    assert m.payload == payload
    for _ in range(3):  # the next reads get the pooled window(s) back: scribble over them
        view = p.get_buffer()
        view[:] = b"\xee" * len(view)
        assert p.buffer_updated(0) == []
    assert m.payload == payload and bytes(body) == msg


@pytest.mark.skipif(codec_cy is None, reason="the compiled codec is not built")
def test_compiled_parts_are_the_payload_object() -> None:
    """decode_messages of a compiled split frame hands out its payload object."""
    payload = os.urandom(2 * SPLIT)
    msg = _codec_py.encode_message(5, 0, 0, 0, 15, FLAG_CRC, payload)
    (op, body), = codec_cy.FrameParser(False, split_large=True).feed(frame(msg, 2))
    assert codec_cy.decode_messages(body)[0].payload is body.payload
