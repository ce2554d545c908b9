# cython: language_level=3, annotation_typing=False
"""Compiled twin of :mod:`grid._struct_py`: a dataclass payload straight to
msgpack bytes and back, without the intermediate dict of the generated codec.

Same names, signatures, results and exception texts as the pure twin, which
is the reference (read its docstring for what a StructCodec handles and what
it hands to its fallback).  How the bytes move:

* ``encode`` writes into a stack buffer (moved to the heap if it outgrows
  it) and copies the result into a fresh ``bytes`` once;
* ``decode`` reads straight from the ``bytes`` it is given; every raw read
  is preceded by an explicit length test (Cython never bounds-checks a raw
  pointer, and ``boundscheck`` stays at its default, on).

Annotations are kept as the pure twin's strings (``annotation_typing=False``)
so that ``inspect.signature`` agrees.
"""

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.float cimport PyFloat_AS_DOUBLE, PyFloat_CheckExact, PyFloat_FromDouble
from cpython.list cimport PyList_CheckExact, PyList_GET_ITEM, PyList_GET_SIZE, PyList_New, PyList_SET_ITEM
from cpython.long cimport (
    PyLong_AsLongLongAndOverflow, PyLong_AsUnsignedLongLong, PyLong_CheckExact, PyLong_FromLong,
    PyLong_FromLongLong, PyLong_FromUnsignedLongLong,
)
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.object cimport PyObject, PyObject_SetAttr, PyTypeObject
from cpython.pyport cimport PY_SSIZE_T_MAX
from cpython.ref cimport Py_INCREF
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_New, PyTuple_SET_ITEM
from cpython.unicode cimport PyUnicode_AsUTF8AndSize, PyUnicode_CheckExact, PyUnicode_DecodeUTF8
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy

from grid.includes.wire cimport grid_load_be, grid_negative, grid_sign_bit

import inspect as _inspect
import sys

from grid.errors import ProtocolError

__all__ = ["StructCodec", "TypedHandler"]


cdef extern from "Python.h":
    PyTypeObject PyBaseObject_Type  # its tp_new is what object.__new__(tp) runs
    object PyUnicode_New(Py_ssize_t size, Py_UCS4 maxchar)
    void* PyUnicode_DATA(object o)


# Field kinds (the pure twin's numbers); K_NIL: nil decodes to None.
cdef enum:
    K_STR = 1
    K_INT = 2
    K_FLOAT = 3
    K_BOOL = 4
    K_BYTES = 5
    K_LIST_STR = 6
    K_LIST_INT = 7
    K_BASE = 0x0F
    K_NIL = 0x10

# How a decoded instance is made.
cdef enum:
    C_NEW = 0
    C_ARGS = 1
    C_KWARGS = 2

_BASE_KINDS = {"str": K_STR, "int": K_INT, "float": K_FLOAT, "bool": K_BOOL, "bytes": K_BYTES,
               "list[str]": K_LIST_STR | K_NIL, "list[int]": K_LIST_INT | K_NIL}
_KINDS = {**_BASE_KINDS, **{f"Optional[{k}]": v | K_NIL for k, v in _BASE_KINDS.items()}}
_CONSTRUCT = ("new", "args", "kwargs")

# Header forms: (fixed-form first byte, how many fixed-form lengths, 8-bit
# code or 0, 16-bit code); the 32-bit code follows the 16-bit one.
_STR_H = (0xA0, 32, 0xD9, 0xDA)
_ARRAY_H = (0x90, 16, 0x00, 0xDC)
_MAP_H = (0x80, 16, 0x00, 0xDE)
cdef uint64_t ITEM_LIMIT = 0xFFFFFFFF  # msgpack's largest str/bin/array length
_U64_MAX = 0xFFFFFFFFFFFFFFFF

cdef object _MISS = object()  # "not the common shape": the fallback decides
cdef tuple _EMPTY = ()


