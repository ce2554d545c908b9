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
  own fixed read window, and copies only the unfinished tail of a read; a
  large frame is received straight into the bytes object it ends up as.

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
from cpython.memoryview cimport PyMemoryView_FromObject
from cpython.number cimport PyNumber_Index
from cpython.object cimport Py_TYPE
from cpython.pyport cimport PY_SSIZE_T_MAX
from cpython.tuple cimport PyTuple_GET_SIZE
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t, UINT64_MAX
from libc.string cimport memcpy, memmove

from grid.includes.wire cimport (
    grid_bin_header_size, grid_load_be, grid_load_be16, grid_load_be32, grid_load_be64,
    grid_load_le32, grid_mask_copy, grid_negative, grid_put_bin_header, grid_put_uint,
    grid_sign_bit, grid_store_be16, grid_store_be64, grid_store_le32, grid_uint_size, grid_ws_need,
)
from grid.includes.crc cimport GRID_CRC_INLINE, grid_xxh3

import hashlib
import inspect as _inspect
import os

from xxhash import xxh3_64 as _xxh3_hasher_type
from xxhash import xxh3_64_intdigest

from grid import _consts
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


cdef extern from "Python.h":
    # PyObject_GetBuffer without Cython's automatic raise: a refusal is turned
    # into the pure twin's exception by the caller.
    int _get_buffer_or_fail "PyObject_GetBuffer" (object obj, Py_buffer* view, int flags)
    object PyUnicode_FromFormat(const char* fmt, ...)


# The wire constants (FLAG_*, OP_*, WS_*, SUBROUTE_LEN, LARGE_MESSAGE, ...) as
# C values, generated from grid/_consts.py by tools/gen_consts.py.
include "_consts.pxi"

# A build older than grid/_consts.py refuses to load.
if (_consts.FLAG_CRC, _consts.FLAG_PAYLOAD_IS_ZERO, _consts.FLAG_SUBROUTE, int(_consts.Op.MERGED),
        _consts.SUBROUTE_LEN, _consts.CRC_LEN, _consts.WS_CONTINUATION, _consts.WS_BINARY,
        _consts.LARGE_MESSAGE, _consts.DEFAULT_MAX_MESSAGE_SIZE, _consts.MERGE_MAX_MESSAGES,
        _consts.MERGE_MAX_BYTES) != (
        FLAG_CRC, FLAG_PAYLOAD_IS_ZERO, FLAG_SUBROUTE, OP_MERGED, SUBROUTE_LEN, CRC_LEN,
        WS_CONTINUATION, WS_BINARY, LARGE_MESSAGE, DEFAULT_MAX_MESSAGE_SIZE, MERGE_MAX_MESSAGES,
        MERGE_MAX_BYTES):
    raise ImportError("grid._codec was built against other wire constants than grid._consts")

# The codec's own sizes.
cdef enum:
    RECV_SIZE = 262144          # FrameParser's read window, as the pure twin's
    ACC_KEEP = 1 << 20          # free parser buffers above this once they drain
    LARGE_FRAME_C = 262144      # LARGE_FRAME
    HEAD_MAX = 64               # the pure twin's _HEAD_MAX: the longest envelope head

Buffer = object  # the pure twin's alias (bytes | bytearray | memoryview), for introspection

# The pure twin's LARGE_FRAME (tests/test_large_frames.py checks they agree).
LARGE_FRAME = LARGE_FRAME_C

