"""msgpack serialisation of typed payloads, compatible with Go's msgp.

A dataclass maps to msgp's default struct layout: a map keyed by field name,
in declaration order, so a Go struct with the same field names (or ``msg``
tags) interoperates.  Decoding skips unknown keys and leaves missing keys at
their defaults (or the type's zero value), as msgp does.  A dataclass opts
into msgp's tuple layout (a positional array) with ``__grid_tuple__ = True``;
a field is renamed on the wire with ``field(metadata={"msg": "Name"})``.
A ``datetime.datetime`` travels as msgp's time (naive values count as UTC).

Any other class takes part by defining ``__grid_pack__(self) -> object``
(something msgpack can pack) and ``classmethod __grid_unpack__(cls, obj)``.

Built-in payload types mirroring the Go grid's helpers (docs/protocol.md
Appendix A): :class:`NoPayload`, :class:`MSS`, :class:`Bytes`,
:class:`URLValues`, :class:`ArrayOf`, :class:`JSON`.

Each type's codec is built once and cached (:func:`payload_codec`) by
:mod:`grid._typecodec`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from grid._typecodec import ArrayOfBase, Codec, JSONBase, as_str, payload_pair
from grid._typecodec import converter as converter  # the per-type converters, for tests
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
    "payload_codec",
]

T = TypeVar("T")


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
        return cls({as_str(k): as_str(v) for k, v in obj.items()})


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
        return cls({as_str(k): [as_str(x) for x in (v or [])] for k, v in obj.items()})


class ArrayOf(Generic[T]):
    """``ArrayOf[T]``: Go's ``grid.Array[T]``, a msgpack array of T (nil for None).

    Values are plain lists; the subscripted type only tells the codec the
    element type."""

    _cache: dict[Any, Any] = {}

    def __class_getitem__(cls, item: Any) -> Any:
        if item not in cls._cache:
            cls._cache[item] = type(f"ArrayOf[{getattr(item, '__name__', item)}]", (ArrayOfBase,),
                                    {"item_type": item})
        return cls._cache[item]


class JSON(Generic[T]):
    """``JSON[T]``: Go's ``grid.JSON[T]``, a bin holding JSON text (with the
    trailing newline Go's encoder writes).  Values are T itself; a dataclass
    T round-trips through its fields."""

    _cache: dict[Any, Any] = {}

    def __class_getitem__(cls, item: Any) -> Any:
        if item not in cls._cache:
            cls._cache[item] = type(f"JSON[{getattr(item, '__name__', item)}]", (JSONBase,),
                                    {"item_type": item})
        return cls._cache[item]


# ------------------------------------------------------------ payloads

_codec_cache: dict[Any, Codec] = {}


def _no_encode(v: Any) -> None:
    return None


def _no_decode(data: bytes | None) -> NoPayload:
    return NoPayload()


def payload_codec(tp: Any) -> tuple[Callable[[Any], bytes | None], Callable[[bytes | None], Any]]:
    """The ``(encode, decode)`` pair for payloads of type ``tp``, built once
    per type: ``encode(value)`` is :func:`encode_payload` and
    ``decode(data)`` is :func:`decode_payload` for that type, without the
    look-up.  Raises TypeError for a type grid cannot serialise."""
    c = _codec_cache.get(tp)
    if c is None:
        if tp is NoPayload or tp is None:
            c = (_no_encode, _no_decode)
        else:
            c = payload_pair(tp)
        _codec_cache[tp] = c
    return c


def encode_payload(tp: Any, value: Any) -> bytes | None:
    """Serialise ``value`` of type ``tp`` to a grid payload (None for NoPayload)."""
    c = _codec_cache.get(tp) or payload_codec(tp)
    return c[0](value)


def decode_payload(tp: Any, data: bytes | None) -> Any:
    """Turn a grid payload back into a value of type ``tp``; malformed data
    raises :class:`grid.ProtocolError`."""
    c = _codec_cache.get(tp) or payload_codec(tp)
    return c[1](data)
