"""Pure-Python twin of :mod:`grid._codec`: grid envelopes, merged containers,
WebSocket framing, XXH3 CRC, subroute ids and the dial rule.

No asyncio and no sockets: everything here works on byte strings, so the
Cython twin (``_codec.pyx``) can be checked against it byte for byte.  Section
numbers refer to GRID-PROTOCOL.md.
"""

from __future__ import annotations

import hashlib
import operator
import os
import struct
from collections.abc import Sequence
from typing import Any, Union, cast

from xxhash import xxh3_64 as _xxh3_hasher
from xxhash import xxh3_64_intdigest

from grid._consts import (
    DEFAULT_MAX_MESSAGE_SIZE,
    MERGE_MAX_BYTES,
    MERGE_MAX_MESSAGES,
    FLAG_CRC,
    FLAG_PAYLOAD_IS_ZERO,
    FLAG_SUBROUTE,
    Op,
    WS_BINARY,
    WS_CONTINUATION,
)
from grid.errors import ProtocolError

__all__ = [
    "Message",
    "encode_message",
    "decode_message",
    "decode_messages",
    "encode_merged",
    "encode_frames",
    "encode_batches",
    "encode_message_frame",
    "iter_merged",
    "encode_frame",
    "apply_mask",
    "FrameParser",
    "SplitFrame",
    "LARGE_FRAME",
    "crc32",
    "xxh3_64",
    "subroute_id",
    "local_dials",
]

Buffer = Union[bytes, bytearray, memoryview]

#: Where message CRCs come from: always the xxhash package here; the compiled
#: twin says "xxh3-inline" when its build compiled in the system's xxHash header.
CRC_BACKEND = "xxhash-package"

_OP_MERGED = int(Op.MERGED)
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_I8 = struct.Struct(">b")
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")
_CRC = struct.Struct("<I")

# Field widths of the 7-tuple, in order (§2.1): MuxID, Seq, DeadlineMS,
# Handler, Op, Flags.
_FIELD_NAMES = ("MuxID", "Seq", "DeadlineMS", "Handler", "Op", "Flags")
_FIELD_MAX = (2**64 - 1, 2**32 - 1, 2**32 - 1, 255, 255, 255)
_MAX_PAYLOAD = 2**32 - 1
_index = operator.index

#: Payload size from which :class:`FrameParser` receives an unfragmented data
#: frame straight into its final buffer, as the bytes arrive, instead of
#: collecting the frame and copying it out at the end (256 KiB).  With
#: ``split_large=True`` such a frame holding one grid message arrives as a
#: :class:`SplitFrame`.
LARGE_FRAME = 256 * 1024

# The longest envelope head (§2.1, as _decode_tuple accepts it): a dd array
# header (5 bytes), six 9-byte integers and a bin32 header (5 bytes).  Its
# first _HEAD_MAX bytes always tell whether a frame payload can be split.
_HEAD_MAX = 64
# The most bytes a split frame may have after its grid payload: a subroute
# id and a CRC (§2.2), all that Go ever puts there.
_TAIL_MAX = 36


def _view(data: Buffer) -> Buffer:
    """``data`` as a flat run of bytes whose len() counts bytes.

    Accepts exactly what the compiled twin's ``PyBUF_SIMPLE`` request accepts:
    any C-contiguous buffer.  A memoryview of wider items (``array("I")``)
    counts its bytes, not its items; ints, lists and str are TypeErrors (as
    ``bytes(data)`` would have silently accepted the first two).
    """
    if type(data) is bytes:
        return data
    try:
        view = memoryview(data)
    except TypeError:
        raise TypeError(f"a bytes-like object is required, not '{type(data).__name__}'") from None
    if not view.c_contiguous:
        raise BufferError("a C-contiguous buffer is required")
    if view.ndim != 1 or view.format != "B":
        view = view.cast("B")
    return view


def _bytes(data: Buffer) -> bytes:
    """:func:`_view`, copied into ``bytes`` (no copy for ``bytes``)."""
    view = _view(data)
    return view if type(view) is bytes else bytes(view)


class Message:
    """One decoded grid message (§2.1).

    ``payload`` is ``None`` when absent and ``b""`` when present but empty
    (FlagPayloadIsZero, §2.4).  ``subroute`` is the 32-byte subroute id when
    FlagSubroute is set, else ``None``.
    """

    __slots__ = ("mux_id", "seq", "deadline_ms", "handler", "op", "flags", "payload", "subroute")

    def __init__(
        self,
        mux_id: int = 0,
        seq: int = 0,
        deadline_ms: int = 0,
        handler: int = 0,
        op: int = 0,
        flags: int = 0,
        payload: bytes | None = None,
        subroute: bytes | None = None,
    ) -> None:
        self.mux_id = mux_id
        self.seq = seq
        self.deadline_ms = deadline_ms
        self.handler = handler
        self.op = op
        self.flags = flags
        self.payload = payload
        self.subroute = subroute

    def encode(self) -> bytes:
        """Encode this message with its trailers (see :func:`encode_message`)."""
        return encode_message(
            self.mux_id, self.seq, self.deadline_ms, self.handler, self.op,
            self.flags, self.payload, self.subroute,
        )

    def _key(self) -> tuple[Any, ...]:
        return (self.mux_id, self.seq, self.deadline_ms, self.handler, self.op,
                self.flags, self.payload, self.subroute)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return self._key() == other._key()

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return (
            f"Message(mux_id={self.mux_id}, seq={self.seq}, deadline_ms={self.deadline_ms}, "
            f"handler={self.handler}, op={self.op}, flags={self.flags:#04x}, "
            f"payload={self.payload!r}, subroute={self.subroute!r})"
        )