# XXH3-64 from the xxhash package (§2.3), looked up once: the public hash
# functions and the streaming hash of large frames.  A message's own CRC is
# computed by _xxh3: in C when the build found the system's xxHash header.
cdef object _xxh3_64_intdigest = xxh3_64_intdigest
cdef object _xxh3_hasher = _xxh3_hasher_type  # streaming XXH3-64, for SplitFrame CRCs

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

    The xxhash package reads a borrowed range through one, without a copy
    and without a memoryview: FrameParser's streaming hash of a large frame,
    and message CRCs in a build without the xxHash header.  It is pointed at
    a range right before the call; xxhash acquires its Py_buffer first thing
    in the call and releases it before returning, and the range outlives the
    call, so nothing can observe a stale range.
    """
    cdef const uint8_t* p
    cdef Py_ssize_t n

    def __getbuffer__(self, Py_buffer* view, int flags):
        PyBuffer_FillInfo(view, self, <void*>self.p, self.n, 1, flags)

    def __releasebuffer__(self, Py_buffer* view):
        pass


# Where message CRCs come from: "xxh3-inline" (the system's xxHash header,
# compiled in) or "xxhash-package" (the build found no header).
CRC_BACKEND = "xxh3-inline" if GRID_CRC_INLINE else "xxhash-package"


cdef uint64_t _xxh3(const uint8_t* p, Py_ssize_t n) except? 0:
    """XXH3-64 of p[0:n], which the caller keeps alive during the call; a
    large input is hashed with the GIL released (as the xxhash package does)."""
    cdef uint64_t h
    cdef _Span span
    if not GRID_CRC_INLINE:
        span = _Span()
        span.p = p
        span.n = n
        return _xxh3_64_intdigest(span)
    if n >= LARGE_MESSAGE:
        with nogil:
            h = grid_xxh3(p, <size_t>n)
        return h
    return grid_xxh3(p, <size_t>n)


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


cdef Py_ssize_t _envelope_size(const uint64_t* v, object payload, object subroute,
                               _Bytes* pb, _Bytes* sb) except -1:
    """Borrow payload and subroute into pb / sb (the caller releases both,
    also on error) and return the encoded message's size.  Checks in the
    pure twin's order: payload (type, 4 GiB), then the subroute rules."""
    cdef Py_ssize_t size
    cdef uint64_t flags = v[5]
    cdef int i
    if payload is not None:
        _acquire(payload, pb)
        if <uint64_t>pb.n > 0xFFFFFFFF:
            raise ValueError(f"payload of {pb.n} bytes is over the 4 GiB bin limit")
    if flags & FLAG_SUBROUTE:
        if subroute is None:
            raise ValueError(_NEED_SUBROUTE)
        _acquire(subroute, sb)
        if sb.n != SUBROUTE_LEN:
            raise ValueError(_NEED_SUBROUTE)
    elif subroute is not None:
        raise ValueError("a subroute id needs FlagSubroute in flags")
    size = 1 + <Py_ssize_t>grid_bin_header_size(<uint64_t>pb.n) + pb.n + sb.n
    for i in range(6):
        size += <Py_ssize_t>grid_uint_size(v[i])
    if flags & FLAG_CRC:
        size += CRC_LEN
    return size


cdef uint8_t* _write_head(uint8_t* w, const uint64_t* v, Py_ssize_t payload_len) noexcept nogil:
    """The 7-tuple up to the payload bin's header; returns where the payload goes."""
    cdef int i
    w[0] = 0x97
    w += 1
    for i in range(6):
        w = grid_put_uint(w, v[i])
    return grid_put_bin_header(w, <uint64_t>payload_len)


cdef int _write_envelope(uint8_t* start, const uint64_t* v, _Bytes* pb, _Bytes* sb) except -1:
    """Write the message whose size _envelope_size() gave at ``start``.  A
    payload of LARGE_MESSAGE bytes or more is copied with the GIL released
    (its owner is immutable bytes or a held buffer view)."""
    cdef uint8_t* w = _write_head(start, v, pb.n)
    if pb.n >= LARGE_MESSAGE:
        with nogil:
            memcpy(w, pb.p, <size_t>pb.n)
    elif pb.n:
        memcpy(w, pb.p, <size_t>pb.n)
    w += pb.n
    if sb.n:
        memcpy(w, sb.p, SUBROUTE_LEN)
        w += SUBROUTE_LEN
    if v[5] & FLAG_CRC:
        # §2.2: XXH3 over everything before, low 32 bits little-endian.
        grid_store_le32(w, <uint32_t>_xxh3(start, w - start))
    return 0


cdef bytes _encode(const uint64_t* v, object payload, object subroute):
    cdef _Bytes pb, sb
    cdef bytes out
    pb.held = sb.held = False
    pb.n = sb.n = 0
    pb.p = sb.p = NULL
    try:
        out = PyBytes_FromStringAndSize(NULL, _envelope_size(v, payload, subroute, &pb, &sb))
        _write_envelope(<uint8_t*>PyBytes_AS_STRING(out), v, &pb, &sb)
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
    _fields(v, mux_id, seq, deadline_ms, handler, op, flags)
    return _encode(v, payload, subroute)


cdef int _fields(uint64_t* v, object mux_id, object seq, object deadline_ms, object handler,
                 object op, object flags) except -1:
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
    return 0


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
    cdef uint64_t v[6]
    cdef _Bytes pb, sb, kb
    cdef Py_ssize_t size, hdr
    cdef bytes out
    cdef uint8_t* w
    cdef const uint8_t* key = NULL
    _fields(v, mux_id, seq, deadline_ms, handler, op, flags)
    pb.held = sb.held = kb.held = False
    pb.n = sb.n = kb.n = 0
    pb.p = sb.p = kb.p = NULL
    try:
        size = _envelope_size(v, payload, subroute, &pb, &sb)
        if mask_key is not None:
            mask_key = _mask_key(mask_key, &kb)  # kept alive: kb borrows from it
            key = kb.p
        hdr = _frame_header_size(size)
        out = PyBytes_FromStringAndSize(NULL, hdr + (4 if key != NULL else 0) + size)
        w = _put_frame_header(<uint8_t*>PyBytes_AS_STRING(out), 0x80 | WS_BINARY, size,
                              key != NULL)
        if key != NULL:
            memcpy(w, key, 4)
            w += 4
        _write_envelope(w, v, &pb, &sb)
        if key != NULL:
            with nogil:
                grid_mask_copy(w, w, <size_t>size, key)  # in place
        return out
    finally:
        _release(&pb)
        _release(&sb)
        _release(&kb)


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
        actual = <uint32_t>_xxh3(p, end)
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


