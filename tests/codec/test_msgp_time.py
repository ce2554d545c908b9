"""msgp's time extension (grid._msgptime), as the package's own structs
(grid._payloads: ping, pong, connect request) and typed payloads
(``datetime.datetime`` fields) write and read it.

The expected bytes are fixed: they are what grid has always sent, and what
Go's msgp reads (extension 5: int64 seconds, uint32 nanoseconds, big-endian).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import struct
from typing import Optional

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grid import ProtocolError, _payloads
from grid._msgptime import TIME_EXT, time_ext, time_ext_ns, time_parts
from grid.types import decode_payload, encode_payload

UTC = dt.timezone.utc

# (nanoseconds since the epoch, the pingMsg grid encodes for it)
PINGS = [
    (0, "81a174c70c05000000000000000000000000"),
    (1, "81a174c70c05000000000000000000000001"),
    (1_700_000_000_123_456_789, "81a174c70c05000000006553f100075bcd15"),
    (-1, "81a174c70c05ffffffffffffffff3b9ac9ff"),
    (_payloads.GO_ZERO_TIME_NS, "81a174c70c05fffffff1886e090000000000"),
    (_payloads.GO_ZERO_TIME_NS - 5, "81a174c70c05fffffff1886e08ff3b9ac9fb"),
    (2**63 - 1, "81a174c70c050000000225c17d0432f2d7ff"),
]


@dataclasses.dataclass
class When:
    when: Optional[dt.datetime] = None


# (a datetime field's value, the payload of When(value), what decodes back)
DATETIMES = [
    (dt.datetime(2025, 1, 2, 3, 4, 5, 123456, tzinfo=UTC),
     "81a47768656ec70c050000000067760225075bca00",
     dt.datetime(2025, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)),
    (dt.datetime(1970, 1, 1),  # naive: taken as UTC
     "81a47768656ec70c05000000000000000000000000",
     dt.datetime(1970, 1, 1, tzinfo=UTC)),
    (dt.datetime(1, 1, 1, tzinfo=UTC),
     "81a47768656ec70c05fffffff1886e090000000000",
     dt.datetime(1, 1, 1, tzinfo=UTC)),
    (dt.datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
     "81a47768656ec70c05ffffffffffffffff3b9ac618",
     dt.datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
    (dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.timezone(dt.timedelta(hours=5))),
     "81a47768656ec70c050000003afff3fb2f3b9ac618",
     dt.datetime(9999, 12, 31, 18, 59, 59, 999999, tzinfo=UTC)),
    (None, "81a47768656ec0", None),
]


@pytest.mark.parametrize("ns,hexed", PINGS)
def test_ping_bytes_and_round_trip(ns: int, hexed: str) -> None:
    data = _payloads.encode_ping(ns)
    assert data.hex() == hexed
    assert _payloads.decode_ping(data) == ns
    # What msgpack itself makes of it: extension 5, seconds then nanoseconds.
    ext = msgpack.unpackb(data)["t"]
    assert ext == msgpack.ExtType(TIME_EXT, struct.pack(">qI", *divmod(ns, 1_000_000_000)))


def test_struct_bytes() -> None:
    req = _payloads.ConnectRequest(b"\x01" * 16, "h:1", 1_700_000_000_123_456_789, "tok")
    assert req.encode().hex() == (
        "84a24944c41001010101010101010101010101010101a4486f7374a3683a31a454696d65c70c05"
        "000000006553f100075bcd15a5546f6b656ea3746f6b")
    assert _payloads.ConnectRequest.decode(req.encode()) == req
    pong = _payloads.Pong(True, "e", 5)
    assert pong.encode().hex() == "83a26e66c3a165a165a174c70c05000000000000000000000005"
    assert _payloads.Pong.decode(pong.encode()) == pong


@pytest.mark.parametrize("value,hexed,back", DATETIMES)
def test_datetime_field_bytes_and_round_trip(value: dt.datetime | None, hexed: str,
                                             back: dt.datetime | None) -> None:
    data = encode_payload(When, When(value))
    assert data is not None and data.hex() == hexed
    assert decode_payload(When, data) == When(back)


def test_bare_datetime_payload() -> None:
    data = encode_payload(dt.datetime, dt.datetime(2025, 1, 2, tzinfo=UTC))
    assert data is not None and data.hex() == "c70c05000000006775d70000000000"
    assert decode_payload(dt.datetime, data) == dt.datetime(2025, 1, 2, tzinfo=UTC)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=-(2**63), max_value=2**63 - 1),
       st.integers(min_value=0, max_value=999_999_999))
def test_time_ext_matches_msgpack(sec: int, nsec: int) -> None:
    ext = time_ext(sec, nsec)
    packed = msgpack.packb(ext)
    # fixext is not used for 12 bytes: ext 8 (0xc7), length 12, type 5.
    assert packed[:3] == b"\xc7\x0c\x05" and packed[3:] == struct.pack(">qI", sec, nsec)
    assert time_parts(msgpack.unpackb(packed)) == (sec, nsec)
    assert time_ext_ns(sec * 1_000_000_000 + nsec) == ext


def test_msgpack_timestamp_is_read_as_a_time() -> None:
    # msgp also reads msgpack's own timestamp extension (-1).
    ts = msgpack.Timestamp(5, 7000)
    assert time_parts(msgpack.unpackb(msgpack.packb(ts))) == (5, 7000)
    ping = msgpack.packb({"t": ts})
    assert _payloads.decode_ping(ping) == 5_000_007_000
    assert decode_payload(When, msgpack.packb({"when": ts})) == When(
        dt.datetime(1970, 1, 1, 0, 0, 5, 7, tzinfo=UTC))


@pytest.mark.parametrize("bad", [msgpack.ExtType(5, b"\0" * 11), msgpack.ExtType(6, b"\0" * 12), 5,
                                 "2025-01-01", b"\0" * 12])
def test_what_is_not_a_time(bad: object) -> None:
    assert time_parts(bad) is None
    with pytest.raises(ProtocolError, match="t is not a time"):
        _payloads.decode_ping(msgpack.packb({"t": bad}))
    with pytest.raises(ProtocolError, match="want a time"):
        decode_payload(When, msgpack.packb({"when": bad}))


def test_out_of_range_time_decodes_as_the_earliest_datetime() -> None:
    far = msgpack.packb({"when": time_ext(2**62, 1)})
    assert decode_payload(When, far) == When(dt.datetime.min.replace(tzinfo=UTC))
