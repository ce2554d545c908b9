"""msgp's time extension, the one way grid writes and reads a Go ``time.Time``.

msgp writes a time as extension type 5 holding 12 bytes: the seconds since
the Unix epoch as a big-endian int64, then the nanoseconds as a big-endian
uint32.  It also reads msgpack's standard timestamp (extension -1), which
msgpack-python unpacks as :class:`msgpack.Timestamp`.  The grid package's own
structs (:mod:`grid._payloads`) and the typed payload codec
(:mod:`grid._typecodec`) both go through these functions.
"""

from __future__ import annotations

import struct

import msgpack

__all__ = ["TIME_EXT", "time_ext", "time_ext_ns", "time_parts"]

#: msgp's extension type code for a time.
TIME_EXT = 5

_TIME = struct.Struct(">qI")


def time_ext(sec: int, nsec: int) -> msgpack.ExtType:
    """The time ``sec`` seconds and ``nsec`` (0 to 999,999,999) nanoseconds
    after the Unix epoch, as msgp's extension (msgpack packs it as is)."""
    return msgpack.ExtType(TIME_EXT, _TIME.pack(sec, nsec))


def time_ext_ns(ns: int) -> msgpack.ExtType:
    """:func:`time_ext` for a time in nanoseconds since the Unix epoch."""
    sec, nsec = divmod(ns, 1_000_000_000)
    return time_ext(sec, nsec)


def time_parts(v: object) -> tuple[int, int] | None:
    """``(seconds, nanoseconds)`` since the Unix epoch of a time as msgpack
    unpacked it (msgp's extension or msgpack's timestamp); None when ``v`` is
    not a time."""
    if isinstance(v, msgpack.ExtType):
        if v.code == TIME_EXT and len(v.data) == _TIME.size:
            sec, nsec = _TIME.unpack(v.data)
            return sec, nsec
        return None
    if isinstance(v, msgpack.Timestamp):
        return v.seconds, v.nanoseconds
    return None
