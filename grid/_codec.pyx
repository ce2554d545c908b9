# cython: language_level=3, annotation_typing=False
"""Compiled twin of :mod:`grid._codec_py`: grid envelopes, merged containers,
WebSocket framing, XXH3 CRC, subroute ids and the dial rule.

Same names, signatures, results and exception texts as the pure twin, which
is the reference; section numbers refer to GRID-PROTOCOL.md.  What differs is
how the bytes move:

* encoders size their output first and write once into a fresh ``bytes``;
* decoders read straight from the caller's buffer (``bytes`` pointer or a
  ``PyBUF_SIMPLE`` view released in ``finally``), every read bounds-checked
  against the length first; only results are copied out;
* :class:`FrameParser` parses frames in place, in the caller's buffer or its
  own fixed read window, and copies only the unfinished tail of a read.

Annotations are kept as the pure twin's strings (``annotation_typing=False``)
so that ``inspect.signature`` agrees; C types are declared with ``cdef``.
Raw pointer reads are never bounds-checked by Cython, so each one is preceded
by an explicit length test; ``boundscheck`` stays at its default (on).
"""

cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_FillInfo, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytearray cimport PyByteArray_AS_STRING
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.exc cimport PyErr_Clear
from cpython.long cimport PyLong_AsLongLongAndOverflow, PyLong_Check, PyLong_CheckExact
from libc.limits cimport LLONG_MAX, LLONG_MIN
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from cpython.number cimport PyNumber_Index
from cpython.object cimport Py_TYPE
from cpython.tuple cimport PyTuple_GET_SIZE
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t, UINT64_MAX
from libc.string cimport memcpy, memmove

from grid.includes.wire cimport (
    grid_bin_header_size, grid_load_be, grid_load_be16, grid_load_be32, grid_load_be64,
    grid_load_le32, grid_mask_copy, grid_negative, grid_put_bin_header, grid_put_uint,
    grid_sign_bit, grid_store_be16, grid_store_be64, grid_store_le32, grid_uint_size, grid_ws_need,
)

import hashlib
import inspect as _inspect
import os

from xxhash import xxh3_64_intdigest

from grid import _consts
from grid._consts import DEFAULT_MAX_MESSAGE_SIZE, MERGE_MAX_BYTES, MERGE_MAX_MESSAGES, WS_BINARY
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


cdef extern from "Python.h":
    # PyObject_GetBuffer without Cython's automatic raise: a refusal is turned
    # into the pure twin's exception by the caller.
    int _get_buffer_or_fail "PyObject_GetBuffer" (object obj, Py_buffer* view, int flags)
    object PyUnicode_FromFormat(const char* fmt, ...)


# Wire constants as C values.  grid/_consts.py is the one source of truth;
# the import-time check below refuses to load if the two ever disagree.
cdef enum:
    FLAG_CRC = 0x01
    FLAG_PAYLOAD_IS_ZERO = 0x10
    FLAG_SUBROUTE = 0x20
    OP_MERGED = 17
    SUBROUTE_LEN = 32
    CRC_LEN = 4
    WS_CONTINUATION = 0x0
    WS_BINARY_OP = 0x2
    RECV_SIZE = 65536           # FrameParser's read window, as the pure twin's
    ACC_KEEP = 1 << 20          # free parser buffers above this once they drain

if (_consts.FLAG_CRC, _consts.FLAG_PAYLOAD_IS_ZERO, _consts.FLAG_SUBROUTE, int(_consts.Op.MERGED),
        _consts.SUBROUTE_LEN, _consts.CRC_LEN, _consts.WS_CONTINUATION, _consts.WS_BINARY) != (
        FLAG_CRC, FLAG_PAYLOAD_IS_ZERO, FLAG_SUBROUTE, OP_MERGED, SUBROUTE_LEN, CRC_LEN,
        WS_CONTINUATION, WS_BINARY_OP):
    raise ImportError("grid._codec was built against other wire constants than grid._consts")

Buffer = object  # the pure twin's alias (bytes | bytearray | memoryview), for introspection

# XXH3-64 from the xxhash package (§2.3), looked up once.
cdef object _xxh3_64_intdigest = xxh3_64_intdigest

# Field names and bounds of the 7-tuple (§2.1): MuxID, Seq, DeadlineMS,
# Handler, Op, Flags.  The Python ints are for error texts.
cdef tuple _FIELD_NAMES = ("MuxID", "Seq", "DeadlineMS", "Handler", "Op", "Flags")
cdef tuple _FIELD_MAX = (2**64 - 1, 2**32 - 1, 2**32 - 1, 255, 255, 255)
cdef uint64_t[6] _FIELD_MAX_C = [UINT64_MAX, 0xFFFFFFFF, 0xFFFFFFFF, 0xFF, 0xFF, 0xFF]
cdef object _U64_MAX = 2**64 - 1
cdef str _NEED_SUBROUTE = "FlagSubroute needs a 32-byte subroute id"


# ---------------------------------------------------------------- buffers


cdef struct _Bytes:
    # A read-only byte range borrowed from a Python object: a bytes object's
    # own storage, or a PyBUF_SIMPLE view that must be released (held).
    const uint8_t* p
    Py_ssize_t n
    bint held
    Py_buffer view


cdef object _flat_view(object data):
    # The pure twin's _view() for what PyBUF_SIMPLE refused: raises the same
    # exceptions, or returns a flat 'B' memoryview when the object was fine
    # after all (a contiguous exporter that only rejects simple requests).
    try:
        view = memoryview(data)
    except TypeError:
        raise TypeError(f"a bytes-like object is required, not '{type(data).__name__}'") from None
    if not view.c_contiguous:
        raise BufferError("a C-contiguous buffer is required")
    if view.ndim != 1 or view.format != "B":
        view = view.cast("B")
    return view


cdef int _acquire(object data, _Bytes* b) except -1:
    """Borrow ``data``'s bytes into ``b``; pair with _release() in a finally."""
    b.held = False
    if PyBytes_CheckExact(data):
        # Immutable and kept alive by the caller's reference: no view needed.
        b.p = <const uint8_t*>PyBytes_AS_STRING(data)
        b.n = PyBytes_GET_SIZE(data)
        return 0
    if _get_buffer_or_fail(data, &b.view, PyBUF_SIMPLE) != 0:
        PyErr_Clear()
        PyObject_GetBuffer(_flat_view(data), &b.view, PyBUF_SIMPLE)
    b.held = True
    b.p = <const uint8_t*>b.view.buf
    b.n = b.view.len
    return 0