def _head(n, form):
    """The smallest header of ``form`` for a length ``n`` (init time only)."""
    fix, fix_n, c8, c16 = form
    if n < fix_n:
        return bytes((fix | n,))
    if c8 and n < 0x100:
        return bytes((c8, n))
    if n < 0x10000:
        return bytes((c16,)) + n.to_bytes(2, "big")
    return bytes((c16 + 1,)) + n.to_bytes(4, "big")


# ------------------------------------------------------------ byte order

cdef inline void _store_be(uint8_t* w, uint64_t v, int size) noexcept:
    cdef int i
    for i in range(size - 1, -1, -1):
        w[i] = <uint8_t>v
        v >>= 8


cdef inline int64_t _load_signed(const uint8_t* p, int size) noexcept:
    """The ``size``-byte big-endian two's complement number at ``p``."""
    cdef uint64_t v = grid_load_be(p, size)
    return grid_negative(v, size) if grid_sign_bit(v, size) else <int64_t>v


# ------------------------------------------------------------ encoding

cdef struct _Out:
    uint8_t* p        # the buffer: the caller's stack array, or `heap`
    Py_ssize_t n      # bytes written
    Py_ssize_t cap    # bytes available at p
    uint8_t* heap     # PyMem block once the stack array was outgrown, else NULL


cdef uint8_t* _grow(_Out* o, Py_ssize_t need) except NULL:
    cdef Py_ssize_t cap
    cdef uint8_t* q
    if need > PY_SSIZE_T_MAX // 2 - o.n:
        raise MemoryError()
    cap = 2 * (o.n + need)
    if o.heap == NULL:
        q = <uint8_t*>PyMem_Malloc(cap)
        if q != NULL:
            memcpy(q, o.p, o.n)
    else:
        q = <uint8_t*>PyMem_Realloc(o.heap, cap)
    if q == NULL:
        raise MemoryError()
    o.heap = q
    o.p = q
    o.cap = cap
    return q + o.n


cdef inline uint8_t* _room(_Out* o, Py_ssize_t need) except NULL:
    """Where the next ``need`` bytes go (the caller then adds to ``o.n``)."""
    if o.cap - o.n >= need:
        return o.p + o.n
    return _grow(o, need)


cdef inline int _put_len(_Out* o, uint64_t n, uint8_t fix, uint64_t fix_n, uint8_t c8, uint8_t c16) except -1:
    """The smallest str/bin/array header for a length ``n`` <= ITEM_LIMIT."""
    cdef uint8_t* w = _room(o, 5)
    if n < fix_n:
        w[0] = fix | <uint8_t>n
        o.n += 1
    elif c8 != 0 and n < 0x100:
        w[0] = c8
        w[1] = <uint8_t>n
        o.n += 2
    elif n < 0x10000:
        w[0] = c16
        _store_be(w + 1, n, 2)
        o.n += 3
    else:
        w[0] = c16 + 1
        _store_be(w + 1, n, 4)
        o.n += 5
    return 0


cdef inline int _put_bytes(_Out* o, const char* s, Py_ssize_t n) except -1:
    memcpy(_room(o, n), s, n)
    o.n += n
    return 0


