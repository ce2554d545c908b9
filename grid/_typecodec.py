"""The codec builder behind :mod:`grid.types`: turns a payload type into its
``(encode, decode)`` pair, once per type.

For each type :func:`converter` builds a ``(to_wire, from_wire)`` pair:
``to_wire`` makes an object msgpack can pack, ``from_wire`` checks and turns
what msgpack unpacked back into the type.  A dataclass gets Python source
generated for its fields and compiled, so a payload costs one msgpack call
plus a few inline type tests, not a call per field.  With the compiled core,
a dataclass whose fields are all simple (str, int, float, bool, bytes,
list[str], list[int], Optional of those) goes straight between instance and
bytes in :mod:`grid._struct`, which hands anything off the common shape to the
generated code: same bytes, values and errors.

The rules (msgp's default struct layout, the tuple layout, renamed fields,
the ``__grid_pack__`` protocol) are described in :mod:`grid.types`.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import json
import keyword
import threading
import types as _types
import typing
from collections.abc import Callable
from typing import Any, Union

import msgpack

from grid._impl import ACCELERATED as _ACCELERATED
from grid._impl import StructCodec as _StructCodec
from grid._msgptime import time_ext, time_parts
from grid.errors import ProtocolError

__all__ = ["ArrayOfBase", "Codec", "JSONBase", "MAX_ITEMS", "RECURSION_TEXT", "as_str",
           "converter", "payload_pair", "py_codec", "struct_codec"]

_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)

#: The most items an array or map of a typed payload may announce; msgpack
#: checks it from the header, before anything is allocated.
MAX_ITEMS = 1 << 20
#: The decode error (Go's msgp text) for a payload nested deeper than
#: msgpack's stack (1024 levels) or than the interpreter's recursion limit
#: lets a recursive type's decoder go.
RECURSION_TEXT = "msgp: recursion limit reached"

#: ``msgpack.unpackb`` within the payload limits.
_unpackb = functools.partial(msgpack.unpackb, max_array_len=MAX_ITEMS, max_map_len=MAX_ITEMS)


def _decode_error(exc: BaseException) -> ProtocolError:
    """The decode error for what msgpack or a converter raised: Go's text for
    nesting too deep, else ``msgp: `` and the exception's text."""
    if isinstance(exc, (msgpack.StackError, RecursionError)):
        return ProtocolError(RECURSION_TEXT)
    return ProtocolError(f"msgp: {exc}")


class ArrayOfBase:
    """The base of every ``ArrayOf[T]``: a msgpack array of ``item_type``."""

    item_type: Any = None


class JSONBase:
    """The base of every ``JSON[T]``: a bin of JSON text for ``item_type``."""

    item_type: Any = None


def as_str(v: Any) -> str:
    """An unpacked str (or bin, decoded as UTF-8) as str; anything else raises
    :class:`grid.ProtocolError`."""
    if isinstance(v, str):
        return v
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    raise ProtocolError(f"want str, got {type(v).__name__}")


# ------------------------------------------------------------ converters
# For each type: (to_wire, from_wire), where to_wire makes a msgpack-able
# object and from_wire turns what msgpack unpacked back into the type.
# Built once per type and cached.  A dataclass gets Python source generated
# for its fields (see _dataclass_conv): no per-field dispatch at call time.

_Conv = tuple[Callable[[Any], Any], Callable[[Any], Any]]
#: A payload codec: ``(encode, decode)`` between a value and its payload bytes.
Codec = tuple[Callable[[Any], Union[bytes, None]], Callable[[Union[bytes, None]], Any]]
_conv_cache: dict[Any, _Conv] = {}
_dc_codecs: dict[Any, Codec] = {}  # payload (encode, decode) of each dataclass built
py_codecs: dict[Any, Codec] = {}  # ... as generated (what a StructCodec falls back to)
_pending: dict[Any, _Conv] = {}  # dataclasses being built (under _build_lock)
_build_lock = threading.RLock()


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
    """The (to_wire, from_wire) pair for ``tp``, built once: ``to_wire`` makes
    an object msgpack can pack, ``from_wire`` turns what msgpack unpacked back
    into ``tp`` (raising :class:`grid.ProtocolError` for the wrong shape)."""
    c = _conv_cache.get(tp)
    if c is None:
        with _build_lock:
            c = _conv_cache.get(tp) or _pending.get(tp)
            if c is None:
                if dataclasses.is_dataclass(tp):
                    # A self-referential dataclass meets itself among its fields.
                    _pending[tp] = (lambda v: _conv_cache[tp][0](v),
                                    lambda v: _conv_cache[tp][1](v))
                try:
                    c = _build(tp)
                finally:
                    _pending.pop(tp, None)
                _conv_cache[tp] = c
    return c