cdef inline int _release(_Bytes* b) except -1:
    if b.held:
        b.held = False
        PyBuffer_Release(&b.view)
    return 0


@cython.final
cdef class _Span:
    """A read-only buffer exporter for a borrowed (pointer, length) range.

    One module-level instance hands our own bytes to xxhash without a copy
    and without allocating a memoryview per call.  It is pointed at a range
    right before the call and emptied right after; xxhash acquires its
    Py_buffer first thing in the call, on the same thread and with no
    Python code in between, and releases it before returning, so nothing
    can observe a stale range.
    """
    cdef const uint8_t* p
    cdef Py_ssize_t n

    def __getbuffer__(self, Py_buffer* view, int flags):
        PyBuffer_FillInfo(view, self, <void*>self.p, self.n, 1, flags)

    def __releasebuffer__(self, Py_buffer* view):
        pass


cdef _Span _span = _Span()


cdef uint64_t _xxh3(const uint8_t* p, Py_ssize_t n) except? 0:
    """XXH3-64 of p[0:n], which the caller keeps alive during the call."""
    cdef uint64_t h
    _span.p = p
    _span.n = n
    try:
        h = _xxh3_64_intdigest(_span)
    finally:
        _span.p = NULL
        _span.n = 0
    return h


# ---------------------------------------------------------------- Message


@cython.annotation_typing(False)
def _message_signature(
    mux_id: int = 0,
    seq: int = 0,
    deadline_ms: int = 0,
    handler: int = 0,
    op: int = 0,
    flags: int = 0,
    payload: bytes | None = None,
    subroute: bytes | None = None,
) -> None:
    pass


@cython.final
@cython.freelist(128)
cdef class Message:
    """One decoded grid message (§2.1).

    ``payload`` is ``None`` when absent and ``b""`` when present but empty
    (FlagPayloadIsZero, §2.4).  ``subroute`` is the 32-byte subroute id when
    FlagSubroute is set, else ``None``.
    """

    # A cdef class's __init__ is a slot wrapper without a signature; this is
    # what inspect.signature(Message) reports instead (the pure twin's).
    __signature__ = _inspect.signature(_message_signature)

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
        cdef uint64_t v[6]
        _field(self.mux_id, 0, &v[0])
        _field(self.seq, 1, &v[1])
        _field(self.deadline_ms, 2, &v[2])
        _field(self.handler, 3, &v[3])
        _field(self.op, 4, &v[4])
        _field(self.flags, 5, &v[5])
        return _encode(v, self.payload, self.subroute)

    def __eq__(self, other: object) -> bool:
        cdef Message o
        if not isinstance(other, Message):
            return NotImplemented
        o = <Message>other
        # Tuple comparison, as the pure twin's _key(): identity, then ==.
        return (self.mux_id, self.seq, self.deadline_ms, self.handler, self.op, self.flags,
                self.payload, self.subroute) == (o.mux_id, o.seq, o.deadline_ms, o.handler, o.op,
                                                 o.flags, o.payload, o.subroute)

    __hash__ = None  # mutable

    def __repr__(self) -> str:
        return (
            f"Message(mux_id={self.mux_id}, seq={self.seq}, deadline_ms={self.deadline_ms}, "
            f"handler={self.handler}, op={self.op}, flags={self.flags:#04x}, "
            f"payload={self.payload!r}, subroute={self.subroute!r})"
        )


del _message_signature


# ---------------------------------------------------------------- encoding


cdef int _field(object value, int index, uint64_t* out) except -1:
    """Convert tuple field ``index`` like the pure twin: operator.index, then
    the range check with its ValueError text."""
    cdef int overflow = 0
    cdef long long x
    if not PyLong_Check(value):
        value = PyNumber_Index(value)  # TypeError for float, str, None
    x = PyLong_AsLongLongAndOverflow(value, &overflow)
    if overflow == 0:
        if x >= 0 and <uint64_t>x <= _FIELD_MAX_C[index]:
            out[0] = <uint64_t>x
            return 0
    elif overflow > 0 and index == 0 and value <= _U64_MAX:
        out[0] = value  # 2**63 .. 2**64-1, MuxID only
        return 0
    raise ValueError(f"{_FIELD_NAMES[index]} {PyNumber_Index(value)} is outside 0..{_FIELD_MAX[index]}")


cdef bytes _encode(const uint64_t* v, object payload, object subroute):
    # Checks in the pure twin's order: payload (type, 4 GiB), subroute rules.
    cdef _Bytes pb, sb
    cdef Py_ssize_t size
    cdef uint64_t flags = v[5]
    cdef bytes out
    cdef uint8_t* start
    cdef uint8_t* w
    cdef int i
    pb.held = sb.held = False
    pb.n = sb.n = 0
    pb.p = sb.p = NULL
    try:
        if payload is not None:
            _acquire(payload, &pb)
            if <uint64_t>pb.n > 0xFFFFFFFF:
                raise ValueError(f"payload of {pb.n} bytes is over the 4 GiB bin limit")
        if flags & FLAG_SUBROUTE:
            if subroute is None:
                raise ValueError(_NEED_SUBROUTE)
            _acquire(subroute, &sb)
            if sb.n != SUBROUTE_LEN:
                raise ValueError(_NEED_SUBROUTE)
        elif subroute is not None:
            raise ValueError("a subroute id needs FlagSubroute in flags")

        size = 1 + <Py_ssize_t>grid_bin_header_size(<uint64_t>pb.n) + pb.n + sb.n
        for i in range(6):
            size += <Py_ssize_t>grid_uint_size(v[i])
        if flags & FLAG_CRC:
            size += CRC_LEN
        out = PyBytes_FromStringAndSize(NULL, size)
        start = <uint8_t*>PyBytes_AS_STRING(out)
        # Writes below add up to exactly `size` bytes, by the sum above.
        start[0] = 0x97
        w = start + 1
        for i in range(6):
            w = grid_put_uint(w, v[i])
        w = grid_put_bin_header(w, <uint64_t>pb.n)
        if pb.n:
            memcpy(w, pb.p, pb.n)
            w += pb.n
        if sb.n:
            memcpy(w, sb.p, SUBROUTE_LEN)
            w += SUBROUTE_LEN
        if flags & FLAG_CRC:
            # §2.2: XXH3 over everything before, low 32 bits little-endian.
            grid_store_le32(w, <uint32_t>(_xxh3(start, w - start) & 0xFFFFFFFF))
        return out
    finally:
        _release(&pb)
        _release(&sb)


