"""Cross-twin properties (STYLE.md "Tests in both modes" (b)): random messages
encode byte-identically in both twins and each decodes the other's output;
random and mutated inputs give the same result, or the same exception type
and message, in both twins.

``codec_pair`` is (pure, compiled) when the compiled twin is built, and
(pure, pure) otherwise, so the same properties still run as a sanity check of
the pure twin (round trips, error discipline) instead of being skipped.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from grid.errors import ProtocolError

from _helpers import run_parser
from _vectors import E5, HANDSHAKES, VECTORS

# The fixtures are plain module pairs, so reusing them across examples is safe.
_HC = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=_HC)
FAST = settings(max_examples=80, deadline=None, suppress_health_check=_HC)

BOUNDARIES = [0, 1, 127, 128, 255, 256, 65535, 65536, 2**31, 2**32 - 1, 2**32, 2**63, 2**64 - 1]


def uint(top: int) -> st.SearchStrategy[int]:
    return st.one_of(st.sampled_from([b for b in BOUNDARIES if b <= top]), st.integers(0, top))


@st.composite
def message_args(draw, max_payload: int = 400) -> tuple:
    flags = draw(uint(255))
    payload = draw(st.one_of(st.none(), st.binary(max_size=max_payload)))
    subroute = draw(st.binary(min_size=32, max_size=32)) if flags & 0x20 else None
    return (draw(uint(2**64 - 1)), draw(uint(2**32 - 1)), draw(uint(2**32 - 1)),
            draw(uint(255)), draw(uint(255)), flags, payload, subroute)


def fields(m) -> tuple:
    return (m.mux_id, m.seq, m.deadline_ms, m.handler, m.op, m.flags, m.payload, m.subroute)


def outcome(fn, *args):
    """The result of ``fn(*args)`` in a form comparable across twins.
    Only ProtocolError may escape a decoder; anything else fails the test."""
    try:
        result = fn(*args)
    except ProtocolError as exc:
        return ("ProtocolError", str(exc))
    if isinstance(result, list):
        return ("ok", [fields(m) for m in result])
    return ("ok", fields(result))


def expected_fields(args: tuple) -> tuple:
    payload = args[6]
    if not payload and not args[5] & 0x10:
        payload = None
    elif payload is None:
        payload = b""
    return (*args[:6], payload, args[7])


# ---------------------------------------------------------------- encoding


@SETTINGS
@given(args=message_args())
def test_encode_identical_and_cross_decode(codec_pair, args):
    py, cy = codec_pair
    wire = py.encode_message(*args)
    assert cy.encode_message(*args) == wire
    assert cy.Message(*args).encode() == wire
    want = expected_fields(args)
    assert fields(py.decode_message(wire)) == want
    assert fields(cy.decode_message(wire)) == want
    if args[4] != 17:  # a container would be expanded
        assert [fields(m) for m in cy.decode_messages(bytearray(wire))] == [want]


@FAST
@given(batch=st.lists(message_args(max_payload=100), max_size=12))
def test_merged_identical(codec_pair, batch):
    py, cy = codec_pair
    inner = [py.encode_message(*a) for a in batch]
    container = py.encode_merged(inner)
    assert cy.encode_merged(inner) == container
    want = [expected_fields(a) for a in batch]
    assert [fields(m) for m in py.iter_merged(container)] == want
    assert [fields(m) for m in cy.iter_merged(container)] == want
    assert [fields(m) for m in cy.decode_messages(memoryview(container))] == want


@FAST
@given(sizes=st.lists(st.integers(0, 9000), max_size=70), max_messages=st.integers(0, 60),
       max_bytes=st.integers(0, 40000))
def test_batches_identical_and_framed_as_encode_frames(codec_pair, sizes, max_messages, max_bytes):
    # encode_batches is what encode_frames frames: the same batching in both
    # twins, and each twin's frames are its batches framed one by one.
    py, cy = codec_pair
    msgs = [py.encode_message(i, 0, 0, 1, 3, 0, bytes(n)) for i, n in enumerate(sizes)]
    batches = py.encode_batches(msgs, max_messages, max_bytes)
    assert cy.encode_batches(msgs, max_messages, max_bytes) == batches
    # Every message, once and in order.
    assert [m.mux_id for b in batches for m in py.decode_messages(b)] == list(range(len(sizes)))
    for codec in (py, cy):
        framed = b"".join(codec.encode_frame(b, 2, None) for b in batches)
        assert codec.encode_frames(msgs, None, max_messages, max_bytes) == framed


@FAST
@given(size=st.sampled_from([0, 1, 125, 126, 127, 65535, 65536, 70001]) | st.integers(0, 300),
       seed=st.integers(0, 2**32), opcode=st.integers(0, 15),
       key=st.one_of(st.none(), st.binary(min_size=4, max_size=4)), fin=st.booleans())
def test_frames_identical(codec_pair, size, seed, opcode, key, fin):
    py, cy = codec_pair
    payload = random.Random(seed).randbytes(size)
    f = py.encode_frame(payload, opcode, key, fin)
    assert cy.encode_frame(payload, opcode, key, fin) == f
    if key is not None:
        assert cy.apply_mask(payload, key) == py.apply_mask(payload, key)


@FAST
@given(data=st.binary(max_size=2000), local=st.text(max_size=40), remote=st.text(max_size=40),
       handler=st.integers(0, 255))
def test_hashes_identical(codec_pair, data, local, remote, handler):
    py, cy = codec_pair
    assert cy.xxh3_64(data) == py.xxh3_64(data)
    assert cy.crc32(data) == py.crc32(data) == py.xxh3_64(data) & 0xFFFFFFFF
    assert cy.subroute_id(local, handler) == py.subroute_id(local, handler)
    assert cy.local_dials(local, remote) == py.local_dials(local, remote)
    if local != remote:
        assert py.local_dials(local, remote) != py.local_dials(remote, local)


# ---------------------------------------------------------------- mutated and random input


def mutate(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        kind = rng.randrange(6)
        if kind == 0 and b:  # bit flip
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        elif kind == 1:  # truncation
            del b[rng.randint(0, len(b)):]
        elif kind == 2:  # insertion
            i = rng.randint(0, len(b))
            b[i:i] = rng.randbytes(rng.randint(1, 8))
        elif kind == 3 and b:  # deletion
            i = rng.randrange(len(b))
            del b[i:i + rng.randint(1, 8)]
        elif kind == 4 and b:  # interesting byte
            b[rng.randrange(len(b))] = rng.choice([0x00, 0x7F, 0x80, 0xC0, 0xC4, 0xCC, 0xCD, 0xCE, 0xCF,
                                                    0xD0, 0xD3, 0xDC, 0xDD, 0xFF, 0x97, 0x11, 0x21])
        elif kind == 5 and b:  # duplicate a slice
            i = rng.randrange(len(b))
            b[i:i] = b[i:i + rng.randint(1, 16)]
    return bytes(b)


@st.composite
def wire_inputs(draw) -> bytes:
    """Valid messages and containers, then mutated; or raw random bytes."""
    from grid import _codec_py as py

    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(st.binary(max_size=200))
    if kind == 1:
        data = py.encode_message(*draw(message_args(max_payload=60)))
    else:
        batch = draw(st.lists(message_args(max_payload=30), max_size=5))
        data = py.encode_merged([py.encode_message(*a) for a in batch])
    rng = random.Random(draw(st.integers(0, 2**32)))
    return mutate(data, rng) if kind != 3 or draw(st.booleans()) else data


@SETTINGS
@given(data=wire_inputs())
def test_decoders_agree_on_any_input(codec_pair, data):
    py, cy = codec_pair
    for name in ("decode_message", "decode_messages", "iter_merged"):
        a = outcome(getattr(py, name), data)
        b = outcome(getattr(cy, name), data)
        assert a == b, name
        c = outcome(getattr(cy, name), memoryview(data))
        assert c == a, name
        event(f"{name}: {a[0] if a[0] == 'ok' else a[1].split(':')[0].split(' 0x')[0]}")
    # A successful decode re-encodes to something that decodes the same.
    ok, got = outcome(py.decode_message, data)
    if ok == "ok":
        again = cy.encode_message(*got)
        assert fields(py.decode_message(again)) == got


def frame_stream(draw, server: bool) -> bytes:
    """A valid stream as the peer would send it: data messages in 1-3
    fragments, control frames in between and inside them."""
    from grid import _codec_py as py

    def key():
        return draw(st.binary(min_size=4, max_size=4)) if server else None

    def control():
        return py.encode_frame(bytes(draw(st.sampled_from([0, 2, 125]))), draw(st.sampled_from([8, 9, 10])), key())

    out = bytearray()
    for _ in range(draw(st.integers(0, 5))):
        if draw(st.integers(0, 3)) == 0:
            out += control()
            continue
        size = draw(st.sampled_from([0, 1, 5, 125, 126, 130, 300, 65536]))
        nparts = draw(st.integers(1, 3))
        for i in range(nparts):
            op = draw(st.sampled_from([1, 2])) if i == 0 else 0
            out += py.encode_frame(bytes(size // nparts), op, key(), i == nparts - 1)
            if i < nparts - 1 and draw(st.booleans()):
                out += control()
    return bytes(out)


@st.composite
def parser_inputs(draw) -> tuple:
    server = draw(st.booleans())
    kind = draw(st.integers(0, 2))
    if kind == 0:
        data = draw(st.binary(max_size=300))
    else:
        data = frame_stream(draw, server)
        if kind == 2:
            data = mutate(data, random.Random(draw(st.integers(0, 2**32))))
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=6)))
    max_size = draw(st.sampled_from([None, 0, 10, 200, 65536]))
    return server, data, cuts, max_size


@settings(max_examples=300, deadline=None, suppress_health_check=_HC)
@given(case=parser_inputs())
def test_frame_parsers_agree_on_any_input(codec_pair, case):
    py, cy = codec_pair
    server, data, cuts, max_size = case
    a = run_parser(py, server, data, cuts, max_size)
    b = run_parser(cy, server, data, cuts, max_size)
    assert a == b
    event(next((x[1][:24] for x in a if x[0] == "ProtocolError"), "no error"))
    if a[-1][0] == "after":
        assert a[-1][1].startswith("parser failed earlier: ")
    # Split points change neither the verdict nor, without an error, the events.
    whole = run_parser(py, server, data, [], max_size)
    errors = [x for x in a if x[0] == "ProtocolError"]
    assert errors == [x for x in whole if x[0] == "ProtocolError"]
    if not errors:
        assert [e for kind, evs in a[:-1] for e in evs] == whole[0][1]


def test_pair_is_reported(codec_pair):
    # Makes the pairing visible in -v output and guards the fixture itself.
    py, cy = codec_pair
    assert py.__name__ == "grid._codec_py"
    assert cy.__name__ in ("grid._codec", "grid._codec_py")


@pytest.mark.parametrize("seed", range(4))
def test_mutated_vectors_agree(codec_pair, seed):
    # A deterministic sweep over mutations of the spec vectors.
    py, cy = codec_pair
    rng = random.Random(seed)
    corpus = [v[1] for v in VECTORS] + [E5] + [h[1] for h in HANDSHAKES]
    for _ in range(600):
        data = mutate(rng.choice(corpus), rng)
        for name in ("decode_message", "decode_messages", "iter_merged"):
            assert outcome(getattr(py, name), data) == outcome(getattr(cy, name), data), (name, data.hex())