def _build(tp: Any) -> _Conv:
    if tp is Any or tp is object:
        return _ident, _ident
    if tp is str:
        return _ident, as_str
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
    if isinstance(tp, type) and issubclass(tp, ArrayOfBase):
        enc, dec = converter(tp.item_type)
        return (lambda v: None if v is None else [enc(x) for x in v],
                lambda v: None if v is None else [dec(x) for x in _list(v)])
    if isinstance(tp, type) and issubclass(tp, JSONBase):
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
            enc_opt: Callable[[Any], Any] = _ident  # packs None as nil already
            if enc is not _ident:
                def enc_opt(v: Any) -> Any:
                    return None if v is None else enc(v)
            dec_opt: Callable[[Any], Any] = _ident
            if dec is not _ident:
                def dec_opt(v: Any) -> Any:
                    return None if v is None else dec(v)
            return enc_opt, dec_opt
        return _ident, _ident
    if origin in (list, tuple, typing.Sequence) or tp in (list, tuple):
        item = args[0] if args else Any
        enc, dec = converter(item)
        exact = _EXACT.get(item)
        enc_list: Callable[[Any], Any] = _ident
        if enc is not _ident:
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


# Types whose unpacked value is taken as it is when it has exactly that type
# (a list of them when every item has): what their from_wire would return.
_EXACT: dict[Any, type] = {str: str, int: int, bytes: bytes, bool: bool}
# The same for a field's own value (float's from_wire turns an int into a float).
_PLAIN: dict[Any, type] = {**_EXACT, float: float}


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
    return time_ext(delta.days * 86400 + delta.seconds, delta.microseconds * 1000)


def _time_from_wire(v: Any) -> _dt.datetime | None:
    if v is None:
        return None
    parts = time_parts(v)
    if parts is None:
        raise ProtocolError(f"want a time, got {type(v).__name__}")
    sec, nsec = parts
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


# ------------------------------------------------------------ dataclasses
# Each dataclass gets four functions compiled from generated source, once:
# to_obj / from_obj (its converter, used when it is nested in another type)
# and encode / decode (a whole payload: one Packer.pack of a dict literal;
# one msgpack.unpackb, then the fields read by key, a type test inline per
# field, and the instance made as its __init__ would).  Anything off the
# common shape (unknown, missing or bin keys; a wrong length) takes a general
# path that behaves like msgp's decoder (unknown keys skipped, missing ones at
# their defaults or zero values).  In accelerated mode a grid._struct
# StructCodec takes the payload encode / decode of a dataclass of simple
# fields (see struct_codec), in front of the generated pair.


class _Local(threading.local):
    """One reusable msgpack.Packer per thread (its ``pack`` method)."""

    def __init__(self) -> None:
        self.pack: Callable[[Any], bytes] = msgpack.Packer(use_bin_type=True).pack


_local = _Local()


def _fast_check(hint: Any, dec: Callable[[Any], Any], var: str, dname: str) -> list[str]:
    """Source lines turning the unpacked ``var`` into the field's value: a
    type test inline; the field's from_wire (``dname``) only when the value is
    not already what the field holds.  Mirrors what from_wire does."""
    if dec is _ident:
        return []
    origin = typing.get_origin(hint)
    guard = ""
    if origin in (Union, _types.UnionType):
        rest = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(rest) == 1:
            hint, guard = rest[0], f"{var} is not None and "
            origin = typing.get_origin(hint)
    plain = _PLAIN.get(hint)
    if plain is not None:
        return [f"if {guard}type({var}) is not {plain.__name__}:",
                f"    {var} = {dname}({var})"]
    if origin in (list, tuple, typing.Sequence) or hint in (list, tuple):
        args = typing.get_args(hint)
        exact = _EXACT.get(args[0] if args else Any)
        if exact is not None:
            return [f"if type({var}) is list:",
                    f"    for _x in {var}:",
                    f"        if type(_x) is not {exact.__name__}:",
                    f"            {var} = {dname}({var})",
                    "            break",
                    f"elif {var} is not None:",
                    f"    {var} = {dname}({var})"]
    return [f"{var} = {dname}({var})"]


def _is_name(name: str) -> bool:
    return name.isidentifier() and not keyword.iskeyword(name)


def _plain_init(tp: Any, fields: tuple[dataclasses.Field[Any], ...]) -> bool:
    """Whether ``tp(*values)`` does no more than create the instance and set
    each field in turn: its ``__init__`` is the one @dataclass generated (and
    its own), with no ``__post_init__``, InitVar, init=False field, frozen
    flag or custom ``__new__``.  Then a decoder may do just that itself."""
    params = getattr(tp, "__dataclass_params__", None)
    code = getattr(tp.__dict__.get("__init__"), "__code__", None)
    return (params is not None and params.init and not params.frozen
            and getattr(code, "co_qualname", "") == "__create_fn__.<locals>.__init__"
            and tp.__new__ is object.__new__
            and not hasattr(tp, "__post_init__")
            and len(getattr(tp, "__dataclass_fields__", ())) == len(fields)
            and all(f.init for f in fields))