# ---------------------------------------------------------------- split frames


@cython.annotation_typing(False)
def _split_signature(head: Buffer, payload: Buffer, tail: Buffer) -> None:
    pass


cdef bytes _owned(object data):
    """The pure twin's _bytes(): exact bytes as they are, other buffers copied."""
    if PyBytes_CheckExact(data):
        return <bytes>data
    return bytes(_flat_view(data))


@cython.final
cdef class SplitFrame:
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

    __signature__ = _inspect.signature(_split_signature)

    def __init__(self, head: Buffer, payload: Buffer, tail: Buffer) -> None:
        self.head = _owned(head)
        self.payload = _owned(payload)
        self.tail = _owned(tail)

    def __bytes__(self) -> bytes:
        return self.head + self.payload + self.tail

    def __len__(self) -> int:
        return len(self.head) + len(self.payload) + len(self.tail)

    def __eq__(self, other: object) -> bool:
        parts = _split_parts(other)
        if parts is None:
            return NotImplemented
        return (self.head, self.payload, self.tail) == parts

    __hash__ = None  # as Message: compared by value, not hashed

    def __repr__(self) -> str:
        return (f"SplitFrame(head={self.head!r}, payload=<{len(self.payload)} bytes>, "
                f"tail={self.tail!r})")


del _split_signature

# Module names of the two SplitFrame classes; each twin accepts both.
cdef tuple _SPLIT_MODULES = ("grid._codec", "grid._codec_py")


cdef tuple _split_parts(object data):
    """(head, payload, tail) of a SplitFrame of either twin, else None."""
    cdef SplitFrame s
    cdef object cls = type(data)
    if cls is SplitFrame:
        s = <SplitFrame>data
        return (s.head, s.payload, s.tail)
    if cls.__name__ == "SplitFrame" and cls.__module__ in _SPLIT_MODULES:
        return (data.head, data.payload, data.tail)
    return None


cdef enum:
    # _probe_tuple verdicts (the pure twin's _MORE, _NO, _OK)
    _PROBE_MORE = 0
    _PROBE_NO = 1
    _PROBE_OK = 2


cdef int _probe_tuple(const uint8_t* p, Py_ssize_t n, _Tuple* t, uint64_t* length) noexcept:
    """The pure twin's _probe_head(): read the envelope head at p[0:n] (the
    7-tuple up to its payload's bin header) without needing the payload:
    _PROBE_OK with t.f, t.start (where the payload starts) and length[0]
    (its announced size) set; _PROBE_MORE when p[0:n] ends inside the head;
    _PROBE_NO when it is no head that _decode_tuple would accept."""
    cdef Py_ssize_t pos
    cdef int b, i, size, hdr
    cdef uint64_t raw
    if n < 1:
        return _PROBE_MORE
    b = p[0]
    if b == 0x97:
        pos = 1
    elif b == 0xDC or b == 0xDD:
        pos = 3 if b == 0xDC else 5
        if n < pos:
            return _PROBE_MORE
        if (grid_load_be16(p + 1) if b == 0xDC else grid_load_be32(p + 1)) != 7:
            return _PROBE_NO
    else:
        return _PROBE_NO
    for i in range(6):
        if pos >= n:
            return _PROBE_MORE
        b = p[pos]
        if b < 0x80:
            t.f[i] = <uint64_t>b
            pos += 1
            continue
        if b < 0xCC or b > 0xD3:
            return _PROBE_NO
        size = 1 << ((b - 0xCC) & 3)
        if n - pos - 1 < size:
            return _PROBE_MORE
        raw = grid_load_be(p + pos + 1, size)  # size bytes, present by the test above
        if (b >= 0xD0 and grid_sign_bit(raw, size)) or raw > _FIELD_MAX_C[i]:
            return _PROBE_NO
        t.f[i] = raw
        pos += 1 + size
    if pos >= n:
        return _PROBE_MORE
    b = p[pos]
    hdr = 2 if b == 0xC4 else (3 if b == 0xC5 else (5 if b == 0xC6 else 0))
    if hdr == 0:
        return _PROBE_NO
    if n - pos < hdr:
        return _PROBE_MORE
    t.start = pos + hdr
    length[0] = grid_load_be(p + pos + 1, hdr - 1)
    return _PROBE_OK


