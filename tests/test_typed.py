"""Typed handlers and payload types, over loopback, in both modes."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import AsyncIterator

import msgpack
import pytest

import grid
from grid.testing import TestGrid
from grid.types import decode_payload, encode_payload
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

    BAD.register(m, bad, "disk", "1")

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