cdef bytes encode_message_c(uint64_t mux_id, uint64_t seq, uint64_t deadline_ms, uint64_t handler,
                            uint64_t op, uint64_t flags, object payload, object subroute):
    """encode_message() for C callers; out-of-range fields raise the same ValueError."""
    cdef uint64_t v[6]
    cdef int i
    v[0] = mux_id
    v[1] = seq
    v[2] = deadline_ms
    v[3] = handler
    v[4] = op
    v[5] = flags
    for i in range(1, 6):
        if v[i] > _FIELD_MAX_C[i]:
            raise ValueError(f"{_FIELD_NAMES[i]} {v[i]} is outside 0..{_FIELD_MAX[i]}")
    return _encode(v, payload, subroute)


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
    cdef uint64_t v[6]
    # All six conversions first, then all six range checks, as the pure twin
    # (so a TypeError in a later field wins over a ValueError in an earlier
    # one).  Plain ints, the usual case, need no conversion.
    if not (PyLong_CheckExact(mux_id) and PyLong_CheckExact(seq) and PyLong_CheckExact(deadline_ms)
            and PyLong_CheckExact(handler) and PyLong_CheckExact(op) and PyLong_CheckExact(flags)):
        mux_id = PyNumber_Index(mux_id)
        seq = PyNumber_Index(seq)
        deadline_ms = PyNumber_Index(deadline_ms)
        handler = PyNumber_Index(handler)
        op = PyNumber_Index(op)
        flags = PyNumber_Index(flags)
    _field(mux_id, 0, &v[0])
    _field(seq, 1, &v[1])
    _field(deadline_ms, 2, &v[2])
    _field(handler, 3, &v[3])
    _field(op, 4, &v[4])
    _field(flags, 5, &v[5])
    return _encode(v, payload, subroute)


def encode_merged(messages: Sequence[Buffer]) -> bytes:
    """Build an OpMerged container (§4) from already-encoded messages.

    The container itself carries no CRC and no subroute; each inner message
    keeps its own trailers.
    """
    cdef Py_ssize_t n = len(messages)
    cdef Py_ssize_t k, i, got = 0, size
    cdef _Bytes* spans = NULL
    cdef tuple items
    cdef bytes out
    cdef uint8_t* w
    if n > 0xFFFFFFFF:
        raise ValueError("too many messages for one container")
    # A private tuple: its references keep every item (and a bytes item's
    # storage) alive while we hold raw pointers, whatever other code does
    # to the caller's list.
    items = tuple(messages)
    k = PyTuple_GET_SIZE(items)
    spans = <_Bytes*>PyMem_Realloc(NULL, <size_t>(k if k else 1) * sizeof(_Bytes))
    if spans == NULL:
        raise MemoryError()
    try:
        size = 8 + <Py_ssize_t>grid_uint_size(<uint64_t>n)
        for i in range(k):
            _acquire(items[i], &spans[i])
            got = i + 1
            if <uint64_t>spans[i].n > 0xFFFFFFFF:
                raise ValueError(f"payload of {spans[i].n} bytes is over the 4 GiB bin limit")
            size += <Py_ssize_t>grid_bin_header_size(<uint64_t>spans[i].n) + spans[i].n
        out = PyBytes_FromStringAndSize(NULL, size)
        w = <uint8_t*>PyBytes_AS_STRING(out)
        # 97 00 <n> 00 00 11 00 c4 00: MuxID 0, Seq n, Op 17, Flags 0, no payload.
        w[0] = 0x97
        w[1] = 0x00
        w = grid_put_uint(w + 2, <uint64_t>n)
        w[0] = 0x00
        w[1] = 0x00
        w[2] = OP_MERGED
        w[3] = 0x00
        w[4] = 0xC4
        w[5] = 0x00
        w += 6
        for i in range(k):
            w = grid_put_bin_header(w, <uint64_t>spans[i].n)
            if spans[i].n:
                memcpy(w, spans[i].p, spans[i].n)
                w += spans[i].n
        return out
    finally:
        for i in range(got):
            _release(&spans[i])
        PyMem_Free(spans)


# ---------------------------------------------------------------- decoding


cdef struct _Tuple:
    uint64_t f[6]        # MuxID, Seq, DeadlineMS, Handler, Op, Flags
    Py_ssize_t start     # payload bytes: data[start:stop]
    Py_ssize_t stop      # ... which is also where the tuple ends


cdef Py_ssize_t _read_uint(const uint8_t* p, Py_ssize_t pos, Py_ssize_t end, int index,
                           uint64_t* out) except -1:
    """Read one integer field the way msgp's readers accept it (§2.3); return
    the position after it.  Requires pos >= 0 and end <= len(p)."""
    cdef int b, size
    cdef uint64_t raw
    if pos >= end:
        raise ProtocolError(f"truncated envelope: {_FIELD_NAMES[index]} missing")
    b = p[pos]
    if b < 0x80:
        out[0] = <uint64_t>b
        return pos + 1
    if 0xCC <= b <= 0xD3:
        size = 1 << ((b - 0xCC) & 3)  # cc..cf: 1,2,4,8; d0..d3: 1,2,4,8
        if end - pos - 1 < size:
            raise ProtocolError(f"truncated envelope: {_FIELD_NAMES[index]} cut short")
        raw = grid_load_be(p + pos + 1, size)  # size bytes, present by the test above
        if b >= 0xD0 and grid_sign_bit(raw, size):
            raise ProtocolError(
                f"bad msgpack value: {_FIELD_NAMES[index]} is negative ({grid_negative(raw, size)})"
            )
        if raw > _FIELD_MAX_C[index]:
            raise ProtocolError(
                f"bad msgpack value: {_FIELD_NAMES[index]} {raw} overflows its field"
            )
        out[0] = raw
        return pos + 1 + size
    if b >= 0xE0:
        raise ProtocolError(f"bad msgpack value: {_FIELD_NAMES[index]} is negative ({b - 256})")
    raise ProtocolError(f"bad msgpack type 0x{b:02x} for {_FIELD_NAMES[index]}, want an integer")