# ---------------------------------------------------------------- encoding


def _pack_uint(out: bytearray, v: int) -> None:
    # msgp AppendUint64: the smallest unsigned form (§2.1).
    if v < 0x80:
        out.append(v)
    elif v < 0x100:
        out += b"\xcc" + bytes((v,))
    elif v < 0x10000:
        out += b"\xcd" + _U16.pack(v)
    elif v < 0x100000000:
        out += b"\xce" + _U32.pack(v)
    else:
        out += b"\xcf" + _U64.pack(v)


def _pack_bin_header(out: bytearray, n: int) -> None:
    if n < 0x100:
        out += b"\xc4" + bytes((n,))
    elif n < 0x10000:
        out += b"\xc5" + _U16.pack(n)
    elif n <= _MAX_PAYLOAD:
        out += b"\xc6" + _U32.pack(n)
    else:
        raise ValueError(f"payload of {n} bytes is over the 4 GiB bin limit")


def encode_message(
    mux_id: int,
    seq: int,
    deadline_ms: int,
    handler: int,
    op: int,
    flags: int,
    payload: Buffer | None = None,
    subroute: Buffer | None = None,
) -> bytes:
    """Encode one grid message: the 7-tuple, then the subroute id if
    ``flags & FLAG_SUBROUTE``, then the XXH3 CRC if ``flags & FLAG_CRC`` (§2.2).

    ``payload=None`` is written as an empty bin, as Go does; set
    FLAG_PAYLOAD_IS_ZERO yourself to mark a present-but-empty payload.
    ``subroute`` must be 32 bytes and is required exactly when FlagSubroute is
    set.  Out-of-range fields raise ValueError.
    """
    # Integer fields go through operator.index like the compiled twin's C
    # conversion: int subclasses (IntEnum, bool) are fine, floats TypeError.
    values = (_index(mux_id), _index(seq), _index(deadline_ms), _index(handler), _index(op),
              _index(flags))
    flags = values[5]
    for name, value, top in zip(_FIELD_NAMES, values, _FIELD_MAX):
        if not 0 <= value <= top:
            raise ValueError(f"{name} {value} is outside 0..{top}")
    out = bytearray(b"\x97")
    for value in values:
        _pack_uint(out, value)
    if payload is None:
        out += b"\xc4\x00"
    else:
        payload = _view(payload)
        _pack_bin_header(out, len(payload))
        out += payload
    if flags & FLAG_SUBROUTE:
        if subroute is None or len(subroute := _view(subroute)) != 32:
            raise ValueError("FlagSubroute needs a 32-byte subroute id")
        out += subroute
    elif subroute is not None:
        raise ValueError("a subroute id needs FlagSubroute in flags")
    if flags & FLAG_CRC:
        out += _CRC.pack(xxh3_64_intdigest(bytes(out)) & 0xFFFFFFFF)
    return bytes(out)


def encode_merged(messages: Sequence[Buffer]) -> bytes:
    """Build an OpMerged container (§4) from already-encoded messages.

    The container itself carries no CRC and no subroute; each inner message
    keeps its own trailers.
    """
    n = len(messages)
    if n > 0xFFFFFFFF:
        raise ValueError("too many messages for one container")
    out = bytearray(b"\x97\x00")
    _pack_uint(out, n)
    out += b"\x00\x00\x11\x00\xc4\x00"
    for m in messages:
        m = _view(m)
        _pack_bin_header(out, len(m))
        out += m
    return bytes(out)


# ---------------------------------------------------------------- decoding


def _read_uint(data: bytes, pos: int, end: int, index: int) -> tuple[int, int]:
    """Read one integer field the way msgp's readers accept it (§2.3)."""
    if pos >= end:
        raise ProtocolError(f"truncated envelope: {_FIELD_NAMES[index]} missing")
    b = data[pos]
    if b < 0x80:
        return b, pos + 1
    if 0xCC <= b <= 0xD3:
        size = 1 << ((b - 0xCC) & 3)  # cc..cf: 1,2,4,8; d0..d3: 1,2,4,8
        if pos + 1 + size > end:
            raise ProtocolError(f"truncated envelope: {_FIELD_NAMES[index]} cut short")
        raw = data[pos + 1:pos + 1 + size]
        signed = b >= 0xD0
        value = int.from_bytes(raw, "big", signed=signed)
        if value < 0:
            raise ProtocolError(f"bad msgpack value: {_FIELD_NAMES[index]} is negative ({value})")
        if value > _FIELD_MAX[index]:
            raise ProtocolError(
                f"bad msgpack value: {_FIELD_NAMES[index]} {value} overflows its field"
            )
        return value, pos + 1 + size
    if b >= 0xE0:
        raise ProtocolError(f"bad msgpack value: {_FIELD_NAMES[index]} is negative ({b - 256})")
    raise ProtocolError(f"bad msgpack type 0x{b:02x} for {_FIELD_NAMES[index]}, want an integer")


