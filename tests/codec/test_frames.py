"""WebSocket framing (docs/protocol.md §1.5, RFC 6455): encode_frame,
apply_mask and FrameParser on both twins, including every header violation
Go's reader rejects and every way of delivering the bytes.
"""

from __future__ import annotations

import random
import re

import pytest

from grid._consts import DEFAULT_MAX_MESSAGE_SIZE
from grid.errors import ProtocolError

H = bytes.fromhex
E1 = H("970100cdea60150e02c40581a161a162")
E1_SERVER_FRAME = H("8210") + E1
E1_CLIENT_FRAME = H("8290" "11223344" "86233389fb42264a13e636c5b0439226")
KEY = H("11223344")

from _helpers import BINARY, CLOSE, CONT, PING, PONG, TEXT, frame, mask


# ---------------------------------------------------------------- §1.5 examples


def test_spec_frame_examples(codec):
    assert codec.encode_frame(E1) == E1_SERVER_FRAME
    assert codec.encode_frame(E1, mask_key=KEY) == E1_CLIENT_FRAME
    assert codec.encode_frame(E1, 2, KEY, True) == E1_CLIENT_FRAME
    assert codec.apply_mask(E1, KEY) == E1_CLIENT_FRAME[6:]
    assert codec.FrameParser(server=False).feed(E1_SERVER_FRAME) == [(BINARY, E1)]
    assert codec.FrameParser(server=True).feed(E1_CLIENT_FRAME) == [(BINARY, E1)]


def test_apply_mask(codec):
    assert codec.apply_mask(b"", KEY) == b""
    for n in (1, 2, 3, 4, 5, 7, 8, 63, 64, 65, 1000, 65536 + 3):
        data = bytes((i * 7 + 3) & 0xFF for i in range(n))
        for d in (data, bytearray(data), memoryview(data)):
            out = codec.apply_mask(d, KEY)
            assert isinstance(out, bytes)
            assert out == mask(data, KEY)
        assert codec.apply_mask(codec.apply_mask(data, b"\xde\xad\xbe\xef"), bytearray(b"\xde\xad\xbe\xef")) == data
    for bad in (b"", b"\x01\x02\x03", b"\x01\x02\x03\x04\x05"):
        with pytest.raises(ValueError):
            codec.apply_mask(b"abcd", bad)


@pytest.mark.parametrize("n,header", [
    (0, "8200"), (125, "827d"), (126, "827e007e"), (65535, "827effff"),
    (65536, "827f0000000000010000"), (70000, "827f0000000000011170"),
])
def test_frame_length_boundaries(codec, n, header):
    payload = bytes(i & 0xFF for i in range(n))
    f = codec.encode_frame(payload)
    assert f == H(header) + payload
    assert codec.FrameParser(False).feed(f) == [(BINARY, payload)]
    mf = codec.encode_frame(payload, mask_key=KEY)
    hb = H(header)
    assert mf == hb[:1] + bytes([hb[1] | 0x80]) + hb[2:] + KEY + mask(payload, KEY)
    assert codec.FrameParser(True).feed(mf) == [(BINARY, payload)]
    # The same frames written by the independent encoder parse identically.
    assert codec.FrameParser(True).feed(frame(payload, key=KEY)) == [(BINARY, payload)]


def test_encode_frame_options(codec):
    assert codec.encode_frame(b"hi", TEXT) == b"\x81\x02hi"
    assert codec.encode_frame(b"ab", BINARY, None, False) == b"\x02\x02ab"
    assert codec.encode_frame(b"ab", opcode=CONT, fin=True) == b"\x80\x02ab"
    assert codec.encode_frame(b"\x03\xe8", CLOSE) == b"\x88\x02\x03\xe8"
    assert codec.encode_frame(bytearray(b"xy"), PING) == b"\x89\x02xy"
    assert codec.encode_frame(memoryview(b"xy"), PONG, KEY) == b"\x8a\x82" + KEY + mask(b"xy", KEY)
    # mask_key=b"" draws a random key: masked bit set, payload recoverable.
    f = codec.encode_frame(E1, mask_key=b"")
    assert f[:2] == b"\x82\x90" and len(f) == 2 + 4 + len(E1)
    assert codec.FrameParser(True).feed(f) == [(BINARY, E1)]
    for bad in (-1, 16):
        with pytest.raises(ValueError):
            codec.encode_frame(b"", bad)
    with pytest.raises(ValueError):
        codec.encode_frame(b"x", mask_key=b"\x01\x02\x03")


