"""Pure-Python twin of :mod:`grid._struct`: a dataclass payload straight to
msgpack bytes and back, for dataclasses whose fields are of a few simple kinds.

A :class:`StructCodec` sits in front of the codec :mod:`grid._typecodec` generates
for a dataclass (its *fallback*) and is indistinguishable from it, only
faster in the compiled twin.  It handles the common shape itself: a map
keyed by the wire names (or, with ``tuple_layout``, an array), each value of
its field's kind, nothing else.  Anything else -- a value or wire type
outside the field's kind, an unknown, missing or repeated key, a truncated
or trailing input, invalid UTF-8, an int beyond 64 bits -- goes to the
fallback on the same input, so results and errors are the fallback's.

Encodings are msgpack-python's (``Packer(use_bin_type=True)``): the smallest
int, str and container forms, float64 for a float, bin for bytes.

Field kinds (``Optional[...]`` of each also decodes nil as None; a list field
does so anyway, like the generated codec): ``str``, ``int``, ``float``,
``bool``, ``bytes``, ``list[str]``, ``list[int]``.  This twin is the
reference, but grid itself uses only the compiled one: in pure mode the
generated codec (one C msgpack call) is faster than this module, so it runs
in the tests (tests/codec/test_struct_codec.py), which hold both to the same results.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable, Sequence
from typing import Any

from grid._envelope_py import pack_uint
from grid.errors import ProtocolError

__all__ = ["StructCodec", "TypedHandler"]

# Field kinds as the compiled twin numbers them; _NIL: nil decodes to None.
_STR, _INT, _FLOAT, _BOOL, _BYTES, _LIST_STR, _LIST_INT = range(1, 8)
_BASE = 0x0F
_NIL = 0x10
_BASE_KINDS = {"str": _STR, "int": _INT, "float": _FLOAT, "bool": _BOOL, "bytes": _BYTES,
               "list[str]": _LIST_STR | _NIL, "list[int]": _LIST_INT | _NIL}
_KINDS = {**_BASE_KINDS, **{f"Optional[{k}]": v | _NIL for k, v in _BASE_KINDS.items()}}
_CONSTRUCT = ("new", "args", "kwargs")

# Header forms (fixed-form first byte, how many fixed-form lengths, 8-bit
# code or 0, 16-bit code; the 32-bit code follows it).
_STR_H = (0xA0, 32, 0xD9, 0xDA)
_BIN_H = (0x00, 0, 0xC4, 0xC5)
_ARRAY_H = (0x90, 16, 0x00, 0xDC)
_MAP_H = (0x80, 16, 0x00, 0xDE)
_ITEM_LIMIT = 0xFFFFFFFF  # msgpack's largest str/bin/array length
_U64_MAX = 0xFFFFFFFFFFFFFFFF
_I64_MIN = -(1 << 63)

_MISS = object()  # "not the common shape": the fallback decides
_B16, _B32, _B64 = struct.Struct(">H"), struct.Struct(">I"), struct.Struct(">Q")
_I8, _I16, _I32, _I64 = (struct.Struct(f) for f in (">b", ">h", ">i", ">q"))
_F32, _F64 = struct.Struct(">f"), struct.Struct(">d")


def _head(n: int, form: tuple[int, int, int, int]) -> bytes:
    """The smallest header of ``form`` for a length ``n`` (<= 2**32-1)."""
    fix, fix_n, c8, c16 = form
    if n < fix_n:
        return bytes((fix | n,))
    if c8 and n < 0x100:
        return bytes((c8, n))
    if n < 0x10000:
        return bytes((c16,)) + _B16.pack(n)
    return bytes((c16 + 1,)) + _B32.pack(n)


def _put_int(out: bytearray, x: int) -> bool:
    if x >= 0:
        if x > _U64_MAX:
            return False
        pack_uint(out, x)
    elif x >= -32:
        out.append(x & 0xFF)
    elif x >= -0x80:
        out += b"\xd0" + _I8.pack(x)
    elif x >= -0x8000:
        out += b"\xd1" + _I16.pack(x)
    elif x >= -0x80000000:
        out += b"\xd2" + _I32.pack(x)
    elif x >= _I64_MIN:
        out += b"\xd3" + _I64.pack(x)
    else:
        return False
    return True


def _put(out: bytearray, x: Any, top: bool) -> bool:
    """Append ``x`` as Packer would; False (``out`` then undefined) when ``x``
    is not of an exact type handled here (lists only at the ``top``)."""
    t = type(x)
    if x is None:
        out.append(0xC0)
    elif x is True:
        out.append(0xC3)
    elif x is False:
        out.append(0xC2)
    elif t is int:
        return _put_int(out, x)
    elif t is float:
        out += b"\xcb" + _F64.pack(x)
    elif t is str:
        raw = x.encode("utf-8")  # lone surrogates raise: the caller falls back
        if len(raw) > _ITEM_LIMIT:
            return False
        out += _head(len(raw), _STR_H) + raw
    elif t is bytes:
        if len(x) > _ITEM_LIMIT:
            return False
        out += _head(len(x), _BIN_H) + x
    elif t is list and top:
        if len(x) > _ITEM_LIMIT:
            return False
        out += _head(len(x), _ARRAY_H)
        for item in x:
            if not _put(out, item, False):
                return False
    else:
        return False
    return True


def _read_len(data: bytes, pos: int, form: tuple[int, int, int, int]) -> tuple[int, int]:
    """(length, position after the header) of a ``form`` header at ``pos``;
    length -1 when there is none there or what it announces cannot fit in
    the rest of the input (at least one byte per item)."""
    fix, fix_n, c8, c16 = form
    left = len(data) - pos
    if left < 1:
        return -1, pos
    b = data[pos]
    if 0 <= b - fix < fix_n:
        n, pos = b - fix, pos + 1
    elif c8 and b == c8 and left >= 2:
        n, pos = data[pos + 1], pos + 2
    elif b == c16 and left >= 3:
        n, pos = _B16.unpack_from(data, pos + 1)[0], pos + 3
    elif b == c16 + 1 and left >= 5:
        n, pos = _B32.unpack_from(data, pos + 1)[0], pos + 5
    else:
        return -1, pos
    if n > len(data) - pos:
        return -1, pos
    return n, pos


def _read_str(data: bytes, pos: int) -> tuple[Any, int]:
    n, pos = _read_len(data, pos, _STR_H)
    if n < 0:
        return _MISS, pos
    return data[pos:pos + n].decode("utf-8"), pos + n  # invalid UTF-8 raises


def _read_int(data: bytes, pos: int) -> tuple[Any, int]:
    left = len(data) - pos
    if left < 1:
        return _MISS, pos
    b = data[pos]
    if b < 0x80:
        return b, pos + 1
    if b >= 0xE0:
        return b - 0x100, pos + 1
    if b == 0xCC and left >= 2:
        return data[pos + 1], pos + 2
    if b == 0xD0 and left >= 2:
        return _I8.unpack_from(data, pos + 1)[0], pos + 2
    if b in (0xCD, 0xD1) and left >= 3:
        return (_B16 if b == 0xCD else _I16).unpack_from(data, pos + 1)[0], pos + 3
    if b in (0xCE, 0xD2) and left >= 5:
        return (_B32 if b == 0xCE else _I32).unpack_from(data, pos + 1)[0], pos + 5
    if b in (0xCF, 0xD3) and left >= 9:
        return (_B64 if b == 0xCF else _I64).unpack_from(data, pos + 1)[0], pos + 9
    return _MISS, pos


def _read_value(data: bytes, pos: int, kind: int) -> tuple[Any, int]:
    """(value, position after it) of a ``kind`` value at ``pos``; _MISS when
    the wire type there is not one the kind takes as it is."""
    left = len(data) - pos
    if left < 1:
        return _MISS, pos
    b = data[pos]
    if b == 0xC0:
        return (None, pos + 1) if kind & _NIL else (_MISS, pos)
    kind &= _BASE
    if kind == _STR:
        return _read_str(data, pos)
    if kind == _INT:
        return _read_int(data, pos)
    if kind == _FLOAT:
        if b == 0xCB and left >= 9:
            return _F64.unpack_from(data, pos + 1)[0], pos + 9
        if b == 0xCA and left >= 5:
            return _F32.unpack_from(data, pos + 1)[0], pos + 5
        return _MISS, pos
    if kind == _BOOL:
        if b in (0xC2, 0xC3):
            return b == 0xC3, pos + 1
        return _MISS, pos
    if kind == _BYTES:
        n, pos = _read_len(data, pos, _BIN_H)
        if n < 0:
            return _MISS, pos
        return data[pos:pos + n], pos + n
    n, pos = _read_len(data, pos, _ARRAY_H)
    if n < 0:
        return _MISS, pos
    read = _read_str if kind == _LIST_STR else _read_int
    items = []
    for _ in range(n):
        x, pos = read(data, pos)
        if x is _MISS:
            return _MISS, pos
        items.append(x)
    return items, pos


class StructCodec:
    """The payload codec of one dataclass ``tp``, in front of its generated
    one (``fallback_encode`` / ``fallback_decode``), which it matches exactly.

    ``fields`` lists each field as ``(attribute name, wire name, kind)`` in
    declaration order; ``tuple_layout`` selects the array layout (else a map
    keyed by wire name); ``construct`` says how a decoded instance is made:
    ``"new"`` (``object.__new__`` then the attributes in field order, for a
    dataclass whose ``__init__`` does nothing more), ``"args"`` (``tp(*values)``)
    or ``"kwargs"`` (``tp(**values)``).
    """

    def __init__(self, tp: type, fields: Sequence[tuple[str, str, str]], *, tuple_layout: bool,
                 construct: str, fallback_encode: Callable[[Any], bytes],
                 fallback_decode: Callable[[bytes | None], Any]) -> None:
        if not isinstance(tp, type):
            raise TypeError(f"StructCodec: {tp!r} is not a class")
        if construct not in _CONSTRUCT:
            raise ValueError(f"StructCodec: construct must be one of {_CONSTRUCT}, not {construct!r}")
        names: list[str] = []
        keys: list[bytes] = []
        kinds: list[int] = []
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
        self._kinds = tuple(kinds)
        self._tuple_layout = bool(tuple_layout)
        self._construct = construct
        self._fallback_encode = fallback_encode
        self._fallback_decode = fallback_decode
        self._head = _head(len(names), _ARRAY_H if tuple_layout else _MAP_H)
        # Each field's packed key (empty in the tuple layout).
        self._packed_keys = tuple(b"" if tuple_layout else _head(len(k), _STR_H) + k for k in keys)

    def encode(self, v: Any) -> bytes:
        """``v`` as msgpack bytes (``b"\\xc0"`` for None), the bytes the
        fallback returns; values of other than exact simple types go to it."""
        if v is None:
            return b"\xc0"
        out = bytearray(self._head)
        try:
            for name, key in zip(self._names, self._packed_keys):
                out += key
                if not _put(out, getattr(v, name), True):
                    return self._fallback_encode(v)
        except UnicodeEncodeError:  # a lone surrogate: the fallback reports it
            return self._fallback_encode(v)
        return bytes(out)

    def decode(self, data: bytes | None) -> Any:
        """A new instance from the payload ``data``: what the fallback
        returns for it, or raises (:class:`grid.ProtocolError`)."""
        if type(data) is bytes:
            try:
                values = self._parse(data)
            except UnicodeDecodeError:  # invalid UTF-8: the fallback reports it
                values = None
            if values is not None:
                return self._make(values)
        return self._fallback_decode(data)

    def _parse(self, data: bytes) -> list[Any] | None:
        """The field values of ``data`` in the common shape, else None."""
        n = len(self._names)
        count, pos = _read_len(data, 0, _ARRAY_H if self._tuple_layout else _MAP_H)
        if count != n:
            return None
        values: list[Any] = [_MISS] * n
        for i in range(n):
            j = i
            if not self._tuple_layout:
                klen, pos = _read_len(data, pos, _STR_H)
                if klen < 0:
                    return None
                j = self._field_of(data[pos:pos + klen], i)
                if j < 0 or values[j] is not _MISS:
                    return None  # an unknown or repeated key
                pos += klen
            x, pos = _read_value(data, pos, self._kinds[j])
            if x is _MISS:
                return None
            values[j] = x
        return values if pos == len(data) else None

    def _field_of(self, key: bytes, guess: int) -> int:
        """The index of the field whose wire name is ``key`` (trying
        ``guess``, the usual order, first), else -1."""
        if self._keys[guess] == key:
            return guess
        for j, k in enumerate(self._keys):
            if k == key:
                return j
        return -1

    def _make(self, values: list[Any]) -> Any:
        """The instance, made as the generated decoder makes it (with its
        error mapping)."""
        try:
            if self._construct == "new":
                obj: Any = object.__new__(self._tp)
                for name, x in zip(self._names, values):
                    setattr(obj, name, x)
                return obj
            if self._construct == "args":
                return self._tp(*values)
            return self._tp(**dict(zip(self._names, values)))
        except ProtocolError:
            raise
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise ProtocolError("msgp: " + str(exc)) from None


class TypedHandler:
    """A typed single-request handler as the connection core calls it,
    payload in and payload out: ``encode(fn(decode(payload)))``.

    A payload that does not decode (:class:`grid.ProtocolError`) raises what
    ``on_decode_error(exc)`` returns, without reaching ``fn``; errors of
    ``fn`` and ``encode`` propagate as they are.
    """

    __slots__ = ("_fn", "_decode", "_encode", "_on_decode_error")

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

    def __call__(self, payload: bytes | None) -> bytes | None:
        try:
            v = self._decode(payload)
        except ProtocolError as exc:
            raise self._on_decode_error(exc) from None
        return self._encode(self._fn(v))