def _read_bin(data: bytes, pos: int, end: int, what: str) -> tuple[int, int]:
    """Return (start, stop) of a bin8/16/32 object at ``pos``."""
    if pos >= end:
        raise ProtocolError(f"truncated envelope: {what} missing")
    b = data[pos]
    if b == 0xC4:
        hdr = 2
    elif b == 0xC5:
        hdr = 3
    elif b == 0xC6:
        hdr = 5
    else:
        raise ProtocolError(f"bad msgpack type 0x{b:02x} for {what}, want bin")
    if pos + hdr > end:
        raise ProtocolError(f"truncated envelope: {what} header cut short")
    n = int.from_bytes(data[pos + 1:pos + hdr], "big")
    start = pos + hdr
    if start + n > end:
        raise ProtocolError(f"truncated envelope: {what} needs {n} bytes, {end - start} left")
    return start, start + n


def _decode_tuple(data: bytes) -> tuple[list[int], int, int, int]:
    """Decode the 7-tuple; return (ints, payload start, payload stop, tuple end)."""
    end = len(data)
    if end == 0:
        raise ProtocolError("truncated envelope: empty message")
    b = data[0]
    if b == 0x97:
        pos = 1
    elif b == 0xDC or b == 0xDD:
        hdr = 3 if b == 0xDC else 5
        if end < hdr:
            raise ProtocolError("truncated envelope: array header cut short")
        count = int.from_bytes(data[1:hdr], "big")
        if count != 7:
            raise ProtocolError(f"wrong array length: {count} elements, want 7")
        pos = hdr
    elif 0x90 <= b <= 0x9F:
        raise ProtocolError(f"wrong array length: {b - 0x90} elements, want 7")
    else:
        raise ProtocolError(f"bad msgpack type 0x{b:02x} for the envelope, want array")
    ints = []
    for i in range(6):
        v, pos = _read_uint(data, pos, end, i)
        ints.append(v)
    start, stop = _read_bin(data, pos, end, "Payload")
    return ints, start, stop, stop


def _trailers(data: bytes, flags: int, tail: int) -> tuple[int, bytes | None]:
    """Check the CRC and cut the subroute id; return (end of body, subroute)."""
    end = len(data)
    if flags & FLAG_CRC:
        if end - tail < 4:
            raise ProtocolError(f"want crc len 4, got {end - tail}")
        end -= 4
        given = _CRC.unpack_from(data, end)[0]
        actual = xxh3_64_intdigest(data[:end]) & 0xFFFFFFFF
        if given != actual:
            raise ProtocolError(f"crc mismatch: 0x{given:08x} (given) != 0x{actual:08x} (bytes)")
    subroute = None
    if flags & FLAG_SUBROUTE:
        if end - tail < 32:
            raise ProtocolError(f"want subroute len 32, got {end - tail}")
        end -= 32
        subroute = data[end:end + 32]
    return end, subroute


# ---------------------------------------------------------------- split frames


class SplitFrame:
    """The payload of a large WebSocket frame holding one grid message, in
    three parts that join to the frame payload: ``head`` (the envelope up to
    and including the payload's bin header), ``payload`` (the grid message's
    payload bytes) and ``tail`` (what follows: subroute id and CRC, if any).

    :class:`FrameParser` with ``split_large=True`` produces it for data
    frames of at least :data:`LARGE_FRAME` bytes, receiving ``payload``
    straight into its own buffer; :func:`decode_messages` and
    :func:`decode_message` accept it and hand out that very ``payload``
    object as the message's payload, with no copy.  ``bytes(frame)`` joins
    the parts (a copy).  Equal to a SplitFrame of either twin with equal
    parts, never to plain bytes.
    """

    __slots__ = ("_head", "_payload", "_tail")

    def __init__(self, head: Buffer, payload: Buffer, tail: Buffer) -> None:
        self._head = _bytes(head)
        self._payload = _bytes(payload)
        self._tail = _bytes(tail)

    @property
    def head(self) -> bytes:
        """The envelope bytes before the grid payload."""
        return self._head

    @property
    def payload(self) -> bytes:
        """The grid message's payload bytes."""
        return self._payload

    @property
    def tail(self) -> bytes:
        """The envelope bytes after the grid payload (subroute id, CRC)."""
        return self._tail

    def __bytes__(self) -> bytes:
        return self._head + self._payload + self._tail

    def __len__(self) -> int:
        return len(self._head) + len(self._payload) + len(self._tail)

    def __eq__(self, other: object) -> bool:
        parts = _split_parts(other)
        if parts is None:
            return NotImplemented
        return (self._head, self._payload, self._tail) == parts

    __hash__ = None  # type: ignore[assignment]  # as Message: compared by value, not hashed

    def __repr__(self) -> str:
        return (f"SplitFrame(head={self._head!r}, payload=<{len(self._payload)} bytes>, "
                f"tail={self._tail!r})")


