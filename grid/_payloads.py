"""The small msgp structs the grid package itself exchanges (docs/protocol.md
§3.3, §5): handshake request and response, connection ping and pong, and the
mux connect error.  None of these is on the per-request hot path.

msgp writes them as maps keyed by the Go field names, in declaration order;
readers accept keys in any order (as str or bin), skip unknown keys and leave
missing ones at their zero value.  Times are msgp's (grid._msgptime), held as
nanoseconds since the Unix epoch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import msgpack

from grid._msgptime import time_ext_ns, time_parts
from grid.errors import ProtocolError

# Go's zero time.Time: 0001-01-01 00:00:00 UTC.
GO_ZERO_TIME_NS = -62135596800 * 1_000_000_000


def _unpack_map(payload: bytes | None, what: str) -> dict[str, Any]:
    if not payload:
        return {}
    try:
        obj = msgpack.unpackb(payload, raw=False, strict_map_key=False, timestamp=0)
    except Exception as exc:  # msgpack raises a zoo of types on bad input
        raise ProtocolError(f"error parsing {what}: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"error parsing {what}: want a map, got {type(obj).__name__}")
    out: dict[str, Any] = {}
    for k, v in obj.items():
        if isinstance(k, bytes):
            k = k.decode("utf-8", "replace")
        if isinstance(k, str):
            out[k] = v
    return out


def _str(d: dict[str, Any], key: str, what: str) -> str:
    v = d.get(key, "")
    if v is None:
        return ""
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if not isinstance(v, str):
        raise ProtocolError(f"error parsing {what}: {key} is {type(v).__name__}, want str")
    return v


def _time(d: dict[str, Any], key: str, what: str) -> int:
    v = d.get(key)
    if v is None:
        return GO_ZERO_TIME_NS
    parts = time_parts(v)
    if parts is None:
        raise ProtocolError(f"error parsing {what}: {key} is not a time")
    return parts[0] * 1_000_000_000 + parts[1]


def _bool(d: dict[str, Any], key: str, what: str) -> bool:
    v = d.get(key, False)
    if v is None:
        return False
    if not isinstance(v, bool):
        raise ProtocolError(f"error parsing {what}: {key} is {type(v).__name__}, want bool")
    return v


def _pack(obj: dict[str, Any]) -> bytes:
    out: bytes = msgpack.packb(obj, use_bin_type=True)
    return out


@dataclass
class ConnectRequest:
    """connectReq (§5.1): the dialer's first message."""

    instance_id: bytes
    host: str
    time_ns: int
    token: str

    def encode(self) -> bytes:
        return _pack({"ID": self.instance_id, "Host": self.host,
                      "Time": time_ext_ns(self.time_ns), "Token": self.token})

    @classmethod
    def decode(cls, payload: bytes | None) -> ConnectRequest:
        what = "connectReq"
        d = _unpack_map(payload, what)
        ident = d.get("ID", b"\0" * 16)
        if not isinstance(ident, bytes) or len(ident) != 16:
            raise ProtocolError(f"error parsing {what}: ID must be 16 bytes of bin")
        return cls(ident, _str(d, "Host", what), _time(d, "Time", what), _str(d, "Token", what))


@dataclass
class ConnectResponse:
    """connectResp (§5.2): the acceptor's answer."""

    instance_id: bytes
    accepted: bool
    rejected_reason: str = ""

    def encode(self) -> bytes:
        return _pack({"ID": self.instance_id, "Accepted": self.accepted,
                      "RejectedReason": self.rejected_reason})

    @classmethod
    def decode(cls, payload: bytes | None) -> ConnectResponse:
        what = "connectResp"
        d = _unpack_map(payload, what)
        ident = d.get("ID", b"\0" * 16)
        if not isinstance(ident, bytes) or len(ident) != 16:
            raise ProtocolError(f"error parsing {what}: ID must be 16 bytes of bin")
        return cls(ident, _bool(d, "Accepted", what), _str(d, "RejectedReason", what))


def encode_ping(time_ns: int) -> bytes:
    """pingMsg (§9): ``{"t": time}``."""
    return _pack({"t": time_ext_ns(time_ns)})


def decode_ping(payload: bytes | None) -> int:
    """Return the ping's time; an absent payload (older peers) gives Go's zero time."""
    return _time(_unpack_map(payload, "pingMsg"), "t", "pingMsg")


@dataclass
class Pong:
    """pongMsg (§3.3): not-found flag, error text and the echoed ping time."""

    not_found: bool = False
    error: str | None = None
    time_ns: int = GO_ZERO_TIME_NS

    def encode(self) -> bytes:
        return _pack({"nf": self.not_found, "e": self.error, "t": time_ext_ns(self.time_ns)})

    @classmethod
    def decode(cls, payload: bytes | None) -> Pong:
        what = "pongMsg"
        d = _unpack_map(payload, what)
        err = d.get("e")
        if isinstance(err, bytes):
            err = err.decode("utf-8", "replace")
        elif err is not None and not isinstance(err, str):
            err = str(err)
        return cls(_bool(d, "nf", what), err, _time(d, "t", what))


def encode_mux_connect_error(text: str) -> bytes:
    """muxConnectError (§3.3): ``{"Error": text}``."""
    return _pack({"Error": text})


def decode_mux_connect_error(payload: bytes | None) -> str:
    return _str(_unpack_map(payload, "muxConnectError"), "Error", "muxConnectError")


def now_ns() -> int:
    """Wall-clock time in nanoseconds since the Unix epoch."""
    return time.time_ns()