cdef int _put_int(_Out* o, object x) except -1:
    """Append the exact int ``x`` as msgpack-python packs it: the smallest
    unsigned form when >= 0, else the smallest signed one.  0 when it is
    beyond 64 bits (the fallback raises Packer's error)."""
    cdef int overflow = 0
    cdef long long v = PyLong_AsLongLongAndOverflow(x, &overflow)
    cdef uint64_t u
    cdef uint8_t* w = _room(o, 9)
    if overflow < 0 or (overflow > 0 and x > _U64_MAX):
        return 0
    if overflow > 0 or v >= 0:
        u = PyLong_AsUnsignedLongLong(x) if overflow > 0 else <uint64_t>v
        if u < 0x80:
            w[0] = <uint8_t>u
            o.n += 1
        elif u < 0x100:
            w[0] = 0xCC
            w[1] = <uint8_t>u
            o.n += 2
        elif u < 0x10000:
            w[0] = 0xCD
            _store_be(w + 1, u, 2)
            o.n += 3
        elif u < 0x100000000:
            w[0] = 0xCE
            _store_be(w + 1, u, 4)
            o.n += 5
        else:
            w[0] = 0xCF
            _store_be(w + 1, u, 8)
            o.n += 9
    elif v >= -32:
        w[0] = <uint8_t>(v + 0x100)
        o.n += 1
    elif v >= -0x80:
        w[0] = 0xD0
        w[1] = <uint8_t>(v + 0x100)
        o.n += 2
    elif v >= -0x8000:
        w[0] = 0xD1
        _store_be(w + 1, <uint64_t>(v + 0x10000), 2)
        o.n += 3
    elif v >= -0x80000000:
        w[0] = 0xD2
        _store_be(w + 1, <uint64_t>(v + 0x100000000), 4)
        o.n += 5
    else:
        w[0] = 0xD3
        _store_be(w + 1, <uint64_t>v, 8)  # two's complement, as C guarantees for unsigned conversion
        o.n += 9
    return 1


cdef int _put(_Out* o, object x, bint top) except -1:
    """Append ``x`` as Packer would; 0 when ``x`` is not of an exact type
    handled here (lists only at the ``top``): the caller falls back."""
    cdef Py_ssize_t n, i
    cdef const char* s
    cdef uint8_t* w
    cdef double d
    cdef uint64_t bits
    if x is None:
        w = _room(o, 1)
        w[0] = 0xC0
        o.n += 1
    elif x is True:
        w = _room(o, 1)
        w[0] = 0xC3
        o.n += 1
    elif x is False:
        w = _room(o, 1)
        w[0] = 0xC2
        o.n += 1
    elif PyLong_CheckExact(x):
        return _put_int(o, x)
    elif PyFloat_CheckExact(x):
        d = PyFloat_AS_DOUBLE(x)
        memcpy(&bits, &d, 8)
        w = _room(o, 9)
        w[0] = 0xCB
        _store_be(w + 1, bits, 8)
        o.n += 9
    elif PyUnicode_CheckExact(x):
        s = PyUnicode_AsUTF8AndSize(x, &n)  # a lone surrogate raises: the caller falls back
        if <uint64_t>n > ITEM_LIMIT:
            return 0
        _put_len(o, <uint64_t>n, 0xA0, 32, 0xD9, 0xDA)
        _put_bytes(o, s, n)
    elif PyBytes_CheckExact(x):
        n = PyBytes_GET_SIZE(x)
        if <uint64_t>n > ITEM_LIMIT:
            return 0
        _put_len(o, <uint64_t>n, 0x00, 0, 0xC4, 0xC5)
        _put_bytes(o, PyBytes_AS_STRING(x), n)
    elif top and PyList_CheckExact(x):
        n = PyList_GET_SIZE(x)
        if <uint64_t>n > ITEM_LIMIT:
            return 0
        _put_len(o, <uint64_t>n, 0x90, 16, 0x00, 0xDC)
        # No Python code runs while the items are packed: the list cannot change.
        for i in range(n):
            if not _put(o, <object>PyList_GET_ITEM(x, i), False):
                return 0
    else:
        return 0
    return 1


# ------------------------------------------------------------ decoding