# Module names of the two SplitFrame classes; each twin accepts both.
_SPLIT_MODULES = ("grid._codec", "grid._codec_py")


def _split_parts(data: object) -> tuple[bytes, bytes, bytes] | None:
    """(head, payload, tail) of a SplitFrame of either twin, else None."""
    cls = type(data)
    if cls is SplitFrame or (cls.__name__ == "SplitFrame" and cls.__module__ in _SPLIT_MODULES):
        return data.head, data.payload, data.tail  # type: ignore[attr-defined]
    return None


# _probe_head verdicts
_MORE, _NO, _OK = 0, 1, 2


def _probe_head(data: bytes) -> tuple[int, list[int], int, int]:
    """Read the envelope head at the start of ``data`` (the 7-tuple up to its
    payload's bin header) without needing the payload bytes:
    ``(_OK, fields, payload start, payload length)``; ``(_MORE, ...)`` when
    ``data`` ends inside the head, ``(_NO, ...)`` when it is no head that
    _decode_tuple would accept (a nil payload, say).  Never raises."""
    n = len(data)
    if n == 0:
        return _MORE, [], 0, 0
    b = data[0]
    if b == 0x97:
        pos = 1
    elif b == 0xDC or b == 0xDD:
        pos = 3 if b == 0xDC else 5
        if n < pos:
            return _MORE, [], 0, 0
        if int.from_bytes(data[1:pos], "big") != 7:
            return _NO, [], 0, 0
    else:
        return _NO, [], 0, 0
    ints = []
    for i in range(6):
        if pos >= n:
            return _MORE, [], 0, 0
        b = data[pos]
        if b < 0x80:
            ints.append(b)
            pos += 1
            continue
        if not 0xCC <= b <= 0xD3:
            return _NO, [], 0, 0
        size = 1 << ((b - 0xCC) & 3)
        if pos + 1 + size > n:
            return _MORE, [], 0, 0
        value = int.from_bytes(data[pos + 1:pos + 1 + size], "big", signed=b >= 0xD0)
        if not 0 <= value <= _FIELD_MAX[i]:
            return _NO, [], 0, 0
        ints.append(value)
        pos += 1 + size
    if pos >= n:
        return _MORE, [], 0, 0
    b = data[pos]
    hdr = 2 if b == 0xC4 else 3 if b == 0xC5 else 5 if b == 0xC6 else 0
    if hdr == 0:
        return _NO, [], 0, 0
    if pos + hdr > n:
        return _MORE, [], 0, 0
    return _OK, ints, pos + hdr, int.from_bytes(data[pos + 1:pos + hdr], "big")


def _split_point(first: bytes, flen: int) -> tuple[int, int, int]:
    """Where FrameParser splits a frame payload of ``flen`` bytes that starts
    with ``first`` (unmasked): ``(_OK, head length, payload length)`` when it
    is one grid message (not a container) whose payload bin lies inside the
    frame with at most _TAIL_MAX bytes after it; ``_MORE`` when ``first``
    is too short to tell (never with _HEAD_MAX bytes or more), else ``_NO``."""
    verdict, ints, start, length = _probe_head(first)
    if verdict != _OK:
        return verdict, 0, 0
    if ints[4] == _OP_MERGED or start + length > flen or flen - start - length > _TAIL_MAX:
        return _NO, 0, 0
    return _OK, start, length


def _decode_split(head: bytes, payload: bytes, tail: bytes) -> Message | None:
    """decode_message(head + payload + tail) without joining the parts, when
    ``head`` is exactly the envelope up to the payload of ``len(payload)``
    bytes and the message is no container (as FrameParser splits); None
    otherwise.  The CRC is computed over the parts in turn; trailers are
    checked as _trailers() does, with the same error texts."""
    verdict, ints, start, length = _probe_head(head)
    if verdict != _OK or start != len(head) or length != len(payload) or ints[4] == _OP_MERGED:
        return None
    flags = ints[5]
    end = len(tail)  # the bytes after the tuple are all in the tail
    if flags & FLAG_CRC:
        if end < 4:
            raise ProtocolError(f"want crc len 4, got {end}")
        end -= 4
        given = _CRC.unpack_from(tail, end)[0]
        h = _xxh3_hasher()
        h.update(head)
        h.update(payload)
        h.update(tail[:end])
        actual = h.intdigest() & 0xFFFFFFFF
        if given != actual:
            raise ProtocolError(f"crc mismatch: 0x{given:08x} (given) != 0x{actual:08x} (bytes)")
    subroute = None
    if flags & FLAG_SUBROUTE:
        if end < 32:
            raise ProtocolError(f"want subroute len 32, got {end}")
        end -= 32
        subroute = tail[end:end + 32]
    body: bytes | None = payload
    if length == 0 and not flags & FLAG_PAYLOAD_IS_ZERO:
        body = None
    return Message(ints[0], ints[1], ints[2], ints[3], ints[4], flags, body, subroute)