cdef int _split_point(const uint8_t* first, Py_ssize_t n, uint64_t flen, Py_ssize_t* head_len,
                      uint64_t* size) noexcept:
    """The pure twin's _split_point(): where FrameParser splits a frame
    payload of ``flen`` bytes that starts with first[0:n] (unmasked)."""
    cdef _Tuple t
    cdef uint64_t length
    cdef int verdict = _probe_tuple(first, n, &t, &length)
    if verdict != _PROBE_OK:
        return verdict
    if (t.f[4] == OP_MERGED or <uint64_t>t.start > flen or length > flen - <uint64_t>t.start
            or flen - <uint64_t>t.start - length > SPLIT_TAIL_MAX):
        return _PROBE_NO
    head_len[0] = t.start
    size[0] = length
    return _PROBE_OK


cdef object _known_crc(object data):
    """The CRC FrameParser computed for a SplitFrame it made, else None."""
    if type(data) is SplitFrame and (<SplitFrame>data)._crc_known:
        return (<SplitFrame>data)._crc
    return None


cdef Message _decode_split(bytes head, bytes payload, bytes tail, object known_crc=None):
    """The pure twin's _decode_split(): decode_message() of the joined parts
    without joining them, when ``head`` is exactly the envelope up to the
    payload (as FrameParser splits); None otherwise."""
    cdef _Tuple t
    cdef uint64_t length, flags
    cdef Py_ssize_t end = PyBytes_GET_SIZE(tail)  # the bytes after the tuple are all in the tail
    cdef Py_ssize_t pn = PyBytes_GET_SIZE(payload)
    cdef const uint8_t* tp = <const uint8_t*>PyBytes_AS_STRING(tail)
    cdef uint32_t given, actual
    cdef Message m
    if (_probe_tuple(<const uint8_t*>PyBytes_AS_STRING(head), PyBytes_GET_SIZE(head), &t, &length)
            != _PROBE_OK or t.start != PyBytes_GET_SIZE(head) or length != <uint64_t>pn
            or t.f[4] == OP_MERGED):
        return None
    flags = t.f[5]
    if flags & FLAG_CRC:
        if end < CRC_LEN:
            raise ProtocolError(f"want crc len 4, got {end}")
        end -= CRC_LEN
        given = grid_load_le32(tp + end)  # the 4 bytes after `end`, checked above
        if known_crc is not None:  # computed by FrameParser as the bytes arrived
            actual = <uint32_t>known_crc
        else:
            h = _xxh3_hasher()
            h.update(head)
            h.update(payload)
            h.update(tail[:end])
            actual = <uint32_t>(h.intdigest() & 0xFFFFFFFF)
        if given != actual:
            raise ProtocolError(f"crc mismatch: 0x{given:08x} (given) != 0x{actual:08x} (bytes)")
    m = Message.__new__(Message)
    if flags & FLAG_SUBROUTE:
        if end < SUBROUTE_LEN:
            raise ProtocolError(f"want subroute len 32, got {end}")
        end -= SUBROUTE_LEN
        m.subroute = PyBytes_FromStringAndSize(<const char*>tp + end, SUBROUTE_LEN)
    m.mux_id = t.f[0]
    m.seq = t.f[1]
    m.deadline_ms = t.f[2]
    m.handler = t.f[3]
    m.op = t.f[4]
    m.flags = flags
    if pn or flags & FLAG_PAYLOAD_IS_ZERO:
        m.payload = payload  # the frame's own object: no copy
    return m


