"""msgpack serialisation of typed payloads, compatible with Go's msgp.

A dataclass maps to msgp's default struct layout: a map keyed by field name,
in declaration order, so a Go struct with the same field names (or ``msg``
tags) interoperates.  Decoding skips unknown keys and leaves missing keys at
their defaults (or the type's zero value), as msgp does.  A dataclass opts
into msgp's tuple layout (a positional array) with ``__grid_tuple__ = True``;
a field is renamed on the wire with ``field(metadata={"msg": "Name"})``.

Any other class takes part by defining ``__grid_pack__(self) -> object``
(something msgpack can pack) and ``classmethod __grid_unpack__(cls, obj)``.

Built-in payload types mirroring the Go grid's helpers (GRID-PROTOCOL.md
Appendix A): :class:`NoPayload`, :class:`MSS`, :class:`Bytes`,
:class:`URLValues`, :class:`ArrayOf`, :class:`JSON`.
"""

from __future__ import annotations

import dataclasses
import functools
import datetime as _dt
import json
import threading
import struct
import types as _types
import typing
from collections.abc import Callable
from typing import Any, Generic, TypeVar, Union

import msgpack

from grid.errors import ProtocolError

__all__ = [
    "NoPayload",
    "MSS",
    "Bytes",
    "URLValues",
    "ArrayOf",
    "JSON",
    "encode_payload",
    "decode_payload",
]

T = TypeVar("T")

_TIME = struct.Struct(">qI")
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)


class NoPayload:
    """No payload at all: encodes to zero bytes (absent on the wire)."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NoPayload)

    def __hash__(self) -> int:
        return 0

    def __repr__(self) -> str:
        return "NoPayload()"


class MSS(dict):  # type: ignore[type-arg]
    """Go's ``grid.MSS``: a map of str to str (``None`` travels as nil)."""

    def __grid_pack__(self) -> dict[str, str]:
        return dict(self)

    @classmethod
    def __grid_unpack__(cls, obj: Any) -> MSS | None:
        if obj is None:
            return None
        if not isinstance(obj, dict):
            raise ProtocolError(f"MSS: want a map, got {type(obj).__name__}")
        return cls({_s(k): _s(v) for k, v in obj.items()})


class Bytes(bytes):
    """Go's ``grid.Bytes``: one msgpack bin (``None`` travels as nil)."""

    def __grid_pack__(self) -> bytes:
        return bytes(self)

    @classmethod
    def __grid_unpack__(cls, obj: Any) -> Bytes | None:
        if obj is None:
            return None
        if not isinstance(obj, (bytes, str)):
            raise ProtocolError(f"Bytes: want bin, got {type(obj).__name__}")
        return cls(obj.encode() if isinstance(obj, str) else obj)


class URLValues(dict):  # type: ignore[type-arg]
    """Go's ``grid.URLValues``: a map of str to a list of str."""

    def __grid_pack__(self) -> dict[str, list[str]]:
        return {k: list(v) for k, v in self.items()}

    @classmethod
    def __grid_unpack__(cls, obj: Any) -> URLValues | None:
        if obj is None:
            return None
        if not isinstance(obj, dict):
            raise ProtocolError(f"URLValues: want a map, got {type(obj).__name__}")
        return cls({_s(k): [_s(x) for x in (v or [])] for k, v in obj.items()})


def _s(v: Any) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    raise ProtocolError(f"want str, got {type(v).__name__}")


class ArrayOf(Generic[T]):
    """``ArrayOf[T]``: Go's ``grid.Array[T]``, a msgpack array of T (nil for None).

    Values are plain lists; the subscripted type only tells the codec the
    element type."""

    _cache: dict[Any, Any] = {}

    def __class_getitem__(cls, item: Any) -> Any:
        if item not in cls._cache:
            cls._cache[item] = type(f"ArrayOf[{getattr(item, '__name__', item)}]", (_ArrayOfBase,),
                                    {"item_type": item})
        return cls._cache[item]


class _ArrayOfBase:
    item_type: Any = None


class JSON(Generic[T]):
    """``JSON[T]``: Go's ``grid.JSON[T]``, a bin holding JSON text (with the
    trailing newline Go's encoder writes).  Values are T itself; a dataclass
    T round-trips through its fields."""

    _cache: dict[Any, Any] = {}

    def __class_getitem__(cls, item: Any) -> Any:
        if item not in cls._cache:
            cls._cache[item] = type(f"JSON[{getattr(item, '__name__', item)}]", (_JSONBase,),
                                    {"item_type": item})
        return cls._cache[item]


class _JSONBase:
    item_type: Any = None


# ------------------------------------------------------------ converters
# For each type: (to_wire, from_wire), where to_wire makes a msgpack-able
# object and from_wire turns what msgpack unpacked back into the type.
# Built once per type and cached, so a typed call costs two closure calls.

_Conv = tuple[Callable[[Any], Any], Callable[[Any], Any]]
_conv_cache: dict[Any, _Conv] = {}


def _ident(v: Any) -> Any:
    return v