cdef inline Py_ssize_t _read_len(const uint8_t* p, Py_ssize_t size, Py_ssize_t* pos,
                                 uint8_t fix, uint8_t fix_n, uint8_t c8, uint8_t c16) noexcept:
    """The length in a str/bin/array/map header at ``*pos``, moving ``*pos``
    past the header; -1 when there is none there or what it announces cannot
    fit in the rest of the input (at least one byte per item)."""
    cdef Py_ssize_t at = pos[0]
    cdef Py_ssize_t left = size - at
    cdef uint64_t n
    cdef uint8_t b
    if left < 1:
        return -1
    b = p[at]
    if <uint8_t>(b - fix) < fix_n:
        n = <uint8_t>(b - fix)
        at += 1
    elif c8 != 0 and b == c8 and left >= 2:
        n = p[at + 1]
        at += 2
    elif b == c16 and left >= 3:
        n = grid_load_be(p + at + 1, 2)
        at += 3
    elif b == c16 + 1 and left >= 5:
        n = grid_load_be(p + at + 1, 4)
        at += 5
    else:
        return -1
    if n > <uint64_t>(size - at):
        return -1
    pos[0] = at
    return <Py_ssize_t>n


cdef inline bint _is_ascii(const uint8_t* s, Py_ssize_t n) noexcept:
    """Whether ``s[:n]`` is all ASCII (eight bytes at a time, then the rest)."""
    cdef uint64_t acc = 0, w
    cdef Py_ssize_t i = 0
    while i + 8 <= n:
        memcpy(&w, s + i, 8)
        acc |= w
        i += 8
    while i < n:
        acc |= s[i]
        i += 1
    return (acc & 0x8080808080808080ULL) == 0


cdef inline object _read_str(const uint8_t* p, Py_ssize_t size, Py_ssize_t* pos):
    cdef Py_ssize_t n = _read_len(p, size, pos, 0xA0, 32, 0xD9, 0xDA)
    if n < 0:
        return _MISS
    if n > 1 and _is_ascii(p + pos[0], n):
        # ASCII is its own compact str form: one allocation and a copy, not
        # the general UTF-8 decoder (short strings keep its shared singletons).
        s = PyUnicode_New(n, 127)
        memcpy(PyUnicode_DATA(s), p + pos[0], n)
        pos[0] += n
        return s
    s = PyUnicode_DecodeUTF8(<char*>p + pos[0], n, NULL)  # invalid UTF-8 raises
    pos[0] += n
    return s


cdef object _read_int(const uint8_t* p, Py_ssize_t size, Py_ssize_t* pos):
    cdef Py_ssize_t at = pos[0]
    cdef Py_ssize_t left = size - at
    cdef uint8_t b
    cdef int width
    if left < 1:
        return _MISS
    b = p[at]
    if b < 0x80 or b >= 0xE0:  # positive / negative fixint
        pos[0] = at + 1
        return PyLong_FromLong(b if b < 0x80 else <long>b - 0x100)
    if 0xCC <= b <= 0xCF:  # uint 8..64
        width = 1 << (b - 0xCC)
        if left <= width:
            return _MISS
        pos[0] = at + 1 + width
        return PyLong_FromUnsignedLongLong(grid_load_be(p + at + 1, width))
    if 0xD0 <= b <= 0xD3:  # int 8..64
        width = 1 << (b - 0xD0)
        if left <= width:
            return _MISS
        pos[0] = at + 1 + width
        return PyLong_FromLongLong(_load_signed(p + at + 1, width))
    return _MISS