def decode_message(data: Buffer | SplitFrame) -> Message:
    """Decode one grid message, verifying its CRC and cutting its subroute id.

    Also takes a :class:`SplitFrame`: the result is the joined bytes' one,
    with the frame's own ``payload`` object as the message payload.
    Raises :class:`grid.ProtocolError` naming what was wrong.
    """
    parts = _split_parts(data)
    if parts is not None:
        msg = _decode_split(*parts)
        if msg is not None:
            return msg
        data = b"".join(parts)
    data = _bytes(cast(Buffer, data))  # a SplitFrame was joined above
    ints, start, stop, tail = _decode_tuple(data)
    flags = ints[5]
    _, subroute = _trailers(data, flags, tail)
    payload: bytes | None = data[start:stop]
    if stop == start and not flags & FLAG_PAYLOAD_IS_ZERO:
        payload = None
    return Message(ints[0], ints[1], ints[2], ints[3], ints[4], flags, payload, subroute)


def iter_merged(data: Buffer) -> list[Message]:
    """Decode an OpMerged container (§4) and return its inner messages in order.

    The container's Seq announces the count; fewer bins than announced is a
    ProtocolError, bytes after the last announced bin are ignored (as Go
    does).  Inner messages are decoded but not expanded further: a nested
    container comes back as a Message with op 17 for the caller to reject.
    """
    data = _bytes(data)
    ints, _, _, tail = _decode_tuple(data)
    if ints[4] != _OP_MERGED:
        raise ProtocolError(f"not a merged container: op {ints[4]}")
    end, _ = _trailers(data, ints[5], tail)
    count = ints[1]
    out = []
    pos = tail
    for i in range(count):
        if pos >= end:
            raise ProtocolError(f"merged container announces {count} messages, holds {i}")
        start, stop = _read_bin(data, pos, end, "merged message")
        out.append(decode_message(data[start:stop]))
        pos = stop
    return out


def decode_messages(data: Buffer | SplitFrame) -> list[Message]:
    """Decode one WebSocket message's worth of grid data: a plain message comes
    back as a one-element list, a merged container as its inner messages.
    A :class:`SplitFrame` decodes as its joined bytes would, without the join."""
    parts = _split_parts(data)
    if parts is not None:
        one = _decode_split(*parts)
        if one is not None:
            return [one]
        data = b"".join(parts)
    msg = decode_message(data)
    if msg.op == _OP_MERGED:
        return iter_merged(cast(Buffer, data))
    return [msg]


# ---------------------------------------------------------------- checksums and ids


def xxh3_64(data: Buffer) -> int:
    """XXH3-64 with seed 0 (§2.3)."""
    return xxh3_64_intdigest(data)


def crc32(data: Buffer) -> int:
    """The grid CRC: the low 32 bits of XXH3-64 (§2.2)."""
    return xxh3_64_intdigest(data) & 0xFFFFFFFF


def subroute_id(route: str, handler: int = 0) -> bytes:
    """The 32-byte subroute id (§6.2): SHA-256 of ``route`` with byte 0 set to
    ``handler`` and byte 1 to zero.  Join multi-segment routes with ``/`` first."""
    if not 0 <= handler <= 255:
        raise ValueError(f"handler {handler} is outside 0..255")
    digest = bytearray(hashlib.sha256(route.encode()).digest())
    digest[0] = handler
    digest[1] = 0
    return bytes(digest)


def local_dials(local: str, remote: str) -> bool:
    """True if ``local`` is the side that dials ``remote`` (§1.2)."""
    lb, rb = local.encode(), remote.encode()
    a = xxh3_64_intdigest(lb + rb)
    b = xxh3_64_intdigest(rb + lb)
    if a != b:
        return a < b
    return lb < rb


# ---------------------------------------------------------------- WebSocket


