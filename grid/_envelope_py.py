"""The grid envelope, pure-Python twin (docs/protocol.md §2, §4): messages,
their CRC and subroute trailers, OpMerged containers and large messages as
:class:`SplitFrame`.  Part of :mod:`grid._codec_py`, which re-exports the
public names; the WebSocket modules beside it (``_ws_py``, ``_ws_parser_py``)
share the byte helpers defined here (``_view``, the ``struct`` packers, the
split-point probe), as the compiled twin's included files share theirs.

No asyncio and no sockets: everything here works on byte strings.
"""

from __future__ import annotations

import operator
import struct
from collections.abc import Sequence
from typing import Any, Union, cast

from xxhash import xxh3_64 as _xxh3_hasher
from xxhash import xxh3_64_intdigest

from grid._consts import FLAG_CRC, FLAG_PAYLOAD_IS_ZERO, FLAG_SUBROUTE, Op
from grid.errors import ProtocolError

Buffer = Union[bytes, bytearray, memoryview]

#: Where message CRCs come from: always the xxhash package here; the compiled
#: twin says "xxh3-inline" when its build compiled in the system's xxHash header.
CRC_BACKEND = "xxhash-package"

_OP_MERGED = int(Op.MERGED)
# The fewest bytes a container spends on one valid message: a bin8 header
# and the smallest envelope (fixarray, six fixints, an empty bin8).
_MIN_BIN = 2 + 9
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

#: Payload size from which a complete unfragmented data frame holding one
#: grid message arrives as a :class:`SplitFrame` from a :class:`FrameParser`
#: with ``split_large=True`` (16 KiB): its grid payload is copied out of the
#: read window once, into the object the message then carries.
SPLIT_FRAME = 16 * 1024

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


def pack_uint(out: bytearray, v: int) -> None:
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
        pack_uint(out, value)
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


def _joined(message: Buffer | SplitFrame) -> Buffer:
    """An encoded message as a buffer: a SplitFrame (either twin's) joined
    into bytes, anything else as it is."""
    parts = _split_parts(message)
    return cast(Buffer, message) if parts is None else b"".join(parts)


def encode_merged(messages: Sequence[Buffer | SplitFrame]) -> bytes:
    """Build an OpMerged container (§4) from already-encoded messages
    (buffers, or :class:`SplitFrame` parts of one).

    The container itself carries no CRC and no subroute; each inner message
    keeps its own trailers.
    """
    n = len(messages)
    if n > 0xFFFFFFFF:
        raise ValueError("too many messages for one container")
    out = bytearray(b"\x97\x00")
    pack_uint(out, n)
    out += b"\x00\x00\x11\x00\xc4\x00"
    for message in messages:
        m = _view(_joined(message))
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


def merged_bins(data: bytes, more_than: int) -> tuple[int, int, int] | None:
    """For the pure connection core, which works through a large container
    in slices: ``(count, first bin, end of the bins)`` of ``data`` if it is
    an OpMerged container announcing more than ``more_than`` messages (its
    envelope checked as decode_message() checks it), else None."""
    if len(data) < _MIN_BIN * more_than:
        return None  # too short to hold that many messages: decoded whole
    ints, _, _, tail = _decode_tuple(data)
    if ints[4] != _OP_MERGED or ints[1] <= more_than:
        return None
    end, _ = _trailers(data, ints[5], tail)
    return ints[1], tail, end


def merged_bin(data: bytes, pos: int, end: int, count: int, index: int) -> tuple[Message, int]:
    """The bin at ``data[pos:end]`` of a container announcing ``count``
    (``index`` of them before it), decoded, and where the next one starts;
    the ProtocolError texts are iter_merged()'s."""
    if pos >= end:
        raise ProtocolError(f"merged container announces {count} messages, holds {index}")
    start, stop = _read_bin(data, pos, end, "merged message")
    return decode_message(data[start:stop]), stop


# ---------------------------------------------------------------- split frames


class SplitFrame:
    """The payload of a large WebSocket frame holding one grid message, in
    three parts that join to the frame payload: ``head`` (the envelope up to
    and including the payload's bin header), ``payload`` (the grid message's
    payload bytes) and ``tail`` (what follows: subroute id and CRC, if any).

    :class:`FrameParser` with ``split_large=True`` produces it for data
    frames of at least :data:`SPLIT_FRAME` bytes, copying ``payload`` out of
    its read window once (a frame of :data:`LARGE_FRAME` bytes or more is
    received straight into it); :func:`decode_messages` and
    :func:`decode_message` accept it and hand out that very ``payload``
    object as the message's payload, with no copy.  :func:`encode_frames`,
    :func:`encode_batches` and :func:`encode_merged` take one as an encoded
    message (a sender's core may queue one for a large payload, whose bytes
    are then copied once, into the frame).  ``bytes(frame)`` joins the parts
    (a copy).  Equal to a SplitFrame of either twin with equal parts, never
    to plain bytes.
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