def _construct(tp: Any, fields: tuple[dataclasses.Field[Any], ...]) -> str:
    """How a decoder makes an instance from its field values: ``"new"``
    (``object.__new__``, then each field set, when :func:`_plain_init`),
    ``"args"`` (``tp(*values)``) or ``"kwargs"`` (``tp(**values)``)."""
    if _plain_init(tp, fields):
        return "new"
    if all(f.init and not getattr(f, "kw_only", False) for f in fields):
        return "args"
    return "kwargs"


# The field kinds a StructCodec (grid._struct) takes, by type hint.
_STRUCT_KINDS: dict[Any, str] = {str: "str", int: "int", float: "float", bool: "bool",
                                 bytes: "bytes", list[str]: "list[str]", list[int]: "list[int]",
                                 typing.List[str]: "list[str]", typing.List[int]: "list[int]"}


def _struct_kind(hint: Any) -> str | None:
    """The StructCodec kind of a field's type hint, or None if it has none."""
    optional = typing.get_origin(hint) in (Union, _types.UnionType)
    if optional:
        args = typing.get_args(hint)
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1 or len(args) != 2:
            return None
        hint = rest[0]
    try:
        kind = _STRUCT_KINDS.get(hint)
    except TypeError:  # an unhashable hint
        return None
    return f"Optional[{kind}]" if optional and kind is not None else kind


def struct_codec(tp: Any, codec_class: Any = _StructCodec) -> Any:
    """A ``codec_class`` (the StructCodec of grid._struct or of its pure twin)
    for dataclass ``tp``, in front of its generated codec; None when a field
    is outside the kinds it takes (or wire names repeat, or do not encode)."""
    fields = dataclasses.fields(tp)
    hints = _hints(tp)
    spec: list[tuple[str, str, str]] = []
    for f in fields:
        kind = _struct_kind(hints[f.name])
        wire = f.metadata.get("msg", f.name)
        if kind is None or type(wire) is not str:
            return None
        try:
            wire.encode("utf-8")
        except UnicodeEncodeError:
            return None
        spec.append((f.name, wire, kind))
    tuple_layout = bool(getattr(tp, "__grid_tuple__", False))
    if not tuple_layout and len({w for _, w, _ in spec}) != len(spec):
        return None
    enc, dec = py_codecs[tp]
    return codec_class(tp, spec, tuple_layout=tuple_layout, construct=_construct(tp, fields),
                       fallback_encode=enc, fallback_decode=dec)


def py_codec(tp: Any) -> Codec:
    """The generated payload (encode, decode) of dataclass ``tp``, whatever
    :func:`grid.types.payload_codec` uses (for tests and benchmarks)."""
    converter(tp)
    return py_codecs[tp]


def _indent(lines: list[str], n: int) -> list[str]:
    return [" " * n + line for line in lines]