def apply_mask(data: Buffer, key: Buffer) -> bytes:
    """XOR ``data`` with the repeating 4-byte ``key`` (RFC 6455 §5.3)."""
    key = _view(key)
    if len(key) != 4:
        raise ValueError("a WebSocket mask key is 4 bytes")
    data = _view(data)
    n = len(data)
    if n == 0:
        return b""
    # One big-integer XOR beats a per-byte loop by two orders of magnitude.
    full = bytes(key) * (n // 4 + 1)
    x = int.from_bytes(data, "little") ^ int.from_bytes(full[:n], "little")
    return x.to_bytes(n, "little")


def encode_frame(
    payload: Buffer,
    opcode: int = WS_BINARY,
    mask_key: Buffer | None = None,
    fin: bool = True,
) -> bytes:
    """Encode one WebSocket frame.  With ``mask_key`` (4 bytes) the frame is
    masked, as a client must; without it, unmasked, as a server must.
    ``mask_key=b""`` draws a random key."""
    opcode = _index(opcode)
    if not 0 <= opcode <= 0xF:
        raise ValueError(f"opcode {opcode} is outside 0..15")
    payload = _view(payload)
    n = len(payload)
    first = (0x80 if fin else 0) | opcode
    masked = 0x80 if mask_key is not None else 0
    if n < 126:
        head = bytes((first, masked | n))
    elif n < 0x10000:
        head = bytes((first, masked | 126)) + _U16.pack(n)
    else:
        head = bytes((first, masked | 127)) + _U64.pack(n)
    if mask_key is None:
        return head + bytes(payload)
    mask_key = _view(mask_key)
    if len(mask_key) == 0:
        mask_key = os.urandom(4)
    return head + bytes(mask_key) + apply_mask(payload, mask_key)


class FrameParser:
    """Incremental RFC 6455 frame parser for one side of a connection.

    ``server=True`` parses what a client sends (frames must be masked);
    ``server=False`` parses what a server sends (frames must not be masked).
    Feed it bytes in any split with :meth:`feed`, or let an
    ``asyncio.BufferedProtocol`` read straight into it with
    :meth:`get_buffer` / :meth:`buffer_updated`.  Each returns a list of
    ``(opcode, payload)`` events: complete data messages (fragments
    reassembled, opcode of the first frame) and control frames (ping, pong,
    close) as they arrive.  A violation raises ProtocolError, after which the
    parser stays failed.

    An unfragmented data frame of :data:`LARGE_FRAME` bytes or more is
    received into its final buffer as it arrives: while one is incomplete,
    :meth:`get_buffer` hands out that buffer's unfilled part (exactly what
    the frame still needs, so a read never runs into the next frame), and
    the work per read stays proportional to the read.  ``split_large=True``
    (keyword only) makes such a frame arrive as a :class:`SplitFrame` when
    it holds one grid message with a non-nil payload, so that the message
    payload is received in place and decodes without a copy; other frames
    stay plain ``bytes``.
    """

    __slots__ = ("server", "max_message_size", "split_large", "_buf", "_frag_op", "_frag",
                 "_failed", "_recv", "_big", "_big_op", "_flen", "_fgot", "_head_len", "_head",
                 "_tail", "_key", "_view")

    def __init__(self, server: bool, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE, *,
                 split_large: bool = False) -> None:
        if max_message_size < 0:
            raise ValueError("max_message_size must be >= 0")
        self.server = server
        self.max_message_size = max_message_size
        #: Deliver large one-message frames as SplitFrame (see the class docstring).
        self.split_large = split_large
        self._buf = bytearray()
        self._frag_op = -1  # opcode of the data message being reassembled
        self._frag = bytearray()
        self._failed: str | None = None
        self._recv = bytearray(262144)
        # The large frame in progress (_big_op >= 0): its payload of _flen
        # bytes, _fgot of which are in, is _head (split only) + _big + _tail.
        self._big: bytearray | None = None
        self._big_op = -1
        self._flen = 0
        self._fgot = 0
        self._head_len = 0
        self._head: bytes | None = None
        self._tail = bytearray()
        self._key: bytes | None = None
        # The view of _big that get_buffer() handed out; only ever the
        # current one (dropped whenever the frame moves on).
        self._view: memoryview | None = None

    @property
    def failed(self) -> bool:
        """True once the parser has raised; it then refuses further input."""
        return self._failed is not None

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """A writable buffer for ``asyncio.BufferedProtocol.get_buffer``: the
        unfilled part of a large frame's buffer while one is incomplete, else
        a 256 KiB read window."""
        self._drop_view()
        big = self._big
        if big is not None:
            at = self._fgot - self._head_len
            if at < len(big):
                self._view = memoryview(big)[at:]
                return self._view
            return memoryview(self._recv)[:self._flen - self._fgot]
        return memoryview(self._recv)

    def buffer_updated(self, nbytes: int) -> list[tuple[int, bytes | SplitFrame]]:
        """Parse the ``nbytes`` just written into :meth:`get_buffer`'s buffer."""
        view = self._view
        if not 0 <= nbytes <= (len(self._recv) if view is None else len(view)):
            raise ValueError(f"nbytes {nbytes} is outside the buffer")
        if view is None:
            return self.feed(memoryview(self._recv)[:nbytes])
        # The bytes are in place in _big (the parser cannot have failed: that drops the view).
        k = len(view[:nbytes])
        self._drop_view()
        if self._key is not None and k:
            at = self._fgot - self._head_len
            assert self._big is not None
            self._big[at:at + k] = apply_mask(self._big[at:at + k], self._rotated_key())
        self._fgot += k
        return [self._big_event()] if self._fgot == self._flen else []

    def _drop_view(self) -> None:
        view = self._view
        if view is not None:
            self._view = None
            try:
                view.release()
            except BufferError:
                pass  # still exported (a read in progress); it stays valid

    def _fail(self, text: str) -> ProtocolError:
        self._failed = text
        self._buf = bytearray()
        self._frag = bytearray()
        self._big_clear()
        return ProtocolError(text)

    def feed(self, data: Buffer) -> list[tuple[int, bytes | SplitFrame]]:
        """Add received bytes; return the events they complete."""
        if self._failed is not None:
            raise ProtocolError(f"parser failed earlier: {self._failed}")
        self._drop_view()
        buf = self._buf
        buf += data
        events: list[tuple[int, bytes | SplitFrame]] = []
        try:
            while True:
                if self._big is not None:
                    # A large frame in progress takes what it still needs first.
                    k = min(len(buf), self._flen - self._fgot)
                    if k:
                        self._big_put(bytes(buf[:k]))
                        del buf[:k]
                    if self._fgot < self._flen:
                        break
                    events.append(self._big_event())
                more, pos = self._frames(buf)
                events += more
                if pos:
                    del buf[:pos]
                if self._big is None:
                    break
        except ProtocolError:
            raise  # _fail() already ran
        except BaseException as exc:
            # Not a protocol violation (MemoryError, an incomparable
            # max_message_size), but the place in the stream is lost all the
            # same: stay failed, as the compiled twin does.
            self._fail(f"{type(exc).__name__}: {exc}")
            raise
        return events

    # -- large frames

    def _rotated_key(self) -> bytes:
        """The mask key as it applies from the frame offset _fgot on."""
        assert self._key is not None
        r = self._fgot & 3
        return self._key[r:] + self._key[:r]

    def _begin_large(self, buf: bytearray, start: int, have: int, opcode: int, length: int,
                     masked: int) -> bool:
        """Start receiving the data frame whose payload begins at
        ``buf[start:start+have]`` (``have < length``) into its final buffer;
        False when split_large first needs more of the envelope head."""
        key = bytes(buf[start - 4:start]) if masked else None
        head: bytes | None = None
        head_len, size = 0, length
        if self.split_large:
            first = bytes(buf[start:start + min(have, _HEAD_MAX)])
            if key is not None:
                first = apply_mask(first, key)
            verdict, at, n = _split_point(first, length)
            if verdict == _MORE:
                return False
            if verdict == _OK:
                head, head_len, size = first[:at], at, n
        big = bytearray(size)
        tail = bytearray(length - head_len - size)
        self._big, self._tail, self._head, self._key = big, tail, head, key
        self._big_op = opcode
        self._flen = length
        self._fgot = self._head_len = head_len
        self._big_put(bytes(buf[start + head_len:start + have]))
        return True

    def _big_put(self, chunk: bytes) -> None:
        """Add the next ``chunk`` of the large frame's payload (still masked)."""
        big = self._big
        assert big is not None
        if self._key is not None:
            chunk = apply_mask(chunk, self._rotated_key())
        at = self._fgot - self._head_len
        m = min(len(chunk), len(big) - at) if at < len(big) else 0
        if m:
            big[at:at + m] = chunk[:m]
        if m < len(chunk):
            t = at + m - len(big)
            self._tail[t:t + len(chunk) - m] = chunk[m:]
        self._fgot += len(chunk)

    def _big_event(self) -> tuple[int, bytes | SplitFrame]:
        """The completed large frame's event; the parser lets go of it."""
        assert self._big is not None
        body = bytes(self._big)  # the pure twin's one copy; the compiled one has none
        payload: bytes | SplitFrame = body
        if self._head is not None:
            payload = SplitFrame(self._head, body, bytes(self._tail))
        op = self._big_op
        self._big_clear()
        return op, payload

    def _big_clear(self) -> None:
        self._drop_view()
        self._big = None
        self._big_op = -1
        self._flen = self._fgot = self._head_len = 0
        self._head = None
        self._tail = bytearray()
        self._key = None

    def _whole_large(self, payload: bytes) -> bytes | SplitFrame:
        """A complete large frame's event payload under split_large."""
        verdict, at, n = _split_point(payload[:_HEAD_MAX], len(payload))
        if verdict != _OK:
            return payload
        return SplitFrame(payload[:at], payload[at:at + n], payload[at + n:])

    def _frames(self, buf: bytearray) -> tuple[list[tuple[int, bytes | SplitFrame]], int]:
        """Parse the complete frames at the start of ``buf``; return their
        events and how many bytes they span (all of ``buf`` when it ends in a
        large frame, which is then in progress)."""
        events: list[tuple[int, bytes | SplitFrame]] = []
        pos = 0
        n = len(buf)
        while True:
            if n - pos < 2:
                break
            b0 = buf[pos]
            b1 = buf[pos + 1]
            fin = b0 & 0x80
            opcode = b0 & 0x0F
            if b0 & 0x70:
                raise self._fail("reserved bits set in frame header")
            if 3 <= opcode <= 7 or opcode >= 0xB:
                raise self._fail(f"reserved opcode 0x{opcode:x}")
            masked = b1 & 0x80
            if self.server and not masked:
                raise self._fail("unmasked client frame")
            if not self.server and masked:
                raise self._fail("masked server frame")
            length = b1 & 0x7F
            control = opcode >= 0x8
            if control:
                if not fin:
                    raise self._fail("fragmented control frame")
                if length > 125:
                    raise self._fail("oversized control frame")
            hdr = 2
            if length == 126:
                hdr = 4
                if n - pos < hdr:
                    break
                length = _U16.unpack_from(buf, pos + 2)[0]
            elif length == 127:
                hdr = 10
                if n - pos < hdr:
                    break
                length = _U64.unpack_from(buf, pos + 2)[0]
                if length >> 63:
                    raise self._fail(f"invalid 64-bit frame length {length}")
            if not control:
                if opcode == WS_CONTINUATION:
                    if self._frag_op < 0:
                        raise self._fail("stray continuation frame")
                    total = len(self._frag) + length
                else:
                    if self._frag_op >= 0:
                        raise self._fail("new data frame inside a fragmented message")
                    total = length
                if total > self.max_message_size:
                    raise self._fail(
                        f"message of {total} bytes exceeds the limit of "
                        f"{self.max_message_size} bytes"
                    )
            if masked:
                hdr += 4
            if n - pos < hdr + length:
                if (n - pos >= hdr and fin and not control and opcode != WS_CONTINUATION
                        and length >= LARGE_FRAME
                        and self._begin_large(buf, pos + hdr, n - pos - hdr, opcode, length, masked)):
                    pos = n
                break
            start = pos + hdr
            payload = bytes(buf[start:start + length])
            if masked:
                payload = apply_mask(payload, buf[start - 4:start])
            pos = start + length
            if control:
                events.append((opcode, payload))
            elif opcode == WS_CONTINUATION:
                self._frag += payload
                if fin:
                    events.append((self._frag_op, bytes(self._frag)))
                    self._frag_op = -1
                    self._frag = bytearray()
            elif fin:
                if self.split_large and length >= LARGE_FRAME:
                    events.append((opcode, self._whole_large(payload)))
                else:
                    events.append((opcode, payload))
            else:
                self._frag_op = opcode
                self._frag = bytearray(payload)
        return events, pos


def encode_frames(
    messages: Sequence[Buffer],
    mask_key: Buffer | None = None,
    max_messages: int = MERGE_MAX_MESSAGES,
    max_bytes: int = MERGE_MAX_BYTES,
) -> bytes:
    """Encode queued grid messages as binary WebSocket frames, ready to write.

    Messages are batched as the Go writer does (§4): a message joins the
    current batch while fewer than ``max_messages`` precede it and the batch
    stays below ``max_bytes``; a batch of one leaves as a plain message, a
    larger one as an OpMerged container.  With ``mask_key`` (4 bytes) every
    frame is masked with it, as a client must.
    """
    if mask_key is not None and len(mask_key) != 4:
        raise ValueError("a WebSocket mask key is 4 bytes")
    if len(messages) == 0:
        return b""
    out = [encode_frame(body, WS_BINARY, mask_key)
           for body in encode_batches(messages, max_messages, max_bytes)]
    return out[0] if len(out) == 1 else b"".join(out)


def encode_batches(
    messages: Sequence[Buffer],
    max_messages: int = MERGE_MAX_MESSAGES,
    max_bytes: int = MERGE_MAX_BYTES,
) -> list[Buffer]:
    """The WebSocket message payloads :func:`encode_frames` frames, for a
    server that does the WebSocket framing itself: ``messages`` batched as
    the Go writer does (§4), each batch of one as that message, each larger
    batch as an OpMerged container."""
    n = len(messages)
    out: list[Buffer] = []
    start = 0
    size = 0
    for i in range(n):
        ln = len(messages[i])
        if i + 1 < n and i - start < max_messages and size + ln < max_bytes:
            size += ln
            continue
        out.append(messages[start] if i == start else encode_merged(messages[start:i + 1]))
        start = i + 1
        size = 0
    return out


def encode_message_frame(
    mux_id: int,
    seq: int,
    deadline_ms: int,
    handler: int,
    op: int,
    flags: int,
    payload: Buffer | None = None,
    subroute: Buffer | None = None,
    mask_key: Buffer | None = None,
) -> bytes:
    """One grid message as one complete binary WebSocket frame:
    ``encode_frame(encode_message(...), WS_BINARY, mask_key)`` in a single
    buffer.  Meant for large messages on a worker thread: the payload copy,
    the CRC and the mask run with the GIL released, so the caller's event
    loop keeps going.  ``mask_key`` as for :func:`encode_frame` (``b""``
    draws a random key)."""
    return encode_frame(encode_message(mux_id, seq, deadline_ms, handler, op, flags, payload,
                                       subroute), WS_BINARY, mask_key)
