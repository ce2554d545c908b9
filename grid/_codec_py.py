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
from typing import Any, Union

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
    "iter_merged",
    "encode_frame",
    "apply_mask",
    "FrameParser",
    "crc32",
    "xxh3_64",
    "subroute_id",
    "local_dials",
]

Buffer = Union[bytes, bytearray, memoryview]

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


def decode_message(data: Buffer) -> Message:
    """Decode one grid message, verifying its CRC and cutting its subroute id.

    Raises :class:`grid.ProtocolError` naming what was wrong.
    """
    data = _bytes(data)
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


def decode_messages(data: Buffer) -> list[Message]:
    """Decode one WebSocket message's worth of grid data: a plain message comes
    back as a one-element list, a merged container as its inner messages."""
    msg = decode_message(data)
    if msg.op == _OP_MERGED:
        return iter_merged(data)
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
    """

    __slots__ = ("server", "max_message_size", "_buf", "_frag_op", "_frag", "_failed", "_recv")

    def __init__(self, server: bool, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        if max_message_size < 0:
            raise ValueError("max_message_size must be >= 0")
        self.server = server
        self.max_message_size = max_message_size
        self._buf = bytearray()
        self._frag_op = -1  # opcode of the data message being reassembled
        self._frag = bytearray()
        self._failed: str | None = None
        self._recv = bytearray(65536)

    @property
    def failed(self) -> bool:
        """True once the parser has raised; it then refuses further input."""
        return self._failed is not None

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """A writable buffer for ``asyncio.BufferedProtocol.get_buffer``."""
        return memoryview(self._recv)

    def buffer_updated(self, nbytes: int) -> list[tuple[int, bytes]]:
        """Parse the ``nbytes`` just written into :meth:`get_buffer`'s buffer."""
        if not 0 <= nbytes <= len(self._recv):
            raise ValueError(f"nbytes {nbytes} is outside the buffer")
        return self.feed(memoryview(self._recv)[:nbytes])

    def _fail(self, text: str) -> ProtocolError:
        self._failed = text
        self._buf = bytearray()
        self._frag = bytearray()
        return ProtocolError(text)

    def feed(self, data: Buffer) -> list[tuple[int, bytes]]:
        """Add received bytes; return the events they complete."""
        if self._failed is not None:
            raise ProtocolError(f"parser failed earlier: {self._failed}")
        buf = self._buf
        buf += data
        try:
            events, pos = self._frames(buf)
        except ProtocolError:
            raise  # _fail() already ran
        except BaseException as exc:
            # Not a protocol violation (MemoryError, an incomparable
            # max_message_size), but the place in the stream is lost all the
            # same: stay failed, as the compiled twin does.
            self._fail(f"{type(exc).__name__}: {exc}")
            raise
        if pos:
            del buf[:pos]
        return events

    def _frames(self, buf: bytearray) -> tuple[list[tuple[int, bytes]], int]:
        """Parse the complete frames at the start of ``buf``; return their
        events and how many bytes they span."""
        events: list[tuple[int, bytes]] = []
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