def test_mask_keys_come_fresh_from_the_pool(codec):
    """mask_key() hands out 4-byte keys, a refill of the pool brings new
    ones, and encode_frame with ``b""`` draws its key from the same pool."""
    keys = [codec.mask_key() for _ in range(2048)]  # crosses at least one refill
    assert {type(k) for k in keys} == {bytes} and {len(k) for k in keys} == {4}
    assert b"".join(keys[:1024]) != b"".join(keys[1024:])
    frames = [codec.encode_frame(E1, mask_key=b"") for _ in range(1024)]
    assert [codec.FrameParser(True).feed(f) for f in frames] == [[(BINARY, E1)]] * 1024
    assert len({f[2:6] for f in frames}) > 1


# ---------------------------------------------------------------- events


@pytest.mark.parametrize("server", [True, False], ids=["server", "client"])
def test_fragments_with_interleaved_control_frames(codec, server):
    key = KEY if server else None
    stream = (
        frame(b"ab", BINARY, fin=False, key=key)
        + frame(b"x", PING, key=key)
        + frame(b"cd", CONT, fin=False, key=key)
        + frame(b"", PONG, key=key)
        + frame(b"ef", CONT, key=key)
        + frame(b"t\xc3\xa9xt", TEXT, key=key)
        + frame(b"1", TEXT, fin=False, key=key)
        + frame(b"", CONT, fin=False, key=key)
        + frame(b"2", CONT, key=key)
        + frame(b"", BINARY, key=key)
        + frame(b"\x00" * 125, PING, key=key)
        + frame(b"\x03\xe8bye", CLOSE, key=key)
    )
    assert codec.FrameParser(server).feed(stream) == [
        (PING, b"x"), (PONG, b""), (BINARY, b"abcdef"), (TEXT, b"t\xc3\xa9xt"), (TEXT, b"12"),
        (BINARY, b""), (PING, b"\x00" * 125), (CLOSE, b"\x03\xe8bye"),
    ]


def test_partial_input_waits(codec):
    p = codec.FrameParser(False)
    f = frame(b"z" * 300)
    assert p.feed(f[:1]) == []
    assert p.feed(f[1:3]) == []  # 16-bit length cut in half
    assert p.feed(f[3:100]) == []
    assert p.feed(f[100:] + f[:5]) == [(BINARY, b"z" * 300)]
    assert p.feed(f[5:]) == [(BINARY, b"z" * 300)]
    assert p.feed(b"") == []
    assert p.failed is False


def test_event_payloads_are_owned_bytes(codec):
    p = codec.FrameParser(False)
    buf = p.get_buffer(-1)
    f = frame(b"hello")
    buf[:len(f)] = f
    events = p.buffer_updated(len(f))
    assert events == [(BINARY, b"hello")]
    assert type(events[0][1]) is bytes
    buf = p.get_buffer(-1)
    buf[:len(f)] = b"\xff" * len(f)  # reusing the read buffer must not touch old events
    assert events == [(BINARY, b"hello")]


def test_max_message_size(codec):
    p = codec.FrameParser(False, max_message_size=10)
    assert p.feed(frame(b"0123456789")) == [(BINARY, b"0123456789")]
    assert p.feed(frame(b"y" * 125, PING)) == [(PING, b"y" * 125)]  # control frames: own limit
    with pytest.raises(ProtocolError, match=r"^message of 11 bytes exceeds the limit of 10 bytes$"):
        p.feed(frame(b"x" * 11))
    assert p.failed


def test_max_message_size_across_fragments(codec):
    p = codec.FrameParser(True, max_message_size=10)
    ok = frame(b"abcd", fin=False, key=KEY) + frame(b"efghij", CONT, key=KEY)
    assert p.feed(ok) == [(BINARY, b"abcdefghij")]
    p.feed(frame(b"abcdef", fin=False, key=KEY))
    p.feed(frame(b"g", PING, key=KEY))
    with pytest.raises(ProtocolError, match=r"^message of 11 bytes exceeds the limit of 10 bytes$"):
        # Rejected on the header: the payload never has to arrive.
        p.feed(frame(b"xyzab", CONT, key=KEY)[:2])


def test_max_message_size_zero_and_default(codec):
    p = codec.FrameParser(False, max_message_size=0)
    assert p.feed(frame(b"") + frame(b"", TEXT)) == [(BINARY, b""), (TEXT, b"")]
    with pytest.raises(ProtocolError, match=r"^message of 1 bytes exceeds the limit of 0 bytes$"):
        p.feed(frame(b"x"))
    assert codec.FrameParser(False).max_message_size == DEFAULT_MAX_MESSAGE_SIZE
    p = codec.FrameParser(False)
    huge = DEFAULT_MAX_MESSAGE_SIZE + 1
    with pytest.raises(ProtocolError, match=f"^message of {huge} bytes exceeds the limit of {DEFAULT_MAX_MESSAGE_SIZE} bytes$"):
        p.feed(frame(length=huge)[:10])
    with pytest.raises(ValueError):
        codec.FrameParser(False, max_message_size=-1)