def _dataclass_conv(tp: Any) -> _Conv:
    fields = dataclasses.fields(tp)
    hints = _hints(tp)
    names = [f.name for f in fields]
    wire = [f.metadata.get("msg", f.name) for f in fields]
    convs = [converter(hints[n]) for n in names]
    decs = [c[1] for c in convs]
    tuple_layout = bool(getattr(tp, "__grid_tuple__", False))
    n_fields = len(fields)
    positional = all(f.init and not getattr(f, "kw_only", False) for f in fields)

    def construct(values: list[Any]) -> Any:
        if positional:
            return tp(*values)
        return tp(**dict(zip(names, values)))

    # -- the general paths (anything off the common shape)
    if tuple_layout:
        def slow(v: Any) -> Any:
            seq = _list(v)
            if len(seq) != n_fields:
                raise ProtocolError(f"{tp.__name__}: want {n_fields} elements, got {len(seq)}")
            return construct([d(x) for d, x in zip(decs, seq)])
    else:
        by_wire = {w: (n, d, _EXACT.get(hints[n])) for w, n, d in zip(wire, names, decs)}
        defaults: dict[str, Callable[[], Any]] = {}
        for f in fields:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                defaults[f.name] = functools.partial(_zero, hints[f.name])

        def slow(v: Any) -> Any:
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

    # -- the generated fast paths
    ns: dict[str, Any] = {"_tp": tp, "_PE": ProtocolError, "_unpackb": _unpackb,
                          "_err": _decode_error,
                          "_local": _local, "_getattr": getattr, "_setattr": setattr,
                          "_new": object.__new__, "_slow": slow}
    values = []
    for i, (name, (enc, dec)) in enumerate(zip(names, convs)):
        attr = f"v.{name}" if _is_name(name) else f"_getattr(v, {name!r})"
        if enc is not _ident:
            ns[f"_e{i}"] = enc
            attr = f"_e{i}({attr})"
        values.append(attr)
        ns[f"_d{i}"] = dec
    if tuple_layout:
        obj = "[" + ", ".join(values) + "]"
    else:
        obj = "{" + ", ".join(f"{w!r}: {x}" for w, x in zip(wire, values)) + "}"
    fvars = [f"f{i}" for i in range(n_fields)]
    how = _construct(tp, fields)
    if how == "new":  # what its __init__ would do, without the call
        make = ["o = _new(_tp)"]
        make += [f"o.{n} = {f}" if _is_name(n) else f"_setattr(o, {n!r}, {f})"
                 for n, f in zip(names, fvars)]
        make.append("return o")
    elif how == "args":
        make = [f"return _tp({', '.join(fvars)})"]
    else:
        make = ["return _tp(**{" + ", ".join(f"{n!r}: {f}" for n, f in zip(names, fvars)) + "})"]

    # The body shared by from_obj and decode: ``v`` is what msgpack unpacked.
    body: list[str] = []
    if tuple_layout:
        body.append(f"if type(v) is list and len(v) == {n_fields}:")
        if fvars:
            body.append(f"    {', '.join(fvars)}, = v")
    else:
        body.append(f"if type(v) is dict and len(v) == {n_fields}:")
        if fvars:
            body += ["    try:"]
            body += [f"        {f} = v[{w!r}]" for f, w in zip(fvars, wire)]
            body += ["    except KeyError:", "        return _slow(v)"]
    for i, (name, dec) in enumerate(zip(names, decs)):
        body += _indent(_fast_check(hints[name], dec, f"f{i}", f"_d{i}"), 4)
    body += _indent(make, 4) + ["if v is None:", "    return None", "return _slow(v)"]

    src = ["def to_obj(v):",
           "    if v is None:",
           "        return None",
           f"    return {obj}",
           "",
           "def encode(v):",
           "    if v is None:",
           "        return b'\\xc0'",
           f"    return _local.pack({obj})",
           "",
           "def from_obj(v):"]
    src += _indent(body, 4)
    src += ["",
            "def decode(data):",
            "    if not data:",
            "        return None",
            "    try:",
            "        v = _unpackb(data)",
            "    except Exception as exc:",
            "        raise _err(exc) from None",
            "    try:"]
    src += _indent(body, 8)
    src += ["    except _PE:",
            "        raise",
            "    except (TypeError, ValueError, KeyError, AttributeError, RecursionError) as exc:",
            "        raise _err(exc) from None"]
    code = "\n".join(src) + "\n"
    exec(compile(code, f"<grid codec {tp.__module__}.{tp.__qualname__}>", "exec"), ns)
    py_codecs[tp] = _dc_codecs[tp] = (ns["encode"], ns["decode"])
    # The compiled StructCodec goes straight between instance and bytes; in
    # pure mode the generated code (one C msgpack call) beats its pure twin.
    if _ACCELERATED:
        sc = struct_codec(tp)
        if sc is not None:
            _dc_codecs[tp] = (sc.encode, sc.decode)
    return ns["to_obj"], ns["from_obj"]


# ------------------------------------------------------------ payloads


def _generic_codec(tp: Any) -> Codec:
    to_wire, from_wire = converter(tp)
    local = _local
    unpackb = _unpackb

    def encode(v: Any) -> bytes | None:
        return local.pack(to_wire(v))

    def decode(data: bytes | None) -> Any:
        if not data:
            return from_wire(None)
        try:
            # unpackb's defaults are what from_wire expects: str as str, bin
            # as bytes, map keys str or bytes, timestamps as msgpack.Timestamp.
            obj = unpackb(data)
        except Exception as exc:
            raise _decode_error(exc) from None
        try:
            return from_wire(obj)
        except ProtocolError:
            raise
        except (TypeError, ValueError, KeyError, AttributeError, RecursionError) as exc:
            raise _decode_error(exc) from None

    return encode, decode


def payload_pair(tp: Any) -> Codec:
    """The payload ``(encode, decode)`` pair of ``tp`` (any type but NoPayload):
    a dataclass's generated or struct codec, else one msgpack call around
    ``tp``'s converter.  Raises TypeError for a type grid cannot serialise."""
    converter(tp)
    return _dc_codecs.get(tp) or _generic_codec(tp)