cdef object _read_value(const uint8_t* p, Py_ssize_t size, Py_ssize_t* pos, int kind):
    """The value of a ``kind`` field at ``*pos``, moving ``*pos`` past it;
    _MISS when the wire type there is not one the kind takes as it is."""
    cdef Py_ssize_t at = pos[0]
    cdef Py_ssize_t left = size - at
    cdef Py_ssize_t n, i
    cdef uint8_t b
    cdef uint32_t bits32
    cdef uint64_t bits64
    cdef float f
    cdef double d
    cdef list items
    if left < 1:
        return _MISS
    b = p[at]
    if b == 0xC0:
        if kind & K_NIL:
            pos[0] = at + 1
            return None
        return _MISS
    kind &= K_BASE
    if kind == K_STR:
        return _read_str(p, size, pos)
    if kind == K_INT:
        return _read_int(p, size, pos)
    if kind == K_FLOAT:
        if b == 0xCB and left >= 9:
            bits64 = grid_load_be(p + at + 1, 8)
            memcpy(&d, &bits64, 8)
            pos[0] = at + 9
            return PyFloat_FromDouble(d)
        if b == 0xCA and left >= 5:
            bits32 = <uint32_t>grid_load_be(p + at + 1, 4)
            memcpy(&f, &bits32, 4)
            pos[0] = at + 5
            return PyFloat_FromDouble(<double>f)
        return _MISS
    if kind == K_BOOL:
        if b == 0xC2 or b == 0xC3:
            pos[0] = at + 1
            return b == 0xC3
        return _MISS
    if kind == K_BYTES:
        n = _read_len(p, size, pos, 0x00, 0, 0xC4, 0xC5)
        if n < 0:
            return _MISS
        x = PyBytes_FromStringAndSize(<char*>p + pos[0], n)
        pos[0] += n
        return x
    n = _read_len(p, size, pos, 0x90, 16, 0x00, 0xDC)  # n <= bytes left: no huge allocation
    if n < 0:
        return _MISS
    items = PyList_New(n)  # NULL items until set; a list frees those safely
    for i in range(n):
        x = _read_str(p, size, pos) if kind == K_LIST_STR else _read_int(p, size, pos)
        if x is _MISS:
            return _MISS
        Py_INCREF(x)
        PyList_SET_ITEM(items, i, x)
    return items


# ------------------------------------------------------------ the codec

def _codec_signature(tp: type, fields: Sequence[tuple[str, str, str]], *, tuple_layout: bool,
                     construct: str, fallback_encode: Callable[[Any], bytes],
                     fallback_decode: Callable[[bytes | None], Any]) -> None:
    pass


