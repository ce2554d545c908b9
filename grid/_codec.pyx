# cython: language_level=3, annotation_typing=False
"""Compiled twin of :mod:`grid._codec_py`: grid envelopes, merged containers,
WebSocket framing, XXH3 CRC, subroute ids and the dial rule.

Same names, signatures, results and exception texts as the pure twin, which
is the reference; section numbers refer to docs/protocol.md.  What differs is
how the bytes move:

* encoders size their output first and write once into a fresh ``bytes``;
  the C entry point for the connection core leaves a payload of
  SPLIT_FRAME bytes or more where it is (a :class:`SplitFrame` of head,
  payload and trailers, its CRC computed over the parts), and
  :func:`encode_frames` copies the parts straight into the frame, masked
  in the same pass;
* decoders read straight from the caller's buffer (``bytes`` pointer or a
  ``PyBUF_SIMPLE`` view released in ``finally``), every read bounds-checked
  against the length first; only results are copied out;
* :class:`FrameParser` parses frames in place, in the caller's buffer or its
  read window (borrowed from a pool shared by all parsers for the length of
  one read), and copies only the unfinished tail of a read; a large frame
  is received straight into the bytes object it ends up as, and with
  ``split_large`` a complete frame of SPLIT_FRAME bytes or more has its
  grid payload copied out once, into the object the message carries.

The module is one compile unit; its layers live in the files it includes:
``_codec_envelope.pxi`` and ``_codec_split.pxi`` (the grid envelope),
``_codec_routing.pxi`` (hashes, subroute ids, the dial rule),
``_codec_ws.pxi`` (WebSocket framing and masking),
``_codec_ws_recv.pxi`` (what the frame parser receives into: the read-window
pool, the shared budget, large frames) and ``_codec_ws_parser.pxi`` (the
frame parser).  This file holds what they
share: imports, constants, buffer borrowing and the message CRC.

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
from cpython.list cimport PyList_GET_SIZE
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
from grid.includes.crc cimport GRID_CRC_INLINE, grid_xxh3, grid_xxh3_3

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
    "mask_key",
    "FrameParser",
    "recv_pool_stats",
    "SplitFrame",
    "LARGE_FRAME",
    "SPLIT_FRAME",
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
    RECV_SIZE = 262144          # a read window of the pool, as the pure twin's RECV_WINDOW
    RECV_KEEP = 64              # free windows the pool keeps, as the pure twin's RECV_POOL_KEEP
    ACC_KEEP = 1 << 20          # free parser buffers above this once they drain
    LARGE_FRAME_C = 262144      # LARGE_FRAME
    SPLIT_FRAME_C = 16384       # SPLIT_FRAME
    HEAD_MAX = 64               # the pure twin's _HEAD_MAX: the longest envelope head

Buffer = object  # the pure twin's alias (bytes | bytearray | memoryview), for introspection

# The pure twin's LARGE_FRAME and SPLIT_FRAME (tests/codec checks they agree).
LARGE_FRAME = LARGE_FRAME_C
SPLIT_FRAME = SPLIT_FRAME_C

# XXH3-64 from the xxhash package (§2.3), looked up once: the public hash
# functions and the streaming hash of large frames.  A message's own CRC is
# computed by _xxh3: in C when the build found the system's xxHash header.
cdef object _xxh3_64_intdigest = xxh3_64_intdigest
cdef object _xxh3_hasher = _xxh3_hasher_type  # streaming XXH3-64, for SplitFrame CRCs

# Field names and bounds of the 7-tuple (§2.1): MuxID, Seq, DeadlineMS,
# Handler, Op, Flags.  The Python ints are for error texts.
cdef tuple _FIELD_NAMES = ("MuxID", "Seq", "DeadlineMS", "Handler", "Op", "Flags")
cdef uint64_t[6] _FIELD_MAX_C = [MAX_UINT64, MAX_UINT32, MAX_DEADLINE_MS, 0xFF, 0xFF, 0xFF]
cdef tuple _FIELD_MAX = (MAX_UINT64, MAX_UINT32, MAX_DEADLINE_MS, 0xFF, 0xFF, 0xFF)
cdef object _U64_MAX = MAX_UINT64
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


cdef uint64_t _xxh3_parts(const uint8_t* a, Py_ssize_t an, const uint8_t* b, Py_ssize_t bn,
                          const uint8_t* c, Py_ssize_t cn) except? 0:
    """XXH3-64 of a[0:an] + b[0:bn] + c[0:cn] without joining them (the
    caller keeps all three alive during the call): the CRC of a message
    whose envelope head, payload and subroute id lie apart."""
    cdef uint64_t h
    cdef _Span span
    if not GRID_CRC_INLINE:
        hasher = _xxh3_hasher()
        span = _Span()
        span.p = a
        span.n = an
        hasher.update(span)
        span.p = b
        span.n = bn
        hasher.update(span)
        span.p = c
        span.n = cn
        hasher.update(span)
        return hasher.intdigest()
    if bn >= LARGE_MESSAGE:
        with nogil:
            h = grid_xxh3_3(a, <size_t>an, b, <size_t>bn, c, <size_t>cn)
        return h
    return grid_xxh3_3(a, <size_t>an, b, <size_t>bn, c, <size_t>cn)


# The layers, in one compile unit (the module grid._codec).
include "_codec_envelope.pxi"
include "_codec_split.pxi"
include "_codec_routing.pxi"
include "_codec_ws.pxi"
include "_codec_ws_recv.pxi"
include "_codec_ws_parser.pxi"