cdef Py_ssize_t _read_bin(const uint8_t* p, Py_ssize_t pos, Py_ssize_t end, str what,
                          Py_ssize_t* start) except -1:
    """Find the bin8/16/32 object at ``pos``: set start[0], return its stop."""
    cdef int b, hdr
    cdef uint64_t n
    if pos >= end:
        raise ProtocolError(f"truncated envelope: {what} missing")
    b = p[pos]
    if b == 0xC4:
        hdr = 2
    elif b == 0xC5:
        hdr = 3
    elif b == 0xC6:
        hdr = 5
    else:
        raise ProtocolError(f"bad msgpack type 0x{b:02x} for {what}, want bin")
    if end - pos < hdr:
        raise ProtocolError(f"truncated envelope: {what} header cut short")
    n = grid_load_be(p + pos + 1, hdr - 1)
    if <uint64_t>(end - pos - hdr) < n:
        raise ProtocolError(
            f"truncated envelope: {what} needs {n} bytes, {end - pos - hdr} left"
        )
    start[0] = pos + hdr
    return pos + hdr + <Py_ssize_t>n


cdef int _decode_tuple(const uint8_t* p, Py_ssize_t end, _Tuple* t) except -1:
    """Decode the 7-tuple at the start of p[0:end] into ``t``."""
    cdef int b, i
    cdef Py_ssize_t pos
    cdef uint64_t count
    if end == 0:
        raise ProtocolError("truncated envelope: empty message")
    b = p[0]
    if b == 0x97:
        pos = 1
    elif b == 0xDC or b == 0xDD:
        pos = 3 if b == 0xDC else 5
        if end < pos:
            raise ProtocolError("truncated envelope: array header cut short")
        count = grid_load_be16(p + 1) if b == 0xDC else grid_load_be32(p + 1)
        if count != 7:
            raise ProtocolError(f"wrong array length: {count} elements, want 7")
    elif 0x90 <= b <= 0x9F:
        raise ProtocolError(f"wrong array length: {b - 0x90} elements, want 7")
    else:
        raise ProtocolError(f"bad msgpack type 0x{b:02x} for the envelope, want array")
    for i in range(6):
        pos = _read_uint(p, pos, end, i, &t.f[i])
    t.stop = _read_bin(p, pos, end, "Payload", &t.start)
    return 0


cdef Py_ssize_t _trailers(const uint8_t* p, Py_ssize_t n, uint64_t flags, Py_ssize_t tail,
                          Py_ssize_t* subroute) except -1:
    """Check the CRC and find the subroute id (§2.3 steps 3-4): return the end
    of the body, set subroute[0] to the id's offset or -1.  tail <= n."""
    cdef Py_ssize_t end = n
    cdef uint32_t given, actual
    if flags & FLAG_CRC:
        if end - tail < CRC_LEN:
            raise ProtocolError(f"want crc len 4, got {end - tail}")
        end -= CRC_LEN
        given = grid_load_le32(p + end)  # the 4 bytes after `end`, checked above
        actual = <uint32_t>(_xxh3(p, end) & 0xFFFFFFFF)
        if given != actual:
            raise ProtocolError(f"crc mismatch: 0x{given:08x} (given) != 0x{actual:08x} (bytes)")
    subroute[0] = -1
    if flags & FLAG_SUBROUTE:
        if end - tail < SUBROUTE_LEN:
            raise ProtocolError(f"want subroute len 32, got {end - tail}")
        end -= SUBROUTE_LEN
        subroute[0] = end
    return end


cdef Message _build(const uint8_t* p, _Tuple* t, Py_ssize_t subroute):
    cdef Message m = Message.__new__(Message)
    cdef uint64_t flags = t.f[5]
    m.mux_id = t.f[0]
    m.seq = t.f[1]
    m.deadline_ms = t.f[2]
    m.handler = t.f[3]
    m.op = t.f[4]
    m.flags = flags
    # tuple fields and both trailers were found inside p[0:n] by the decoder
    if t.stop > t.start or flags & FLAG_PAYLOAD_IS_ZERO:
        m.payload = PyBytes_FromStringAndSize(<const char*>p + t.start, t.stop - t.start)
    if subroute >= 0:
        m.subroute = PyBytes_FromStringAndSize(<const char*>p + subroute, SUBROUTE_LEN)
    return m


cdef Message decode_message_ptr(const uint8_t* data, Py_ssize_t n):
    """decode_message() over data[0:n]."""
    cdef _Tuple t
    cdef Py_ssize_t subroute
    _decode_tuple(data, n, &t)
    _trailers(data, n, t.f[5], t.stop, &subroute)
    return _build(data, &t, subroute)


cdef list _inner(const uint8_t* p, Py_ssize_t pos, Py_ssize_t end, uint64_t count):
    """The ``count`` bins of a merged container, at p[pos:end] (§4)."""
    cdef list out = []
    cdef uint64_t i
    cdef Py_ssize_t start, stop
    for i in range(count):
        if pos >= end:
            raise ProtocolError(f"merged container announces {count} messages, holds {i}")
        stop = _read_bin(p, pos, end, "merged message", &start)
        out.append(decode_message_ptr(p + start, stop - start))
        pos = stop
    return out


cdef list _iter_merged_ptr(const uint8_t* p, Py_ssize_t n):
    cdef _Tuple t
    cdef Py_ssize_t subroute, end
    _decode_tuple(p, n, &t)
    if t.f[4] != OP_MERGED:
        raise ProtocolError(f"not a merged container: op {t.f[4]}")
    end = _trailers(p, n, t.f[5], t.stop, &subroute)
    return _inner(p, t.stop, end, t.f[1])


cdef list decode_messages_ptr(const uint8_t* data, Py_ssize_t n):
    """decode_messages() over data[0:n]: the container is parsed once (the
    pure twin parses it twice, with the same checks and the same verdict)."""
    cdef _Tuple t
    cdef Py_ssize_t subroute, end
    _decode_tuple(data, n, &t)
    end = _trailers(data, n, t.f[5], t.stop, &subroute)
    if t.f[4] == OP_MERGED:
        return _inner(data, t.stop, end, t.f[1])
    return [_build(data, &t, subroute)]