@cython.final
cdef class StructCodec:
    """The payload codec of one dataclass ``tp``, in front of its generated
    one (``fallback_encode`` / ``fallback_decode``), which it matches exactly.

    ``fields`` lists each field as ``(attribute name, wire name, kind)`` in
    declaration order; ``tuple_layout`` selects the array layout (else a map
    keyed by wire name); ``construct`` says how a decoded instance is made:
    ``"new"`` (``object.__new__`` then the attributes in field order, for a
    dataclass whose ``__init__`` does nothing more), ``"args"`` (``tp(*values)``)
    or ``"kwargs"`` (``tp(**values)``).
    """

    # inspect.signature(StructCodec) reads this (a cdef class has no text signature).
    __signature__ = _inspect.signature(_codec_signature)

    cdef type _tp
    cdef tuple _names          # attribute names (interned str)
    cdef tuple _keys           # wire names, UTF-8 (bytes)
    cdef bytes _kinds          # one K_* code per field
    cdef Py_ssize_t _n
    cdef bint _tuple_layout
    cdef int _construct        # C_NEW, C_ARGS or C_KWARGS
    cdef object _fallback_encode
    cdef object _fallback_decode
    cdef bytes _head           # the map/array header
    cdef tuple _packed_keys    # each field's packed key (empty in the tuple layout)

    def __init__(self, tp: type, fields: Sequence[tuple[str, str, str]], *, tuple_layout: bool,
                 construct: str, fallback_encode: Callable[[Any], bytes],
                 fallback_decode: Callable[[bytes | None], Any]) -> None:
        if not isinstance(tp, type):
            raise TypeError(f"StructCodec: {tp!r} is not a class")
        if construct not in _CONSTRUCT:
            raise ValueError(f"StructCodec: construct must be one of {_CONSTRUCT}, not {construct!r}")
        names, keys, kinds = [], [], []
        for field in fields:
            if type(field) is not tuple or len(field) != 3:
                raise TypeError(f"StructCodec: a field is a (name, wire name, kind) tuple, not {field!r}")
            name, wire, kind = field
            if type(name) is not str or type(wire) is not str:
                raise TypeError(f"StructCodec: field and wire names must be str, not {name!r}, {wire!r}")
            if type(kind) is not str or kind not in _KINDS:
                raise ValueError(f"StructCodec: unsupported field kind {kind!r}")
            names.append(sys.intern(name))
            keys.append(wire.encode("utf-8"))
            kinds.append(_KINDS[kind])
        if not tuple_layout and len(set(keys)) != len(keys):
            raise ValueError("StructCodec: wire names repeat")
        self._tp = tp
        self._names = tuple(names)
        self._keys = tuple(keys)
        self._kinds = bytes(kinds)
        self._n = len(names)
        self._tuple_layout = bool(tuple_layout)
        self._construct = _CONSTRUCT.index(construct)
        self._fallback_encode = fallback_encode
        self._fallback_decode = fallback_decode
        self._head = _head(len(names), _ARRAY_H if tuple_layout else _MAP_H)
        self._packed_keys = tuple(b"" if tuple_layout else _head(len(k), _STR_H) + k for k in keys)

    def encode(self, v: Any) -> bytes:
        """``v`` as msgpack bytes (``b"\\xc0"`` for None), the bytes the
        fallback returns; values of other than exact simple types go to it."""
        return self._encode(v)

    def decode(self, data: bytes | None) -> Any:
        """A new instance from the payload ``data``: what the fallback
        returns for it, or raises (:class:`grid.ProtocolError`)."""
        return self._decode(data)

    cdef object _encode(self, object v):
        cdef uint8_t stack[256]
        cdef _Out o
        cdef Py_ssize_t i
        cdef bytes key
        if v is None:
            return b"\xc0"
        o.p = stack
        o.n = 0
        o.cap = sizeof(stack)
        o.heap = NULL
        try:
            _put_bytes(&o, PyBytes_AS_STRING(self._head), PyBytes_GET_SIZE(self._head))
            for i in range(self._n):
                key = <bytes>PyTuple_GET_ITEM(self._packed_keys, i)
                _put_bytes(&o, PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key))
                # getattr's own errors propagate, as they do from the fallback.
                if not _put(&o, getattr(v, <str>PyTuple_GET_ITEM(self._names, i)), True):
                    break
            else:
                return PyBytes_FromStringAndSize(<char*>o.p, o.n)
        except UnicodeEncodeError:  # a lone surrogate: the fallback reports it
            pass
        finally:
            PyMem_Free(o.heap)
        return self._fallback_encode(v)

    cdef object _decode(self, object data):
        cdef tuple values = None
        if PyBytes_CheckExact(data):
            try:
                values = self._parse(<const uint8_t*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
            except UnicodeDecodeError:  # invalid UTF-8: the fallback reports it
                values = None
            if values is not None:
                return self._make(values)
        return self._fallback_decode(data)

    cdef tuple _parse(self, const uint8_t* p, Py_ssize_t size):
        """The field values of ``p[:size]`` in the common shape, else None."""
        cdef Py_ssize_t pos = 0, count, klen, i, j
        cdef const uint8_t* kinds = <const uint8_t*>PyBytes_AS_STRING(self._kinds)
        cdef tuple values
        if self._tuple_layout:
            count = _read_len(p, size, &pos, 0x90, 16, 0x00, 0xDC)
        else:
            count = _read_len(p, size, &pos, 0x80, 16, 0x00, 0xDE)
        if count != self._n:
            return None
        values = PyTuple_New(self._n)  # NULL items until set; a tuple frees those safely
        for i in range(self._n):
            j = i
            if not self._tuple_layout:
                klen = _read_len(p, size, &pos, 0xA0, 32, 0xD9, 0xDA)
                if klen < 0:
                    return None
                j = self._field_of(p + pos, klen, i)
                if j < 0 or PyTuple_GET_ITEM(values, j) != NULL:
                    return None  # an unknown or repeated key
                pos += klen
            x = _read_value(p, size, &pos, kinds[j])
            if x is _MISS:
                return None
            Py_INCREF(x)
            PyTuple_SET_ITEM(values, j, x)
        return values if pos == size else None

    cdef Py_ssize_t _field_of(self, const uint8_t* key, Py_ssize_t klen, Py_ssize_t guess) noexcept:
        """The index of the field whose wire name is ``key[:klen]`` (trying
        ``guess``, the usual order, first), else -1."""
        cdef Py_ssize_t j
        cdef bytes k
        for j in range(-1, self._n):
            k = <bytes>PyTuple_GET_ITEM(self._keys, guess if j < 0 else j)
            if PyBytes_GET_SIZE(k) == klen and memcmp(PyBytes_AS_STRING(k), key, klen) == 0:
                return guess if j < 0 else j
        return -1

    cdef object _make(self, tuple values):
        """The instance, made as the generated decoder makes it (with its
        error mapping)."""
        cdef Py_ssize_t i
        try:
            if self._construct == C_NEW:
                obj = PyBaseObject_Type.tp_new(self._tp, <PyObject*>_EMPTY, NULL)
                for i in range(self._n):
                    PyObject_SetAttr(obj, <object>PyTuple_GET_ITEM(self._names, i),
                                     <object>PyTuple_GET_ITEM(values, i))
                return obj
            if self._construct == C_ARGS:
                return self._tp(*values)
            return self._tp(**dict(zip(self._names, values)))
        except ProtocolError:
            raise
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise ProtocolError("msgp: " + str(exc)) from None


def _handler_signature(fn: Callable[[Any], Any], decode: Callable[[bytes | None], Any],
                       encode: Callable[[Any], bytes | None],
                       on_decode_error: Callable[[ProtocolError], BaseException]) -> None:
    pass


cdef StructCodec _codec_of(object method, str name):
    """The StructCodec whose ``name`` method ``method`` is, else None."""
    owner = getattr(method, "__self__", None)
    if type(owner) is StructCodec and method == getattr(owner, name):
        return <StructCodec>owner
    return None


@cython.final
cdef class TypedHandler:
    """A typed single-request handler as the connection core calls it,
    payload in and payload out: ``encode(fn(decode(payload)))``.

    A payload that does not decode (:class:`grid.ProtocolError`) raises what
    ``on_decode_error(exc)`` returns, without reaching ``fn``; errors of
    ``fn`` and ``encode`` propagate as they are.
    """

    __signature__ = _inspect.signature(_handler_signature)

    cdef object _fn
    cdef object _decode
    cdef object _encode
    cdef object _on_decode_error
    cdef StructCodec _dec_codec  # decode's StructCodec, called without the method call
    cdef StructCodec _enc_codec  # ... and encode's

    def __init__(self, fn: Callable[[Any], Any], decode: Callable[[bytes | None], Any],
                 encode: Callable[[Any], bytes | None],
                 on_decode_error: Callable[[ProtocolError], BaseException]) -> None:
        for what, f in (("fn", fn), ("decode", decode), ("encode", encode),
                        ("on_decode_error", on_decode_error)):
            if not callable(f):
                raise TypeError(f"TypedHandler: {what} must be callable, not {f!r}")
        self._fn = fn
        self._decode = decode
        self._encode = encode
        self._on_decode_error = on_decode_error
        self._dec_codec = _codec_of(decode, "decode")
        self._enc_codec = _codec_of(encode, "encode")

    def __call__(self, payload: bytes | None) -> bytes | None:
        try:
            if self._dec_codec is not None:
                v = self._dec_codec._decode(payload)
            else:
                v = self._decode(payload)
        except ProtocolError as exc:
            raise self._on_decode_error(exc) from None
        r = self._fn(v)
        if self._enc_codec is not None:
            return self._enc_codec._encode(r)
        return self._encode(r)