def _zero(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if tp in (int,):
        return 0
    if tp is float:
        return 0.0
    if tp is str:
        return ""
    if tp is bool:
        return False
    if tp is bytes:
        return b""
    if origin in (Union, _types.UnionType) or tp is type(None):
        return None
    if dataclasses.is_dataclass(tp):
        return _default_instance(tp)
    return None


def _default_instance(tp: Any) -> Any:
    kwargs = {}
    for f in dataclasses.fields(tp):
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            kwargs[f.name] = _zero(_hints(tp)[f.name])
    return tp(**kwargs)


_hint_cache: dict[Any, dict[str, Any]] = {}


def _hints(tp: Any) -> dict[str, Any]:
    h = _hint_cache.get(tp)
    if h is None:
        h = typing.get_type_hints(tp)
        _hint_cache[tp] = h
    return h


def _check(tp: Any, ok: type | tuple[type, ...]) -> Callable[[Any], Any]:
    def conv(v: Any) -> Any:
        if not isinstance(v, ok) or (ok is int and isinstance(v, bool)):
            raise ProtocolError(f"want {tp.__name__}, got {type(v).__name__}")
        return v

    return conv


def converter(tp: Any) -> _Conv:
    """The (to_wire, from_wire) pair for ``tp``, built once."""
    c = _conv_cache.get(tp)
    if c is None:
        c = _build(tp)
        _conv_cache[tp] = c
    return c


def _build(tp: Any) -> _Conv:
    if tp is Any or tp is object:
        return _ident, _ident
    if tp is str:
        return _ident, _s
    if tp is bytes:
        return _ident, lambda v: v.encode() if isinstance(v, str) else _check(tp, bytes)(v)
    if tp is bool:
        return _ident, _check(tp, bool)
    if tp is int:
        return _ident, _check(tp, int)
    if tp is float:
        return _ident, lambda v: float(_check(tp, (int, float))(v))
    if tp is _dt.datetime:
        return _time_to_wire, _time_from_wire
    if isinstance(tp, type) and issubclass(tp, _ArrayOfBase):
        enc, dec = converter(tp.item_type)
        return (lambda v: None if v is None else [enc(x) for x in v],
                lambda v: None if v is None else [dec(x) for x in _list(v)])
    if isinstance(tp, type) and issubclass(tp, _JSONBase):
        return _json_conv(tp.item_type)
    if isinstance(tp, type) and hasattr(tp, "__grid_pack__"):
        return (lambda v: None if v is None else v.__grid_pack__()), getattr(tp, "__grid_unpack__")
    if dataclasses.is_dataclass(tp):
        return _dataclass_conv(tp)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, _types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            enc, dec = converter(rest[0])
            return (lambda v: None if v is None else enc(v)), (lambda v: None if v is None else dec(v))
        return _ident, _ident
    if origin in (list, tuple, typing.Sequence) or tp in (list, tuple):
        item = args[0] if args else Any
        enc, dec = converter(item)
        exact = {str: str, int: int, bytes: bytes, bool: bool}.get(item)
        if enc is _ident:  # msgpack packs any list or tuple of these as it is
            enc_list: Callable[[Any], Any] = _ident
        else:
            def enc_list(v: Any) -> Any:
                return None if v is None else [enc(x) for x in v]

        def dec_list(v: Any) -> Any:
            if v is None:
                return None
            if exact is not None and type(v) is list:
                for x in v:
                    if type(x) is not exact:
                        break
                else:
                    return v  # already what the field holds: no per-item call
            return [dec(x) for x in _list(v)]

        return enc_list, dec_list
    if origin is dict or tp is dict:
        kt, vt = args if args else (Any, Any)
        kenc, kdec = converter(kt)
        venc, vdec = converter(vt)
        return (lambda v: None if v is None else {kenc(k): venc(x) for k, x in v.items()},
                lambda v: None if v is None else {kdec(k): vdec(x) for k, x in _dict(v).items()})
    raise TypeError(f"grid cannot serialise {tp!r}")


def _list(v: Any) -> list[Any]:
    if not isinstance(v, (list, tuple)):
        raise ProtocolError(f"want an array, got {type(v).__name__}")
    return list(v)


def _dict(v: Any) -> dict[Any, Any]:
    if not isinstance(v, dict):
        raise ProtocolError(f"want a map, got {type(v).__name__}")
    return v


def _time_to_wire(v: _dt.datetime | None) -> Any:
    if v is None:
        return None
    if v.tzinfo is None:
        v = v.replace(tzinfo=_dt.timezone.utc)
    delta = v - _EPOCH
    sec = delta.days * 86400 + delta.seconds
    return msgpack.ExtType(5, _TIME.pack(sec, delta.microseconds * 1000))


def _time_from_wire(v: Any) -> _dt.datetime | None:
    if v is None:
        return None
    if isinstance(v, msgpack.ExtType) and v.code == 5 and len(v.data) == 12:
        sec, nsec = _TIME.unpack(v.data)
    elif isinstance(v, msgpack.Timestamp):
        sec, nsec = v.seconds, v.nanoseconds
    else:
        raise ProtocolError(f"want a time, got {type(v).__name__}")
    try:
        return _EPOCH + _dt.timedelta(seconds=sec, microseconds=nsec // 1000)
    except OverflowError:
        return _dt.datetime.min.replace(tzinfo=_dt.timezone.utc)


def _json_conv(item: Any) -> _Conv:
    def enc(v: Any) -> Any:
        if v is None:
            return None
        obj = dataclasses.asdict(v) if dataclasses.is_dataclass(v) and not isinstance(v, type) else v
        return (json.dumps(obj, separators=(",", ":")) + "\n").encode()

    def dec(v: Any) -> Any:
        if v is None:
            return None
        if not isinstance(v, (bytes, str)):
            raise ProtocolError(f"JSON: want bin, got {type(v).__name__}")
        try:
            obj = json.loads(v)
        except ValueError as exc:
            raise ProtocolError(f"JSON: {exc}") from None
        if dataclasses.is_dataclass(item) and isinstance(obj, dict):
            names = {f.name for f in dataclasses.fields(item)}
            return item(**{k: x for k, x in obj.items() if k in names})  # type: ignore[operator]
        return obj

    return enc, dec


def _dataclass_conv(tp: Any) -> _Conv:
    fields = dataclasses.fields(tp)
    hints = _hints(tp)
    names = [f.name for f in fields]
    wire = [f.metadata.get("msg", f.name) for f in fields]
    convs = [converter(hints[f.name]) for f in fields]
    encs = [c[0] for c in convs]
    decs = [c[1] for c in convs]
    # Scalar fields whose unpacked value needs no conversion when it already
    # has the right type: checked inline instead of through a closure call.
    plain = {str: str, int: int, bool: bool, bytes: bytes}
    by_wire = {w: (n, d, plain.get(hints[n])) for w, n, d in zip(wire, names, decs)}
    tuple_layout = bool(getattr(tp, "__grid_tuple__", False))
    n_fields = len(fields)
    defaults: dict[str, Callable[[], Any]] = {}
    for f in fields:
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            defaults[f.name] = functools.partial(_zero, hints[f.name])
    items = list(zip(wire, names, encs))

    if tuple_layout:
        def enc(v: Any) -> Any:
            if v is None:
                return None
            return [e(getattr(v, n)) for _, n, e in items]

        def dec(v: Any) -> Any:
            if v is None:
                return None
            seq = _list(v)
            if len(seq) != len(names):
                raise ProtocolError(f"{tp.__name__}: want {len(names)} elements, got {len(seq)}")
            return tp(*[d(x) for d, x in zip(decs, seq)])

        return enc, dec

    direct = [(w, n) for w, n, e in items if e is _ident]
    converted = [(w, n, e) for w, n, e in items if e is not _ident]
    order_kept = [w for w, _, _ in items] == [w for w, _ in direct] + [w for w, _, _ in converted]

    def enc_map(v: Any) -> Any:
        if v is None:
            return None
        if order_kept:  # fields needing no conversion come first: no call for them
            out = {w: getattr(v, n) for w, n in direct}
            for w, n, e in converted:
                out[w] = e(getattr(v, n))
            return out
        return {w: e(getattr(v, n)) for w, n, e in items}

    def dec_map(v: Any) -> Any:
        if v is None:
            return None
        kwargs = {}
        if type(v) is not dict:
            v = _dict(v)
        for k, x in v.items():
            hit = by_wire.get(k)
            if hit is None:
                if not isinstance(k, bytes):
                    continue  # unknown keys are skipped
                hit = by_wire.get(k.decode("utf-8", "replace"))
                if hit is None:
                    continue
            name, dec, exact = hit
            kwargs[name] = x if type(x) is exact else dec(x)
        if len(kwargs) != n_fields:
            for n, make in defaults.items():
                if n not in kwargs:
                    kwargs[n] = make()
        return tp(**kwargs)

    return enc_map, dec_map


_local = threading.local()  # one reusable msgpack.Packer per thread


def _packer() -> msgpack.Packer:
    p = getattr(_local, "packer", None)
    if p is None:
        p = _local.packer = msgpack.Packer(use_bin_type=True)
    return p


def encode_payload(tp: Any, value: Any) -> bytes | None:
    """Serialise ``value`` of type ``tp`` to a grid payload (None for NoPayload)."""
    if tp is NoPayload or tp is None:
        return None
    enc = converter(tp)[0]
    return _packer().pack(enc(value))  # type: ignore[no-any-return]


def decode_payload(tp: Any, data: bytes | None) -> Any:
    """Turn a grid payload back into a value of type ``tp``; malformed data
    raises :class:`grid.ProtocolError`."""
    if tp is NoPayload or tp is None:
        return NoPayload()
    dec = converter(tp)[1]
    if not data:
        return dec(None) if tp is not None else None
    try:
        # Defaults: str as str, bin as bytes, map keys str or bytes, msgpack
        # timestamps as msgpack.Timestamp (keyword arguments cost ~0.5 us).
        obj = msgpack.unpackb(data)
    except Exception as exc:
        raise ProtocolError(f"msgp: {exc}") from None
    try:
        return dec(obj)
    except ProtocolError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise ProtocolError(f"msgp: {exc}") from None
