"""Typed handlers and payload types, over loopback, in both modes."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from collections.abc import AsyncIterator
from typing import ClassVar, Optional

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import grid
from grid.testing import TestGrid
from grid.types import converter, decode_payload, encode_payload, payload_codec
from support import run


@dataclasses.dataclass
class Point:
    X: int
    Y: int
    Label: str = ""
    Tags: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Packed:
    __grid_tuple__ = True
    A: int
    B: bytes


@dataclasses.dataclass
class Renamed:
    count: int = dataclasses.field(default=0, metadata={"msg": "Count"})
    when: dt.datetime | None = None
    inner: Point | None = None


def test_dataclass_is_a_msgp_map_in_declaration_order() -> None:
    raw = encode_payload(Point, Point(1, 2, "p", ["a"]))
    assert raw == msgpack.packb({"X": 1, "Y": 2, "Label": "p", "Tags": ["a"]})
    assert raw is not None and raw[0] == 0x84 and raw[1:3] == b"\xa1X"
    # Unknown keys are skipped, missing keys take defaults or zero values.
    odd = msgpack.packb({"Y": 5, "Zzz": [1, 2], b"Label": "bin key"})
    assert decode_payload(Point, odd) == Point(0, 5, "bin key", [])
    assert encode_payload(Packed, Packed(3, b"\x00")) == b"\x92\x03\xc4\x01\x00"
    assert decode_payload(Packed, b"\x92\x03\xc4\x01\x00") == Packed(3, b"\x00")
    with pytest.raises(grid.ProtocolError):
        decode_payload(Packed, b"\x91\x03")
    with pytest.raises(grid.ProtocolError):
        decode_payload(Point, msgpack.packb({"X": "not an int"}))
    with pytest.raises(grid.ProtocolError):
        decode_payload(Point, b"\xc1")
    when = dt.datetime(2025, 1, 2, 3, 4, 5, 123456, tzinfo=dt.timezone.utc)
    r = Renamed(7, when, Point(1, 1))
    raw = encode_payload(Renamed, r)
    assert raw is not None and b"\xa5Count" in raw
    assert b"\xc7\x0c\x05\x00\x00\x00\x00\x67\x76\x02\x25" in raw  # msgp time ext
    assert decode_payload(Renamed, raw) == r


def test_builtin_payload_types() -> None:
    assert encode_payload(grid.NoPayload, grid.NoPayload()) is None
    assert decode_payload(grid.NoPayload, None) == grid.NoPayload()
    mss = grid.MSS({"a": "b"})
    assert encode_payload(grid.MSS, mss) == b"\x81\xa1a\xa1b"
    assert decode_payload(grid.MSS, b"\x81\xa1a\xa1b") == mss
    assert encode_payload(grid.MSS, None) == b"\xc0"
    assert decode_payload(grid.MSS, b"\xc0") is None
    assert encode_payload(grid.Bytes, grid.Bytes(b"xy")) == b"\xc4\x02xy"
    uv = grid.URLValues({"k": ["1", "2"]})
    assert decode_payload(grid.URLValues, encode_payload(grid.URLValues, uv)) == uv
    arr = grid.ArrayOf[Point]
    pts = [Point(1, 2), Point(3, 4)]
    assert decode_payload(arr, encode_payload(arr, pts)) == pts
    js = grid.JSON[Point]
    raw = encode_payload(js, Point(1, 2))
    assert raw is not None and raw.startswith(b"\xc4") and raw.endswith(b"\n")
    assert decode_payload(js, raw) == Point(1, 2)


ADD = grid.SingleHandler(20, Point, Point)
BAD = grid.SingleHandler(21, Point, grid.MSS)
LIST = grid.StreamTypeHandler(22, payload_type=Point, response_type=Point, out_capacity=4)
ECHO = grid.StreamTypeHandler(23, request_type=Point, response_type=Point, in_capacity=2,
                              out_capacity=2)


def setup(m: grid.Manager) -> None:
    ADD.register(m, lambda p: Point(p.X + p.Y, p.Y, p.Label.upper(), p.Tags + ["seen"]))

    async def bad(p: Point) -> grid.MSS:
        raise grid.RemoteError(f"no {p.Label}")

    BAD.register(m, bad, subroute="disk/1")

    async def listing(ctx: grid.StreamContext, p: Point, inbound: None,
                      out: grid.TypedStreamOut[Point]) -> None:
        for i in range(p.X):
            await out.send(Point(i, p.Y))

    async def echo(ctx: grid.StreamContext, p: grid.NoPayload, inbound: AsyncIterator[Point],
                   out: grid.TypedStreamOut[Point]) -> None:
        async for q in inbound:
            await out.send(dataclasses.replace(q, Label="echo"))

    LIST.register(m, listing)
    ECHO.register(m, echo)


def test_typed_calls_and_streams(loop_kind: str) -> None:
    async def main() -> None:
        async with TestGrid(2, setup=setup) as g:
            c = g.conn(0, 1)
            assert await ADD.call(c, Point(2, 3, "a", ["t"])) == Point(5, 3, "A", ["t", "seen"])
            with pytest.raises(grid.RemoteError, match="no x"):
                await BAD.call(c.subroute("disk", "1"), Point(0, 0, "x"))
            # A request the callee cannot decode comes back as a RemoteError.
            with pytest.raises(grid.RemoteError, match="msgp"):
                await c.request(20, b"\xc1")
            s = await LIST.call(c, Point(5, 9))
            assert [p async for p in s] == [Point(i, 9) for i in range(5)]
            s2 = await ECHO.call(c)
            for i in range(3):
                await s2.send(Point(i, i))
            await s2.close_send()
            got: list[Point] = []
            await s2.results(got.append)
            assert got == [Point(i, i, "echo") for i in range(3)]
    run(loop_kind, main)


# ---------------------------------------------------------------- the generated codecs
# Each dataclass gets an encoder and a decoder compiled once (grid._typecodec); a
# payload of the common shape (exactly the declared str keys) takes the
# generated fast path, anything else the general one.  Both must agree with
# each other and with msgp's rules.

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@dataclasses.dataclass
class Mixed:
    Name: str
    Count: int
    Ratio: float = 0.0
    On: bool = False
    Blob: bytes = b""
    Tags: list[str] = dataclasses.field(default_factory=list)
    Nums: Optional[list[int]] = None
    Maybe: Optional[str] = None
    Meta: dict[str, int] = dataclasses.field(default_factory=dict)
    Inner: Optional[Point] = None
    Any_: object = dataclasses.field(default=None, metadata={"msg": "any ✓ \"quoted\""})


def _wire(m: Mixed) -> dict[str, object]:
    """What msgp writes for ``m``: every field, in declaration order."""
    inner = None if m.Inner is None else {"X": m.Inner.X, "Y": m.Inner.Y, "Label": m.Inner.Label,
                                          "Tags": m.Inner.Tags}
    return {"Name": m.Name, "Count": m.Count, "Ratio": m.Ratio, "On": m.On, "Blob": m.Blob,
            "Tags": m.Tags, "Nums": m.Nums, "Maybe": m.Maybe, "Meta": m.Meta, "Inner": inner,
            "any ✓ \"quoted\"": m.Any_}


text = st.text(max_size=12)
mixed = st.builds(
    Mixed, Name=text, Count=st.integers(-2**63, 2**64 - 1), Ratio=st.floats(allow_nan=False),
    On=st.booleans(), Blob=st.binary(max_size=8), Tags=st.lists(text, max_size=4),
    Nums=st.one_of(st.none(), st.lists(st.integers(-5, 5), max_size=4)),
    Maybe=st.one_of(st.none(), text), Meta=st.dictionaries(text, st.integers(0, 9), max_size=3),
    Inner=st.one_of(st.none(), st.builds(Point, st.integers(0, 9), st.integers(0, 9), text,
                                         st.lists(text, max_size=2))),
    Any_=st.one_of(st.none(), st.integers(0, 9), text))


@FAST
@given(m=mixed)
def test_generated_codec_matches_msgp_and_the_general_path(m: Mixed) -> None:
    raw = encode_payload(Mixed, m)
    assert raw == msgpack.packb(_wire(m))  # map keyed by wire name, declaration order
    assert decode_payload(Mixed, raw) == m  # the fast path
    w = _wire(m)
    # The same content off the common shape: an unknown key, reversed key
    # order, bin keys, a missing key with its default: the general path.
    assert decode_payload(Mixed, msgpack.packb({**w, "Unknown": [1, {"x": 2}]})) == m
    assert decode_payload(Mixed, msgpack.packb(dict(reversed(w.items())))) == m
    bin_keys = {k.encode(): v for k, v in w.items()}
    assert decode_payload(Mixed, msgpack.packb(bin_keys, use_bin_type=True)) == m
    if m.Tags == []:
        del w["Tags"]
        assert decode_payload(Mixed, msgpack.packb(w)) == m


def test_fast_path_converts_and_checks_like_msgp() -> None:
    base = _wire(Mixed("n", 1))

    def dec(**over: object) -> Mixed:
        return decode_payload(Mixed, msgpack.packb({**base, **over}, use_bin_type=True))  # type: ignore[no-any-return]

    # Values msgpack hands over in another shape are converted, as msgp would.
    got = dec(Name=b"bin name", Ratio=3, Blob="str blob", Tags=[b"a", "b"], Nums=[1, 2],
              Maybe=b"m", Inner={"X": 4, "Extra": 1})
    assert (got.Name, got.Ratio, got.Blob, got.Tags, got.Maybe) == ("bin name", 3.0, b"str blob",
                                                                     ["a", "b"], "m")
    assert type(got.Ratio) is float and got.Inner == Point(4, 0)
    assert dec(Tags=None).Tags is None and dec(Maybe=None).Maybe is None
    # The wrong type is a ProtocolError naming it, on either path.
    for over in ({"Count": "1"}, {"Count": True}, {"On": 1}, {"Tags": ["a", 1]}, {"Tags": "a"},
                 {"Nums": [1, "x"]}, {"Meta": [1]}, {"Inner": 5}, {"Ratio": "x"}):
        with pytest.raises(grid.ProtocolError):
            dec(**over)
        with pytest.raises(grid.ProtocolError):
            dec(**over, Unknown=0)
    for bad in (msgpack.packb([1, 2]), msgpack.packb("x"), b"\x81", b"\x80\x00"):
        with pytest.raises(grid.ProtocolError):
            decode_payload(Mixed, bad)
    assert decode_payload(Mixed, None) is None and decode_payload(Mixed, b"\xc0") is None
    assert encode_payload(Mixed, None) == b"\xc0"


@dataclasses.dataclass(frozen=True)
class Frozen:
    A: int
    B: str = "b"


@dataclasses.dataclass
class Checked:
    A: int
    seen: ClassVar[list[int]] = []

    def __post_init__(self) -> None:
        if self.A < 0:
            raise ValueError("A must not be negative")
        Checked.seen.append(self.A)


@dataclasses.dataclass(slots=True)
class Slotted:
    A: int
    B: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(kw_only=True)
class KwOnly:
    A: int
    B: str = ""


@dataclasses.dataclass
class Empty:
    pass


@dataclasses.dataclass
class EmptyTuple:
    __grid_tuple__ = True


@dataclasses.dataclass
class One:
    __grid_tuple__ = True
    A: str


@dataclasses.dataclass
class Node:
    Name: str
    Kids: list[Node] = dataclasses.field(default_factory=list)
    Up: Optional[Node] = None


def test_dataclass_variants() -> None:
    for tp, value, wire in [
        (Frozen, Frozen(1, "x"), {"A": 1, "B": "x"}),
        (Slotted, Slotted(2, ["s"]), {"A": 2, "B": ["s"]}),
        (KwOnly, KwOnly(A=3, B="k"), {"A": 3, "B": "k"}),
        (Empty, Empty(), {}),
        (EmptyTuple, EmptyTuple(), []),
        (One, One("o"), ["o"]),
        (Node, Node("r", [Node("a"), Node("b", [Node("c")])], Node("u")),
         {"Name": "r", "Kids": [{"Name": "a", "Kids": [], "Up": None},
                                {"Name": "b", "Kids": [{"Name": "c", "Kids": [], "Up": None}],
                                 "Up": None}],
          "Up": {"Name": "u", "Kids": [], "Up": None}}),
    ]:
        raw = encode_payload(tp, value)
        assert raw == msgpack.packb(wire), tp
        assert decode_payload(tp, raw) == value, tp
        if isinstance(wire, dict):  # the general path too
            assert decode_payload(tp, msgpack.packb({**wire, "Zz": 0})) == value, tp
    assert decode_payload(Frozen, msgpack.packb({"B": "y"})) == Frozen(0, "y")
    # __post_init__ runs on decode, and what it raises is a ProtocolError.
    Checked.seen.clear()
    assert decode_payload(Checked, msgpack.packb({"A": 5})) == Checked(5)
    assert Checked.seen == [5, 5]
    with pytest.raises(grid.ProtocolError, match="negative"):
        decode_payload(Checked, msgpack.packb({"A": -1}))
    with pytest.raises(grid.ProtocolError, match="want 1 elements"):
        decode_payload(One, msgpack.packb(["a", "b"]))
    with pytest.raises(grid.ProtocolError):
        decode_payload(One, msgpack.packb([1]))


def test_codecs_are_built_once_and_shared() -> None:
    enc, dec = payload_codec(Point)
    assert payload_codec(Point) == (enc, dec)
    assert converter(Point) is converter(Point)
    p = Point(1, 2, "x", ["t"])
    assert enc(p) == encode_payload(Point, p) and dec(enc(p)) == p
    assert payload_codec(grid.NoPayload)[0](grid.NoPayload()) is None
    with pytest.raises(TypeError):
        payload_codec(set[int])
    with pytest.raises(TypeError):
        grid.SingleHandler(30, Point, complex)
    # The handler follows its types if they are reassigned.
    h = grid.SingleHandler(30, Point, Point)
    h.response_type = grid.MSS
    assert h._dec_resp(b"\x81\xa1a\xa1b") == grid.MSS({"a": "b"})


def test_encoding_from_many_threads() -> None:
    # One reusable Packer per thread: threads never share a buffer.
    values = [Mixed(f"n{i}", i, Tags=["t"] * (i % 5), Meta={"k": i}) for i in range(40)]
    want = [msgpack.packb(_wire(v)) for v in values]
    errors: list[str] = []

    def work() -> None:
        for _ in range(200):
            for v, w in zip(values, want):
                if encode_payload(Mixed, v) != w:
                    errors.append(v.Name)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