@pytest.mark.parametrize("length", [2**31, 2**32, 2**63 - 1])
def test_large_64bit_lengths_hit_the_limit(codec, length):
    # No C integer overflow: the announced length is compared as a whole.
    p = codec.FrameParser(False, max_message_size=2**31 - 1)
    with pytest.raises(ProtocolError, match=f"^message of {length} bytes exceeds the limit of {2**31 - 1} bytes$"):
        p.feed(frame(length=length))


def test_large_limit_does_not_wrap(codec):
    # With a limit above 2**32 a 2**32 + 5 byte announcement is merely pending.
    p = codec.FrameParser(False, max_message_size=2**40)
    assert p.max_message_size == 2**40
    assert p.feed(frame(length=2**32 + 5) + b"partial") == []
    assert p.failed is False


# ---------------------------------------------------------------- violations

VIOLATIONS = [
    ("rsv1", True, frame(b"x", rsv=0x40, key=KEY), "reserved bits set in frame header"),
    ("rsv2", True, frame(b"x", rsv=0x20, key=KEY), "reserved bits set in frame header"),
    ("rsv3", False, frame(b"x", rsv=0x10), "reserved bits set in frame header"),
    ("rsv-on-ping", False, frame(b"x", PING, rsv=0x70), "reserved bits set in frame header"),
    *[(f"opcode-{op:x}", False, frame(b"x", op), f"reserved opcode 0x{op:x}")
      for op in (3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF)],
    ("unmasked-client", True, frame(b"x"), "unmasked client frame"),
    ("unmasked-client-ping", True, frame(b"", PING), "unmasked client frame"),
    ("masked-server", False, frame(b"x", key=KEY), "masked server frame"),
    ("masked-server-close", False, frame(b"", CLOSE, key=KEY), "masked server frame"),
    ("oversized-ping", False, frame(b"p" * 126, PING), "oversized control frame"),
    ("oversized-close-64", True, frame(b"p" * 70000, CLOSE, key=KEY), "oversized control frame"),
    ("fragmented-ping", False, frame(b"p", PING, fin=False), "fragmented control frame"),
    ("fragmented-pong", True, frame(b"", PONG, fin=False, key=KEY), "fragmented control frame"),
    ("stray-continuation", False, frame(b"x", CONT), "stray continuation frame"),
    ("stray-continuation-after-message", False, frame(b"a") + frame(b"x", CONT, fin=False),
     "stray continuation frame"),
    ("new-binary-in-fragments", False, frame(b"a", fin=False) + frame(b"b"),
     "new data frame inside a fragmented message"),
    ("new-text-in-fragments", True, frame(b"a", fin=False, key=KEY) + frame(b"b", TEXT, fin=False, key=KEY),
     "new data frame inside a fragmented message"),
    ("length-2^63", False, frame(length=2**63), f"invalid 64-bit frame length {2**63}"),
    ("length-2^64-1", True, frame(length=2**64 - 1, key=KEY), f"invalid 64-bit frame length {2**64 - 1}"),
]


@pytest.mark.parametrize("name,server,data,text", VIOLATIONS, ids=[v[0] for v in VIOLATIONS])
def test_violation(codec, name, server, data, text):
    p = codec.FrameParser(server)
    with pytest.raises(ProtocolError, match=f"^{re.escape(text)}$"):
        p.feed(data)
    assert p.failed is True
    # The parser stays failed, whatever comes next and however it comes.
    for more in (b"", E1_SERVER_FRAME, E1_CLIENT_FRAME):
        with pytest.raises(ProtocolError, match=f"^parser failed earlier: {re.escape(text)}$"):
            p.feed(more)
    with pytest.raises(ProtocolError, match="^parser failed earlier"):
        buf = p.get_buffer(-1)
        buf[:2] = b"\x82\x00"
        p.buffer_updated(2)
    assert p.failed is True


@pytest.mark.parametrize("name,server,data,text", VIOLATIONS, ids=[v[0] for v in VIOLATIONS])
def test_violation_byte_by_byte(codec, name, server, data, text):
    # Same verdict when the bytes trickle in, after a valid frame.
    p = codec.FrameParser(server)
    good = E1_CLIENT_FRAME if server else E1_SERVER_FRAME
    events = []
    with pytest.raises(ProtocolError, match=f"^{re.escape(text)}$"):
        for b in good + data:
            events += p.feed(bytes([b]))
    assert events[0] == (BINARY, E1)