def decode_message(data: Buffer | SplitFrame) -> Message:
    """Decode one grid message, verifying its CRC and cutting its subroute id.

    Also takes a :class:`SplitFrame`: the result is the joined bytes' one,
    with the frame's own ``payload`` object as the message payload.
    Raises :class:`grid.ProtocolError` naming what was wrong.
    """
    cdef _Bytes b
    cdef tuple parts
    cdef Message m
    if PyBytes_CheckExact(data):
        return decode_message_ptr(<const uint8_t*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
    parts = _split_parts(data)
    if parts is not None:
        m = _decode_split(parts[0], parts[1], parts[2], _known_crc(data))
        if m is not None:
            return m
        data = b"".join(parts)
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


def decode_messages(data: Buffer | SplitFrame) -> list[Message]:
    """Decode one WebSocket message's worth of grid data: a plain message comes
    back as a one-element list, a merged container as its inner messages.
    A :class:`SplitFrame` decodes as its joined bytes would, without the join."""
    cdef _Bytes b
    cdef tuple parts
    cdef Message m
    if PyBytes_CheckExact(data):
        return decode_messages_ptr(<const uint8_t*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
    parts = _split_parts(data)
    if parts is not None:
        m = _decode_split(parts[0], parts[1], parts[2], _known_crc(data))
        if m is not None:
            return [m]
        data = b"".join(parts)
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


cdef object _mask_key(object mask_key, _Bytes* kb):
    """Borrow a client mask key into ``kb`` (the caller releases it): a fresh
    random one for ``b""``, else exactly 4 bytes.  Returns the object ``kb``
    borrows from, which the caller must keep."""
    _acquire(mask_key, kb)
    if kb.n == 0:
        _release(kb)
        mask_key = os.urandom(4)
        _acquire(mask_key, kb)
    if kb.n != 4:
        raise ValueError("a WebSocket mask key is 4 bytes")
    return mask_key


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
    cdef uint8_t first
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
        hdr = _frame_header_size(pb.n)
        if mask_key is not None:
            mask_key = _mask_key(mask_key, &kb)  # kept alive: kb borrows from it
        out = PyBytes_FromStringAndSize(NULL, hdr + kb.n + pb.n)
        w = _put_frame_header(<uint8_t*>PyBytes_AS_STRING(out), first, pb.n, kb.n != 0)
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
def _parser_signature(server: bool, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE, *,
                      split_large: bool = False) -> None:
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


cdef inline void _mask_at(uint8_t* dst, const uint8_t* src, Py_ssize_t n, const uint8_t* key,
                          Py_ssize_t phase) noexcept:
    """dst[0:n] = src[0:n] unmasked with ``key`` (if not NULL) as it applies
    from payload offset ``phase`` on; dst == src is fine."""
    cdef uint8_t rk[4]
    cdef int i
    if n <= 0:
        return
    if key == NULL:
        if dst != src:
            memcpy(dst, src, <size_t>n)
        return
    for i in range(4):
        rk[i] = key[(phase + i) & 3]
    grid_mask_copy(dst, src, <size_t>n, rk)


cdef object _split_whole(const uint8_t* src, Py_ssize_t n, const uint8_t* key):
    """A complete large frame's event payload under split_large: the pure
    twin's FrameParser._whole_large().  n >= LARGE_FRAME_C > HEAD_MAX."""
    cdef uint8_t first[HEAD_MAX]
    cdef Py_ssize_t head_len = 0
    cdef uint64_t size = 0
    cdef SplitFrame s
    cdef bytes part
    _mask_at(first, src, HEAD_MAX, key, 0)
    if _split_point(first, HEAD_MAX, <uint64_t>n, &head_len, &size) != _PROBE_OK:
        return _payload(src, n, key)
    s = SplitFrame.__new__(SplitFrame)
    s.head = PyBytes_FromStringAndSize(<const char*>first, head_len)
    part = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>size)
    _mask_at(<uint8_t*>PyBytes_AS_STRING(part), src + head_len, <Py_ssize_t>size, key, head_len)
    s.payload = part
    head_len += <Py_ssize_t>size  # where the tail starts
    part = PyBytes_FromStringAndSize(NULL, n - head_len)
    _mask_at(<uint8_t*>PyBytes_AS_STRING(part), src + head_len, n - head_len, key, head_len)
    s.tail = part
    return s


@cython.final
cdef class _Fill:
    """A writable buffer exporter for the unfilled part of a large frame's
    buffer, which FrameParser.get_buffer() hands out as a memoryview.  It
    holds a reference to that bytes object, so the memory stays valid for as
    long as any view of it exists, even if the parser lets go of the frame
    (fails, completes) in the meantime."""
    cdef object owner
    cdef uint8_t* p
    cdef Py_ssize_t n

    def __getbuffer__(self, Py_buffer* view, int flags):
        PyBuffer_FillInfo(view, self, <void*>self.p, self.n, 0, flags)

    def __releasebuffer__(self, Py_buffer* view):
        pass


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

    # Input is parsed where it lies: in the bytes given to feed(), or in the
    # fixed 256 KiB window that get_buffer() hands out (uvloop/asyncio read
    # into it directly).  Only the unfinished frame at the end of a read is
    # copied, into _acc; the next read first tops _acc up to exactly one
    # frame (never more), then parsing continues in place again.  The window
    # never moves or shrinks, so a memoryview of it stays valid, like the
    # pure twin's bytearray; payloads are copied out as bytes, so events
    # never alias it.
    #
    # A large frame (see _parse) is the exception: once its header is in,
    # its payload (or, split, the grid payload inside it) gets its final
    # bytes object at once, and every later read lands there: copied (and
    # unmasked) from the input, or read straight into it through the view
    # get_buffer() hands out and unmasked in place by buffer_updated().
    # The finished frame's event is that object itself.

    __signature__ = _inspect.signature(_parser_signature)

    def __cinit__(self):
        self._frag_op = -1
        self._big_op = -1
        self._limit_kind = _LIMIT_C
        # Here rather than in __init__: buffer_updated() dereferences it, so
        # it must exist even on an instance made with __new__ alone.
        self._recv = bytearray(RECV_SIZE)

    def __init__(self, server: bool, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE, *,
                 split_large: bool = False) -> None:
        if max_message_size < 0:
            raise ValueError("max_message_size must be >= 0")
        self._server = server
        self._is_server = server
        self._split_large = split_large
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

    @property
    def split_large(self):
        """Deliver large one-message frames as SplitFrame (see the class docstring)."""
        return self._split_large

    @split_large.setter
    def split_large(self, value):
        self._split_large = value

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
        self._big_clear()
        return 0

    cdef int _big_clear(self) except -1:
        self._drop_view()
        self._big = None
        self._big_ptr = NULL
        self._big_len = 0
        self._big_op = -1
        self._flen = self._fgot = self._head_len = 0
        self._head = None
        self._hasher = None
        self._hashed = 0
        return 0

    cdef int _drop_view(self) except -1:
        cdef object view = self._view
        if view is not None:
            self._view = None
            try:
                view.release()
            except BufferError:
                pass  # still exported (a read in progress); _Fill keeps its memory valid
        return 0

    cdef object _fail(self, str text):
        self._failed = text
        self._release_buffers()
        return ProtocolError(text)

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """A writable buffer for ``asyncio.BufferedProtocol.get_buffer``: the
        unfilled part of a large frame's buffer while one is incomplete, else
        a 256 KiB read window."""
        cdef _Fill fill
        cdef Py_ssize_t end
        self._drop_view()
        if self._big_op >= 0:
            end = self._head_len + self._big_len
            if self._fgot < end:
                fill = _Fill.__new__(_Fill)
                fill.owner = self._big
                fill.p = self._big_ptr + (self._fgot - self._head_len)
                fill.n = end - self._fgot
                self._view = PyMemoryView_FromObject(fill)
                return self._view
            return memoryview(self._recv)[:self._flen - self._fgot]
        return memoryview(self._recv)

    def buffer_updated(self, nbytes: int) -> list[tuple[int, bytes | SplitFrame]]:
        """Parse the ``nbytes`` just written into :meth:`get_buffer`'s buffer."""
        return self._updated(nbytes)

    def feed(self, data: Buffer) -> list[tuple[int, bytes | SplitFrame]]:
        """Add received bytes; return the events they complete."""
        return self._feed(data)

    cdef list _updated(self, object nbytes):
        cdef int overflow = 0
        cdef long long x = -1
        cdef Py_ssize_t k
        # A current view of _big (get_buffer handed it out; the frame has
        # not moved since): the bytes are already in place.
        cdef bint in_place = self._view is not None
        cdef Py_ssize_t limit = (self._head_len + self._big_len - self._fgot) if in_place else RECV_SIZE
        if PyLong_Check(nbytes):
            x = PyLong_AsLongLongAndOverflow(nbytes, &overflow)
            if overflow or not 0 <= x <= limit:
                raise ValueError(f"nbytes {nbytes} is outside the buffer")
            k = <Py_ssize_t>x
        else:
            # Not an int: the pure twin's own steps, for its exact behaviour.
            if not 0 <= nbytes <= limit:
                raise ValueError(f"nbytes {nbytes} is outside the buffer")
            window = slice(None, nbytes)  # a generic slice, not Cython's C-index one
            k = len((self._view if in_place else memoryview(self._recv))[window])
        if self._failed is not None:
            raise ProtocolError(f"parser failed earlier: {self._failed}")
        if in_place:
            return self._process(NULL, k)  # 0 <= k <= what the frame still needs in _big
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
            self._drop_view()  # the frame moves on: a view handed out earlier is stale
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
        if data == NULL:
            # buffer_updated() into the view of _big that get_buffer() handed
            # out: the n bytes are in place at the frame's fill position.
            _mask_at(self._big_ptr + (self._fgot - self._head_len),
                     self._big_ptr + (self._fgot - self._head_len), n,
                     self._big_key if self._big_masked else NULL, self._fgot)
            self._fgot += n
            if self._hasher is not None:
                self._hash_filled()
            if self._fgot == self._flen:
                events.append(self._big_event())
            return events
        while True:
            if self._big_op >= 0:
                # A large frame in progress takes what it still needs first;
                # whatever follows it in this input is parsed as usual.
                ip += self._big_take(data + ip, n - ip)
                if self._fgot < self._flen:
                    return events
                events.append(self._big_event())
            if self._acc_len > 0 and self._top_up(data, n, &ip, events):
                continue  # _acc held the start of a large frame: the rest is its
            break
        if ip == n:
            return events
        if self._acc_len == 0:
            # The common case: whole frames straight from the input (the last
            # one may be a large frame that takes all the rest).
            ip += self._parse(data + ip, n - ip, events)
            if ip < n:
                _reserve(&self._acc, &self._acc_cap, n - ip)
                memcpy(self._acc, data + ip, <size_t>(n - ip))
                self._acc_len = n - ip
        else:
            # Unreachable while _acc_need() and _parse() agree; if they
            # ever did not, fall back to the pure twin's way: append all,
            # parse all, keep the rest.
            _reserve(&self._acc, &self._acc_cap, self._acc_len + (n - ip))
            memcpy(self._acc + self._acc_len, data + ip, <size_t>(n - ip))
            self._acc_len += n - ip
            used = self._parse(self._acc, self._acc_len, events)
            memmove(self._acc, self._acc + used, <size_t>(self._acc_len - used))
            self._acc_len -= used
        return events

    cdef bint _top_up(self, const uint8_t* data, Py_ssize_t n, Py_ssize_t* ipp,
                      list events) except -1:
        """Finish the frame pending in _acc from data[ipp[0]:n], advancing
        ipp[0]; True if that started a large frame (which then holds all of
        _acc and wants the rest of the input first)."""
        cdef Py_ssize_t used
        cdef uint64_t need, take
        # Top the pending frame up from the new input, never past its end
        # (_acc_need() is exactly what _parse waits for), and re-parse it
        # with everything known so far, as the pure twin re-parses its
        # buffer: a violation shows on the same byte in both.
        while True:
            need = self._acc_need()
            take = 0
            if need > <uint64_t>self._acc_len:
                take = need - <uint64_t>self._acc_len
                if take > <uint64_t>(n - ipp[0]):
                    take = <uint64_t>(n - ipp[0])
            if take:
                _reserve(&self._acc, &self._acc_cap, self._acc_len + <Py_ssize_t>take)
                memcpy(self._acc + self._acc_len, data + ipp[0], <size_t>take)
                self._acc_len += <Py_ssize_t>take
                ipp[0] += <Py_ssize_t>take
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
            if ipp[0] == n or take == 0:
                break
        return self._big_op >= 0

    cdef uint64_t _acc_need(self):
        """grid_ws_need() for the frame pending in _acc, except that a large
        frame (see _parse) is wanted only up to the end of its header, plus
        HEAD_MAX payload bytes under split_large: the rest goes straight to
        its final buffer."""
        cdef const uint8_t* p = self._acc
        cdef uint64_t need = grid_ws_need(p, <size_t>self._acc_len)
        cdef uint64_t hdr
        if (self._acc_len < 10 or self._frag_op >= 0 or not (p[0] & 0x80)
                or (p[0] & 0x0F) not in (1, 2) or (p[1] & 0x7F) != 127):
            return need  # large frames have the 64-bit length form
        hdr = 14 if p[1] & 0x80 else 10
        if need - hdr < LARGE_FRAME_C:
            return need
        return hdr + (HEAD_MAX if self._split_large else 0)

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
                # An incomplete unfragmented data frame of LARGE_FRAME or
                # more whose header is in: receive it into its final buffer
                # from here on (it takes all the rest of buf).
                if (avail >= hdr and fin and not control and opcode != WS_CONTINUATION
                        and length >= LARGE_FRAME_C
                        and self._begin_large(buf + pos + hdr, avail - hdr, opcode, length, masked)):
                    pos = n
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
                if self._split_large and length >= LARGE_FRAME_C:
                    events.append((opcode, _split_whole(buf + start, <Py_ssize_t>length, key)))
                else:
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

    # -- large frames

    cdef int _begin_large(self, const uint8_t* payload, Py_ssize_t have, int opcode, uint64_t length,
                          bint masked) except -1:
        """Start receiving the data frame whose payload begins at
        payload[0:have] (have < length; the mask key, if any, is the 4 bytes
        before it) into its final buffer: 1 when started, 0 when
        split_large first needs more of the envelope head."""
        cdef uint8_t first[HEAD_MAX]
        cdef Py_ssize_t nfirst, head_len = 0
        cdef uint64_t size = length
        cdef const uint8_t* key = payload - 4 if masked else NULL
        cdef object head = None
        cdef bytes big
        cdef _Tuple t
        cdef uint64_t announced
        if self._split_large:
            nfirst = have if have < HEAD_MAX else HEAD_MAX
            _mask_at(first, payload, nfirst, key, 0)
            verdict = _split_point(first, nfirst, length, &head_len, &size)
            if verdict == _PROBE_MORE:
                return 0
            if verdict == _PROBE_OK:
                head = PyBytes_FromStringAndSize(<const char*>first, head_len)
                _probe_tuple(first, nfirst, &t, &announced)  # OK, as _split_point found
                if t.f[5] & FLAG_CRC:
                    # Hash as the bytes arrive: the CRC check at the end costs nothing.
                    self._hasher = _xxh3_hasher()
                    self._hasher.update(head)
                    self._hashed = 0
            else:
                head_len = 0
                size = length
        if size > <uint64_t>(PY_SSIZE_T_MAX - 64):
            raise MemoryError()  # as the pure twin's bytearray(size) (no OverflowError)
        big = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>size)
        self._big = big
        self._big_ptr = <uint8_t*>PyBytes_AS_STRING(big)
        self._big_len = <Py_ssize_t>size
        self._big_op = opcode
        self._flen = <Py_ssize_t>length  # < 2**63, checked by _parse
        self._fgot = self._head_len = head_len
        self._head = head
        self._big_masked = masked
        if masked:
            memcpy(self._big_key, key, 4)
        self._big_take(payload + head_len, have - head_len)
        return 1

    cdef Py_ssize_t _big_take(self, const uint8_t* src, Py_ssize_t n) except -1:
        """Add what of src[0:n] the large frame still needs (still masked);
        return how many bytes that took."""
        cdef Py_ssize_t k = self._flen - self._fgot, m, end = self._head_len + self._big_len
        cdef const uint8_t* key = self._big_key if self._big_masked else NULL
        if k > n:
            k = n
        n = k
        if self._fgot < end:
            m = end - self._fgot
            if m > k:
                m = k
            _mask_at(self._big_ptr + (self._fgot - self._head_len), src, m, key, self._fgot)
            self._fgot += m
            src += m
            k -= m
            if self._hasher is not None:
                self._hash_filled()
        if k:
            # Split only: the tail, at most SPLIT_TAIL_MAX bytes (_split_point).
            _mask_at(self._tail + (self._fgot - end), src, k, key, self._fgot)
            self._fgot += k
        return n

    cdef int _hash_filled(self) except -1:
        """Feed the payload bytes received since the last call to _hasher."""
        cdef Py_ssize_t filled = self._fgot - self._head_len
        cdef _Span span
        if filled > self._big_len:
            filled = self._big_len
        if filled > self._hashed:
            span = _Span()
            span.p = self._big_ptr + self._hashed
            span.n = filled - self._hashed
            self._hasher.update(span)
            self._hashed = filled
        return 0

    cdef tuple _big_event(self):
        """The completed large frame's event; the parser lets go of it."""
        cdef SplitFrame s
        cdef object payload = self._big
        cdef int op = self._big_op
        cdef Py_ssize_t ntail
        if self._head is not None:
            s = SplitFrame.__new__(SplitFrame)
            s.head = self._head
            s.payload = payload
            ntail = self._flen - self._head_len - self._big_len
            s.tail = PyBytes_FromStringAndSize(<const char*>self._tail, ntail)
            if self._hasher is not None and ntail >= CRC_LEN and self._hashed == self._big_len:
                self._hasher.update(s.tail[:ntail - CRC_LEN])
                s._crc = <uint32_t>(self._hasher.intdigest() & 0xFFFFFFFF)
                s._crc_known = True
            payload = s
        self._big_clear()
        return (op, payload)


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


cdef uint8_t* _put_frame_header(uint8_t* w, uint8_t first, Py_ssize_t body,
                               bint masked) noexcept:
    """A frame header: ``first`` (FIN and opcode), then the length of a
    ``body``-byte payload with the MASK bit set if ``masked`` (the key itself
    is the caller's); returns where the key or the payload goes."""
    cdef Py_ssize_t hdr = _frame_header_size(body)
    w[0] = first
    if hdr == 2:
        w[1] = <uint8_t>body
    elif hdr == 4:
        w[1] = 126
        grid_store_be16(w + 2, <uint64_t>body)
    else:
        w[1] = 127
        grid_store_be64(w + 2, <uint64_t>body)
    if masked:
        w[1] |= 0x80
    return w + hdr


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
            w = _put_frame_header(w, 0x80 | WS_BINARY, body, masked)  # FIN, binary (§1.5)
            key = NULL
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