def decode_message(data: Buffer) -> Message:
    """Decode one grid message, verifying its CRC and cutting its subroute id.

    Raises :class:`grid.ProtocolError` naming what was wrong.
    """
    cdef _Bytes b
    if PyBytes_CheckExact(data):
        return decode_message_ptr(<const uint8_t*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
    _acquire(data, &b)
    try:
        return decode_message_ptr(b.p, b.n)
    finally:
        _release(&b)


def iter_merged(data: Buffer) -> list[Message]:
    """Decode an OpMerged container (§4) and return its inner messages in order.

    The container's Seq announces the count; fewer bins than announced is a
    ProtocolError, bytes after the last announced bin are ignored (as Go
    does).  Inner messages are decoded but not expanded further: a nested
    container comes back as a Message with op 17 for the caller to reject.
    """
    cdef _Bytes b
    _acquire(data, &b)
    try:
        return _iter_merged_ptr(b.p, b.n)
    finally:
        _release(&b)


def decode_messages(data: Buffer) -> list[Message]:
    """Decode one WebSocket message's worth of grid data: a plain message comes
    back as a one-element list, a merged container as its inner messages."""
    cdef _Bytes b
    if PyBytes_CheckExact(data):
        return decode_messages_ptr(<const uint8_t*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
    _acquire(data, &b)
    try:
        return decode_messages_ptr(b.p, b.n)
    finally:
        _release(&b)


# ---------------------------------------------------------------- checksums and ids


def xxh3_64(data: Buffer) -> int:
    """XXH3-64 with seed 0 (§2.3)."""
    return _xxh3_64_intdigest(data)


def crc32(data: Buffer) -> int:
    """The grid CRC: the low 32 bits of XXH3-64 (§2.2)."""
    return _xxh3_64_intdigest(data) & 0xFFFFFFFF


def subroute_id(route: str, handler: int = 0) -> bytes:
    """The 32-byte subroute id (§6.2): SHA-256 of ``route`` with byte 0 set to
    ``handler`` and byte 1 to zero.  Join multi-segment routes with ``/`` first."""
    # Not on a hot path: the pure twin's code, for identical behaviour.
    cdef object digest
    if not 0 <= handler <= 255:
        raise ValueError(f"handler {handler} is outside 0..255")
    digest = bytearray(hashlib.sha256(route.encode()).digest())
    digest[0] = handler
    digest[1] = 0
    return bytes(digest)


def local_dials(local: str, remote: str) -> bool:
    """True if ``local`` is the side that dials ``remote`` (§1.2)."""
    lb, rb = local.encode(), remote.encode()
    a = _xxh3_64_intdigest(lb + rb)
    b = _xxh3_64_intdigest(rb + lb)
    if a != b:
        return a < b
    return lb < rb


# ---------------------------------------------------------------- WebSocket


def apply_mask(data: Buffer, key: Buffer) -> bytes:
    """XOR ``data`` with the repeating 4-byte ``key`` (RFC 6455 §5.3)."""
    cdef _Bytes kb, db
    cdef bytes out
    kb.held = db.held = False
    try:
        _acquire(key, &kb)
        if kb.n != 4:
            raise ValueError("a WebSocket mask key is 4 bytes")
        _acquire(data, &db)
        if db.n == 0:
            return b""
        out = PyBytes_FromStringAndSize(NULL, db.n)
        grid_mask_copy(<uint8_t*>PyBytes_AS_STRING(out), db.p, <size_t>db.n, kb.p)
        return out
    finally:
        _release(&kb)
        _release(&db)


def encode_frame(
    payload: Buffer,
    opcode: int = WS_BINARY,
    mask_key: Buffer | None = None,
    fin: bool = True,
) -> bytes:
    """Encode one WebSocket frame.  With ``mask_key`` (4 bytes) the frame is
    masked, as a client must; without it, unmasked, as a server must.
    ``mask_key=b""`` draws a random key."""
    cdef _Bytes pb, kb
    cdef int overflow = 0
    cdef long long op
    cdef Py_ssize_t hdr
    cdef uint8_t first, masked
    cdef bytes out
    cdef uint8_t* w
    opcode = PyNumber_Index(opcode)
    op = PyLong_AsLongLongAndOverflow(opcode, &overflow)
    if overflow or not 0 <= op <= 0xF:
        raise ValueError(f"opcode {opcode} is outside 0..15")
    pb.held = kb.held = False
    pb.n = kb.n = 0
    pb.p = kb.p = NULL
    try:
        _acquire(payload, &pb)
        first = (0x80 if fin else 0) | <uint8_t>op
        masked = 0x80 if mask_key is not None else 0
        if pb.n < 126:
            hdr = 2
        elif pb.n < 0x10000:
            hdr = 4
        else:
            hdr = 10
        if mask_key is not None:
            _acquire(mask_key, &kb)
            if kb.n == 0:
                _release(&kb)
                mask_key = os.urandom(4)
                _acquire(mask_key, &kb)
            if kb.n != 4:
                raise ValueError("a WebSocket mask key is 4 bytes")
        out = PyBytes_FromStringAndSize(NULL, hdr + kb.n + pb.n)
        w = <uint8_t*>PyBytes_AS_STRING(out)
        w[0] = first
        if hdr == 2:
            w[1] = masked | <uint8_t>pb.n
        elif hdr == 4:
            w[1] = masked | 126
            grid_store_be16(w + 2, <uint64_t>pb.n)
        else:
            w[1] = masked | 127
            grid_store_be64(w + 2, <uint64_t>pb.n)
        w += hdr
        if kb.n:
            memcpy(w, kb.p, 4)
            grid_mask_copy(w + 4, pb.p, <size_t>pb.n, kb.p)
        elif pb.n:
            memcpy(w, pb.p, pb.n)
        return out
    finally:
        _release(&pb)
        _release(&kb)


@cython.annotation_typing(False)
def _parser_signature(server: bool, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
    pass


cdef enum:
    # How FrameParser compares a message size with max_message_size.
    _LIMIT_C = 0         # an int >= 0: against _limit
    _LIMIT_NEGATIVE = 1  # an int < 0: every data message exceeds it
    _LIMIT_PY = 2        # not an int: Python's `>`, as the pure twin does


cdef int _reserve(uint8_t** buf, Py_ssize_t* cap, Py_ssize_t need) except -1:
    """Grow a PyMem buffer to hold at least ``need`` bytes (geometrically)."""
    cdef Py_ssize_t new_cap = cap[0] if cap[0] else 4096
    cdef void* p
    if need <= cap[0]:
        return 0
    while new_cap < need:
        if new_cap > (<Py_ssize_t>1 << 61):
            raise MemoryError()
        new_cap *= 2
    p = PyMem_Realloc(buf[0], <size_t>new_cap)
    if p == NULL:
        raise MemoryError()
    buf[0] = <uint8_t*>p
    cap[0] = new_cap
    return 0


cdef inline bytes _payload(const uint8_t* src, Py_ssize_t n, const uint8_t* key):
    """A frame payload as owned bytes, unmasked if ``key`` is not NULL."""
    cdef bytes out
    if key == NULL:
        return PyBytes_FromStringAndSize(<const char*>src, n)
    out = PyBytes_FromStringAndSize(NULL, n)
    grid_mask_copy(<uint8_t*>PyBytes_AS_STRING(out), src, <size_t>n, key)
    return out


@cython.final
cdef class FrameParser:
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

    # Input is parsed where it lies: in the bytes given to feed(), or in the
    # fixed 64 KiB window that get_buffer() hands out (uvloop/asyncio read
    # into it directly).  Only the unfinished frame at the end of a read is
    # copied, into _acc; the next read first tops _acc up to exactly one
    # frame (never more), then parsing continues in place again.  The window
    # never moves or shrinks, so a memoryview of it stays valid, like the
    # pure twin's bytearray; payloads are copied out as bytes, so events
    # never alias it.

    __signature__ = _inspect.signature(_parser_signature)

    def __cinit__(self):
        self._frag_op = -1
        self._limit_kind = _LIMIT_C
        # Here rather than in __init__: buffer_updated() dereferences it, so
        # it must exist even on an instance made with __new__ alone.
        self._recv = bytearray(RECV_SIZE)

    def __init__(self, server: bool, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        if max_message_size < 0:
            raise ValueError("max_message_size must be >= 0")
        self._server = server
        self._is_server = server
        self._set_limit(max_message_size)
        self._release_buffers()
        self._frag_op = -1
        self._failed = None

    def __dealloc__(self):
        PyMem_Free(self._acc)
        PyMem_Free(self._frag)

    @property
    def server(self):
        return self._server

    @server.setter
    def server(self, value):
        self._is_server = value
        self._server = value

    @property
    def max_message_size(self):
        return self._max_size

    @max_message_size.setter
    def max_message_size(self, value):
        self._set_limit(value)

    @property
    def failed(self) -> bool:
        """True once the parser has raised; it then refuses further input."""
        return self._failed is not None

    cdef int _set_limit(self, object value) except -1:
        cdef int overflow = 0
        cdef long long x
        if PyLong_Check(value):
            x = PyLong_AsLongLongAndOverflow(value, &overflow)
            if overflow < 0 or (overflow == 0 and x < 0):
                self._limit_kind = _LIMIT_NEGATIVE
            elif overflow > 0:
                # Totals stay below 2**63 + memory size, so 2**64-1 is "no limit".
                self._limit = value if value <= _U64_MAX else UINT64_MAX
                self._limit_kind = _LIMIT_C
            else:
                self._limit = <uint64_t>x
                self._limit_kind = _LIMIT_C
        else:
            self._limit_kind = _LIMIT_PY
        self._max_size = value
        return 0

    cdef int _check_size(self, uint64_t total) except -1:
        if self._limit_kind == _LIMIT_C:
            if total <= self._limit:
                return 0
        elif self._limit_kind == _LIMIT_PY:
            if not total > self._max_size:
                return 0
        raise self._fail(
            f"message of {total} bytes exceeds the limit of {self._max_size} bytes"
        )

    cdef int _release_buffers(self) except -1:
        PyMem_Free(self._acc)
        self._acc = NULL
        self._acc_len = self._acc_cap = 0
        PyMem_Free(self._frag)
        self._frag = NULL
        self._frag_len = self._frag_cap = 0
        return 0

    cdef object _fail(self, str text):
        self._failed = text
        self._release_buffers()
        return ProtocolError(text)

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """A writable buffer for ``asyncio.BufferedProtocol.get_buffer``."""
        return memoryview(self._recv)

    def buffer_updated(self, nbytes: int) -> list[tuple[int, bytes]]:
        """Parse the ``nbytes`` just written into :meth:`get_buffer`'s buffer."""
        return self._updated(nbytes)

    def feed(self, data: Buffer) -> list[tuple[int, bytes]]:
        """Add received bytes; return the events they complete."""
        return self._feed(data)

    cdef list _updated(self, object nbytes):
        cdef int overflow = 0
        cdef long long x = -1
        cdef Py_ssize_t k
        if PyLong_Check(nbytes):
            x = PyLong_AsLongLongAndOverflow(nbytes, &overflow)
            if overflow or not 0 <= x <= RECV_SIZE:
                raise ValueError(f"nbytes {nbytes} is outside the buffer")
            k = <Py_ssize_t>x
        else:
            # Not an int: the pure twin's own steps, for its exact behaviour.
            if not 0 <= nbytes <= len(self._recv):
                raise ValueError(f"nbytes {nbytes} is outside the buffer")
            window = slice(None, nbytes)  # a generic slice, not Cython's C-index one
            k = len(memoryview(self._recv)[window])
        if self._failed is not None:
            raise ProtocolError(f"parser failed earlier: {self._failed}")
        # 0 <= k <= RECV_SIZE == len(self._recv)
        return self._process(<const uint8_t*>PyByteArray_AS_STRING(self._recv), k)

    cdef list _feed(self, object data):
        cdef Py_buffer view
        if self._failed is not None:
            raise ProtocolError(f"parser failed earlier: {self._failed}")
        if PyBytes_CheckExact(data):
            return self._process(<const uint8_t*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
        if _get_buffer_or_fail(data, &view, PyBUF_SIMPLE) != 0:
            # The pure twin's `bytearray += data` refusal, text included.
            PyErr_Clear()
            raise TypeError(PyUnicode_FromFormat(
                "can't concat %.100s to bytearray", Py_TYPE(data).tp_name))
        try:
            return self._process(<const uint8_t*>view.buf, view.len)
        finally:
            PyBuffer_Release(&view)

    cdef list _process(self, const uint8_t* data, Py_ssize_t n):
        # _parse reads _acc through a raw pointer; a re-entrant call (from a
        # finalizer run by the GC during an allocation, say) could move it.
        if self._busy:
            raise RuntimeError("FrameParser re-entered while parsing")
        self._busy = True
        try:
            return self._consume(data, n)
        except ProtocolError:
            raise  # already failed by _fail()
        except BaseException as exc:
            # Not a protocol violation (MemoryError, say), but the position in
            # the stream is lost all the same: stay failed, like the pure twin.
            if self._failed is None:
                self._fail(f"{type(exc).__name__}: {exc}")
            raise
        finally:
            self._busy = False

    cdef list _consume(self, const uint8_t* data, Py_ssize_t n):
        cdef list events = []
        cdef Py_ssize_t ip = 0, used
        cdef uint64_t need, take
        if self._acc_len > 0:
            # Top the pending frame up from the new input, never past its end
            # (grid_ws_need() is exactly what _parse waits for), and re-parse
            # it with everything known so far, as the pure twin re-parses its
            # buffer: a violation shows on the same byte in both.
            while True:
                need = grid_ws_need(self._acc, <size_t>self._acc_len)
                take = 0
                if need > <uint64_t>self._acc_len:
                    take = need - <uint64_t>self._acc_len
                    if take > <uint64_t>(n - ip):
                        take = <uint64_t>(n - ip)
                if take:
                    _reserve(&self._acc, &self._acc_cap, self._acc_len + <Py_ssize_t>take)
                    memcpy(self._acc + self._acc_len, data + ip, <size_t>take)
                    self._acc_len += <Py_ssize_t>take
                    ip += <Py_ssize_t>take
                used = self._parse(self._acc, self._acc_len, events)
                if used:
                    if used < self._acc_len:  # cannot happen; keep the bytes anyway
                        memmove(self._acc, self._acc + used, <size_t>(self._acc_len - used))
                        self._acc_len -= used
                        continue
                    self._acc_len = 0
                    if self._acc_cap > ACC_KEEP:
                        PyMem_Free(self._acc)
                        self._acc = NULL
                        self._acc_cap = 0
                    break
                if ip == n or take == 0:
                    break
        if ip == n:
            return events
        if self._acc_len == 0:
            # The common case: whole frames straight from the input.
            ip += self._parse(data + ip, n - ip, events)
            if ip < n:
                _reserve(&self._acc, &self._acc_cap, n - ip)
                memcpy(self._acc, data + ip, <size_t>(n - ip))
                self._acc_len = n - ip
        else:
            # Unreachable while grid_ws_need() and _parse() agree; if they
            # ever did not, fall back to the pure twin's way: append all,
            # parse all, keep the rest.
            _reserve(&self._acc, &self._acc_cap, self._acc_len + (n - ip))
            memcpy(self._acc + self._acc_len, data + ip, <size_t>(n - ip))
            self._acc_len += n - ip
            used = self._parse(self._acc, self._acc_len, events)
            memmove(self._acc, self._acc + used, <size_t>(self._acc_len - used))
            self._acc_len -= used
        return events

    cdef Py_ssize_t _parse(self, const uint8_t* buf, Py_ssize_t n, list events) except -1:
        """Parse the complete frames in buf[0:n]; return how many bytes they
        span.  Same checks, in the same order, as the pure twin's loop."""
        cdef Py_ssize_t pos = 0, avail, hdr, start
        cdef int b0, b1, opcode
        cdef bint fin, masked, control
        cdef uint64_t length, total
        cdef const uint8_t* key
        while True:
            avail = n - pos
            if avail < 2:
                break
            b0 = buf[pos]
            b1 = buf[pos + 1]
            fin = (b0 & 0x80) != 0
            opcode = b0 & 0x0F
            if b0 & 0x70:
                raise self._fail("reserved bits set in frame header")
            if 3 <= opcode <= 7 or opcode >= 0xB:
                raise self._fail(f"reserved opcode 0x{opcode:x}")
            masked = (b1 & 0x80) != 0
            if self._is_server and not masked:
                raise self._fail("unmasked client frame")
            if not self._is_server and masked:
                raise self._fail("masked server frame")
            length = <uint64_t>(b1 & 0x7F)
            control = opcode >= 0x8
            if control:
                if not fin:
                    raise self._fail("fragmented control frame")
                if length > 125:
                    raise self._fail("oversized control frame")
            hdr = 2
            if length == 126:
                hdr = 4
                if avail < hdr:
                    break
                length = grid_load_be16(buf + pos + 2)
            elif length == 127:
                hdr = 10
                if avail < hdr:
                    break
                length = grid_load_be64(buf + pos + 2)
                if length >> 63:
                    raise self._fail(f"invalid 64-bit frame length {length}")
            if not control:
                if opcode == WS_CONTINUATION:
                    if self._frag_op < 0:
                        raise self._fail("stray continuation frame")
                    total = <uint64_t>self._frag_len + length  # both < 2**63: no wrap
                else:
                    if self._frag_op >= 0:
                        raise self._fail("new data frame inside a fragmented message")
                    total = length
                self._check_size(total)
            if masked:
                hdr += 4
            if avail < hdr or <uint64_t>(avail - hdr) < length:
                break
            # From here on the whole frame is inside buf[0:n]: the mask key is
            # buf[start-4:start] and the payload buf[start:start+length].
            start = pos + hdr
            key = buf + start - 4 if masked else NULL
            pos = start + <Py_ssize_t>length
            if control:
                events.append((opcode, _payload(buf + start, <Py_ssize_t>length, key)))
            elif opcode == WS_CONTINUATION:
                self._frag_append(buf + start, <Py_ssize_t>length, key)
                if fin:
                    events.append((self._frag_op, PyBytes_FromStringAndSize(
                        <const char*>self._frag, self._frag_len)))
                    self._frag_op = -1
                    self._frag_len = 0
                    if self._frag_cap > ACC_KEEP:
                        PyMem_Free(self._frag)
                        self._frag = NULL
                        self._frag_cap = 0
            elif fin:
                events.append((opcode, _payload(buf + start, <Py_ssize_t>length, key)))
            else:
                self._frag_len = 0
                self._frag_append(buf + start, <Py_ssize_t>length, key)
                self._frag_op = opcode
        return pos

    cdef int _frag_append(self, const uint8_t* src, Py_ssize_t n, const uint8_t* key) except -1:
        _reserve(&self._frag, &self._frag_cap, self._frag_len + n)
        if n:
            if key != NULL:
                grid_mask_copy(self._frag + self._frag_len, src, <size_t>n, key)
            else:
                memcpy(self._frag + self._frag_len, src, <size_t>n)
            self._frag_len += n
        return 0


del _parser_signature


# ---------------------------------------------------------------- writer batches


cdef struct _Limit:
    # A batching bound of encode_frames: an int as a C value (clamped, it is
    # only compared), anything else compared with Python semantics.
    long long c
    bint is_c


cdef int _set_bound(_Limit* lim, object value) except -1:
    cdef int overflow = 0
    lim.is_c = PyLong_Check(value)
    if lim.is_c:
        lim.c = PyLong_AsLongLongAndOverflow(value, &overflow)
        if overflow:
            lim.c = LLONG_MAX if overflow > 0 else LLONG_MIN
    return 0


cdef inline bint _below(Py_ssize_t v, _Limit* lim, object value) except -1:
    if lim.is_c:
        return v < lim.c
    return v < value


cdef inline Py_ssize_t _frame_header_size(Py_ssize_t body):
    return 2 if body < 126 else (4 if body < 0x10000 else 10)


def encode_batches(
    messages: Sequence[Buffer],
    max_messages: int = MERGE_MAX_MESSAGES,
    max_bytes: int = MERGE_MAX_BYTES,
) -> list[Buffer]:
    """The WebSocket message payloads :func:`encode_frames` frames, for a
    server that does the WebSocket framing itself: ``messages`` batched as
    the Go writer does (§4), each batch of one as that message, each larger
    batch as an OpMerged container."""
    # The limits stay Python objects: compared with Python semantics, as the
    # pure twin compares them (encode_frames's C limits are a speed-up).
    cdef Py_ssize_t n = len(messages)
    cdef Py_ssize_t i, start = 0, size = 0, ln
    cdef list out = []
    for i in range(n):
        ln = len(messages[i])
        if i + 1 < n and i - start < max_messages and size + ln < max_bytes:
            size += ln
            continue
        out.append(messages[start] if i == start else encode_merged(messages[start:i + 1]))
        start = i + 1
        size = 0
    return out


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
    # Two passes, one allocation: the first decides the batches exactly as
    # the pure twin's loop (len() of each message, the same comparisons) and
    # borrows every message's bytes, raising what the pure twin raises in
    # the order it would; the second writes all frames into one bytes.
    cdef Py_ssize_t n
    cdef Py_ssize_t i, j, start = 0, size = 0, ln, got = 0, nb = 0, body, total = 0, hdr
    cdef Py_ssize_t* ends = NULL     # ends[b]: one past the last message of batch b
    cdef Py_ssize_t* bodies = NULL   # bodies[b]: payload size of batch b's frame
    cdef _Bytes* spans = NULL
    cdef _Bytes kb
    cdef _Limit lim_n, lim_b
    cdef bint masked = mask_key is not None, random_key = False, key_checked = False
    cdef list items
    cdef bytes out, rnd
    cdef uint8_t* w
    cdef uint8_t* frame_body
    cdef const uint8_t* key
    if mask_key is not None and len(mask_key) != 4:
        raise ValueError("a WebSocket mask key is 4 bytes")
    n = len(messages)
    if n == 0:
        return b""
    _set_bound(&lim_n, max_messages)
    _set_bound(&lim_b, max_bytes)
    items = []  # holds every message while we keep pointers into it
    kb.held = False
    kb.n = 0
    kb.p = NULL
    spans = <_Bytes*>PyMem_Realloc(NULL, <size_t>n * sizeof(_Bytes))
    ends = <Py_ssize_t*>PyMem_Realloc(NULL, <size_t>n * sizeof(Py_ssize_t))
    bodies = <Py_ssize_t*>PyMem_Realloc(NULL, <size_t>n * sizeof(Py_ssize_t))
    try:
        if spans == NULL or ends == NULL or bodies == NULL:
            raise MemoryError()
        for i in range(n):
            item = messages[i]
            items.append(item)
            ln = len(item)
            if i + 1 < n and _below(i - start, &lim_n, max_messages) and _below(size + ln, &lim_b, max_bytes):
                size += ln
                continue
            # Batch messages[start:i+1], checked as encode_merged/encode_frame would.
            for j in range(start, i + 1):
                _acquire(items[j], &spans[j])
                got = j + 1
                if i > start and <uint64_t>spans[j].n > 0xFFFFFFFF:
                    raise ValueError(f"payload of {spans[j].n} bytes is over the 4 GiB bin limit")
            if i == start:
                body = spans[i].n
            else:
                body = 8 + <Py_ssize_t>grid_uint_size(<uint64_t>(i + 1 - start))
                for j in range(start, i + 1):
                    body += <Py_ssize_t>grid_bin_header_size(<uint64_t>spans[j].n) + spans[j].n
            if masked and not key_checked:
                _acquire(mask_key, &kb)
                if kb.n == 0:
                    random_key = True  # a fresh key per frame, drawn below
                elif kb.n != 4:
                    raise ValueError("a WebSocket mask key is 4 bytes")
                key_checked = True
            total += _frame_header_size(body) + (4 if masked else 0) + body
            ends[nb] = i + 1
            bodies[nb] = body
            nb += 1
            start = i + 1
            size = 0

        out = PyBytes_FromStringAndSize(NULL, total)
        w = <uint8_t*>PyBytes_AS_STRING(out)
        # Each frame below takes exactly the size counted for it above.
        start = 0
        for j in range(nb):
            i = ends[j] - 1  # the batch is messages[start:i+1]
            body = bodies[j]
            hdr = _frame_header_size(body)
            w[0] = 0x80 | WS_BINARY_OP  # FIN, binary (§1.5)
            if hdr == 2:
                w[1] = <uint8_t>body
            elif hdr == 4:
                w[1] = 126
                grid_store_be16(w + 2, <uint64_t>body)
            else:
                w[1] = 127
                grid_store_be64(w + 2, <uint64_t>body)
            key = NULL
            if masked:
                w[1] |= 0x80
            w += hdr
            if masked:
                if random_key:
                    rnd = os.urandom(4)
                    key = <const uint8_t*>PyBytes_AS_STRING(rnd)
                else:
                    key = kb.p
                memcpy(w, key, 4)
                w += 4
            frame_body = w
            if i == start:
                if body:
                    memcpy(w, spans[i].p, body)
                    w += body
            else:
                # OpMerged container (§4), as encode_merged writes it.
                w[0] = 0x97
                w[1] = 0x00
                w = grid_put_uint(w + 2, <uint64_t>(i + 1 - start))
                w[0] = 0x00
                w[1] = 0x00
                w[2] = OP_MERGED
                w[3] = 0x00
                w[4] = 0xC4
                w[5] = 0x00
                w += 6
                for ln in range(start, i + 1):
                    w = grid_put_bin_header(w, <uint64_t>spans[ln].n)
                    if spans[ln].n:
                        memcpy(w, spans[ln].p, spans[ln].n)
                        w += spans[ln].n
            if key != NULL and body:
                grid_mask_copy(frame_body, frame_body, <size_t>body, key)  # in place
            start = i + 1
        return out
    finally:
        for j in range(got):
            _release(&spans[j])
        _release(&kb)
        PyMem_Free(spans)
        PyMem_Free(ends)
        PyMem_Free(bodies)