def test_violation_detected_on_first_two_bytes(codec):
    # Header rules are checked as soon as the two fixed bytes are in.
    for server, data, text in [(False, b"\xc2", "reserved bits"), (False, b"\x83", "reserved opcode"),
                               (True, b"\x82", "unmasked client frame"), (False, b"\x09", "fragmented control")]:
        p = codec.FrameParser(server)
        assert p.feed(data) == []
        with pytest.raises(ProtocolError, match=text):
            p.feed(b"\x01")


def test_failed_property_starts_false(codec):
    assert codec.FrameParser(True).failed is False
    assert codec.FrameParser(False).server is False
    assert codec.FrameParser(server=True).server is True


# ---------------------------------------------------------------- chunking


def _mixed_stream(server: bool, seed: int, count: int, big: bool) -> tuple[bytes, list]:
    rng = random.Random(seed)
    out = bytearray()
    events: list = []
    for _ in range(count):
        key = (lambda: rng.randbytes(4)) if server else (lambda: None)
        size = rng.choice([0, 1, 3, 125, 126, 127, 500, 4096] + ([65535, 65536, 100_000] if big else []))
        payload = rng.randbytes(size)
        r = rng.random()
        if r < 0.55:
            out += frame(payload, BINARY, key=key())
            events.append((BINARY, payload))
        elif r < 0.65:
            op = rng.choice([PING, PONG, CLOSE])
            out += frame(payload[:125], op, key=key())
            events.append((op, payload[:125]))
        elif r < 0.75:
            out += frame(payload, TEXT, key=key())
            events.append((TEXT, payload))
        else:
            op = rng.choice([BINARY, TEXT])
            parts = [payload[j:j + 97] for j in range(0, len(payload), 97)] or [b""]
            for j, part in enumerate(parts):
                out += frame(part, op if j == 0 else CONT, fin=j == len(parts) - 1, key=key())
                if j < len(parts) - 1 and rng.random() < 0.3:
                    out += frame(b"ctl%d" % j, PING, key=key())
                    events.append((PING, b"ctl%d" % j))
            events.append((op, payload))
    return bytes(out), events


def _feed_in_chunks(p, data: bytes, sizes) -> list:
    events = []
    pos = 0
    for n in sizes:
        if pos >= len(data):
            break
        events += p.feed(data[pos:pos + n])
        pos += n
    if pos < len(data):
        events += p.feed(data[pos:])
    return events


def _feed_via_buffer(p, data: bytes, rng: random.Random) -> list:
    events = []
    pos = 0
    while pos < len(data):
        buf = p.get_buffer(rng.choice([-1, 0, 1, 1000, 65536]))
        assert len(buf) > 0 and not buf.readonly
        n = min(len(buf), len(data) - pos, rng.choice([1, 2, 7, 100, 5000, 1 << 30]))
        buf[:n] = data[pos:pos + n]
        events += p.buffer_updated(n)
        pos += n
    return events


@pytest.mark.parametrize("server", [True, False], ids=["server", "client"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_chunking_gives_identical_events(codec, server, seed):
    data, expected = _mixed_stream(server, seed, 120, big=True)
    assert codec.FrameParser(server).feed(data) == expected
    rng = random.Random(seed)
    for _ in range(3):
        sizes = iter(lambda: rng.choice([1, 2, 3, 9, 10, 14, 100, 4096, 70000]), None)
        assert _feed_in_chunks(codec.FrameParser(server), data, sizes) == expected
    assert _feed_in_chunks(codec.FrameParser(server), memoryview(data), iter(lambda: 65536, None)) == expected
    assert _feed_via_buffer(codec.FrameParser(server), data, rng) == expected


@pytest.mark.parametrize("server", [True, False], ids=["server", "client"])
def test_byte_by_byte(codec, server):
    data, expected = _mixed_stream(server, 7, 60, big=False)
    p = codec.FrameParser(server)
    events = []
    for i in range(len(data)):
        events += p.feed(data[i:i + 1])
    assert events == expected
    p = codec.FrameParser(server)
    events = []
    for b in data:
        buf = p.get_buffer(1)
        buf[0] = b
        events += p.buffer_updated(1)
    assert events == expected
    p = codec.FrameParser(server)
    assert _feed_in_chunks(p, bytearray(data), iter(lambda: 2, None)) == expected


def test_buffer_updated_bounds(codec):
    p = codec.FrameParser(False)
    buf = p.get_buffer(-1)
    with pytest.raises(ValueError):
        p.buffer_updated(len(buf) + 1)
    with pytest.raises(ValueError):
        p.buffer_updated(-1)
    assert p.buffer_updated(0) == []
    assert p.failed is False
