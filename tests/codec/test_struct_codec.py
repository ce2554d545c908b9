"""grid._struct / grid._struct_py: the dataclass struct codec is the generated
codec of grid._typecodec, only faster.

Every check compares a StructCodec twin with that generated codec (what it
falls back to, ``grid._typecodec.py_codec``): the same bytes from ``encode``, the
same objects (types, attribute order, float bits) or the same exception
(class and text) from ``decode``, for valid, foreign-but-valid, truncated and
corrupted inputs.  The pure twin always runs; the compiled one when built.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import inspect
import struct
from types import ModuleType
from typing import Any, List, Optional

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import grid
import grid._impl
import grid._typecodec
from grid import _struct_py
from grid._typecodec import py_codec, struct_codec
from grid.types import payload_codec

from conftest import PURE, struct_cy


def _compiled_or_skip() -> ModuleType:
    if struct_cy is None:
        if PURE:
            pytest.skip("GRID_PURE=1 and grid._struct is not built (the pure twin still runs)")
        pytest.fail("grid._struct does not import: build it with `setup.py build_ext --inplace`")
    return struct_cy


@pytest.fixture(params=["py", "cy"])
def twin(request: pytest.FixtureRequest) -> ModuleType:
    """One StructCodec twin per test instance."""
    return _struct_py if request.param == "py" else _compiled_or_skip()


_HC = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture]
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=_HC)


# ---------------------------------------------------------------- dataclasses


@dataclasses.dataclass
class Small:  # benchmarks/streams.py's payload
    Name: str
    Count: int
    Tags: List[str]


@dataclasses.dataclass
class Every:
    s: str
    i: int
    f: float
    b: bool
    raw: bytes
    ls: list[str]
    li: List[int]
    os: Optional[str]
    oi: Optional[int]
    of: float | None
    ob: Optional[bool]
    oraw: Optional[bytes]
    ols: Optional[List[str]]
    oli: list[int] | None
    ren: int = dataclasses.field(default=7, metadata={"msg": "Renamed é"})


@dataclasses.dataclass
class Tup:
    __grid_tuple__ = True
    A: int
    B: str
    C: Optional[bytes]
    D: list[int]


@dataclasses.dataclass(frozen=True)
class Frozen:  # made with tp(*values)
    A: int
    B: str = "b"


@dataclasses.dataclass(frozen=True, kw_only=True)
class KwOnly:  # made with tp(**values)
    A: int
    B: str = "b"


@dataclasses.dataclass
class Checked:  # __post_init__: made with tp(*values), its errors mapped
    A: int
    B: str

    def __post_init__(self) -> None:
        if self.A < 0:
            raise ValueError(f"negative A {self.A}")
        if self.B == "key":
            raise KeyError("B")
        if self.B == "pe":
            raise grid.ProtocolError("checked")
        if self.B == "rt":
            raise RuntimeError("not mapped")


@dataclasses.dataclass(slots=True)
class Slotted:
    A: int
    B: Optional[str] = None


Wide = dataclasses.make_dataclass("Wide", [(f"f{i:02}", int) for i in range(20)])  # map16
Wider = dataclasses.make_dataclass("Wider", [(f"f{i:02}", str, "") for i in range(16)],
                                   namespace={"__grid_tuple__": True})  # array16
Empty = dataclasses.make_dataclass("Empty", [])

SUPPORTED = [Small, Every, Tup, Frozen, KwOnly, Checked, Slotted, Wide, Wider, Empty]


@dataclasses.dataclass
class Inner:
    A: int


@dataclasses.dataclass
class Nested:
    In: Inner


@dataclasses.dataclass
class WithDict:
    M: dict[str, int]


@dataclasses.dataclass
class WithTime:
    T: Optional[dt.datetime]


@dataclasses.dataclass
class WithAny:
    A: Any


@dataclasses.dataclass
class WithTuple:
    T: tuple[int, ...]


@dataclasses.dataclass
class WithUnion:
    U: int | str


@dataclasses.dataclass
class WithNestedList:
    L: list[list[int]]


@dataclasses.dataclass
class SameWire:
    A: int = dataclasses.field(metadata={"msg": "X"})
    B: int = dataclasses.field(metadata={"msg": "X"})


@dataclasses.dataclass
class SurrogateWire:
    A: int = dataclasses.field(metadata={"msg": "\udc80"})


UNSUPPORTED = [Nested, WithDict, WithTime, WithAny, WithTuple, WithUnion, WithNestedList, SameWire,
               SurrogateWire]


# ---------------------------------------------------------------- helpers


def _canon(x: Any) -> Any:
    """What two decoded results must agree on: types all the way down,
    float bits, attribute order."""
    t = type(x)
    if t is float:
        return t, struct.pack(">d", x)
    if t in (list, tuple):
        return t, tuple(_canon(i) for i in x)
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        attrs = vars(x).items() if hasattr(x, "__dict__") else \
            [(f.name, getattr(x, f.name)) for f in dataclasses.fields(x)]
        return t, tuple((k, _canon(v)) for k, v in attrs)
    return t, x


def _outcome(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
    try:
        return "ok", _canon(fn(*args, **kwargs))
    except Exception as exc:  # the class and text are what must agree
        return "raise", type(exc), str(exc)


_codecs: dict[tuple[Any, Any], Any] = {}


def _sc(tp: Any, twin: ModuleType) -> Any:
    key = (tp, twin)
    if key not in _codecs:
        payload_codec(tp)
        _codecs[key] = struct_codec(tp, twin.StructCodec)
    return _codecs[key]


_stricts: dict[tuple[Any, Any], Any] = {}


def _strict(tp: Any, twin: ModuleType) -> Any:
    """``tp``'s codec with fallbacks that fail: for what the fast path must
    handle itself (the other checks would pass if everything fell back)."""
    key = (tp, twin)
    if key not in _stricts:
        def fell_back(x: Any) -> Any:
            raise AssertionError(f"fell back on {x!r:.200}")

        payload_codec(tp)
        saved = grid._typecodec.py_codecs[tp]
        grid._typecodec.py_codecs[tp] = (fell_back, fell_back)
        try:
            _stricts[key] = struct_codec(tp, twin.StructCodec)
        finally:
            grid._typecodec.py_codecs[tp] = saved
    return _stricts[key]


def _check_decode(tp: Any, twin: ModuleType, data: Any) -> tuple[Any, ...]:
    want = _outcome(py_codec(tp)[1], data)
    assert _outcome(_sc(tp, twin).decode, data) == want, data
    return want


def _check_encode(tp: Any, twin: ModuleType, value: Any) -> tuple[Any, ...]:
    want = _outcome(py_codec(tp)[0], value)
    assert _outcome(_sc(tp, twin).encode, value) == want
    return want


# ---------------------------------------------------------------- surface


def test_same_surface() -> None:
    cy = _compiled_or_skip()
    assert list(cy.__all__) == list(_struct_py.__all__) == ["StructCodec", "TypedHandler"]
    py_c, cy_c = _struct_py.StructCodec, cy.StructCodec

    def bare(obj: Any) -> inspect.Signature:
        sig = inspect.signature(obj)
        return sig.replace(parameters=[p.replace(annotation=inspect.Parameter.empty)
                                       for p in sig.parameters.values()],
                           return_annotation=inspect.Signature.empty)

    assert bare(cy_c) == bare(py_c)
    public = {n for n in dir(py_c) if not n.startswith("_")}
    assert {n for n in dir(cy_c) if not n.startswith("_")} == public == {"encode", "decode"}
    for name in public:
        assert bare(getattr(cy_c, name)) == bare(getattr(py_c, name)), name
    assert bare(cy.TypedHandler) == bare(_struct_py.TypedHandler)
    assert {n for n in dir(cy.TypedHandler) if not n.startswith("_")} == set()
    assert {n for n in dir(_struct_py.TypedHandler) if not n.startswith("_")} == set()


def test_impl_selects_struct_like_codec() -> None:
    want = _struct_py if not grid.ACCELERATED else struct_cy
    assert grid._impl.structs is want
    assert grid._impl.StructCodec is want.StructCodec


def test_payload_codec_uses_compiled_codec_when_accelerated() -> None:
    enc, dec = payload_codec(Small)
    if grid.ACCELERATED:
        assert type(enc.__self__) is struct_cy.StructCodec and dec.__self__ is enc.__self__
    else:  # the generated code beats the pure twin
        assert (enc, dec) == py_codec(Small)
    for tp in UNSUPPORTED:
        assert payload_codec(tp) == py_codec(tp)


@pytest.mark.parametrize("tp", SUPPORTED, ids=lambda t: t.__name__)
def test_supported_dataclasses_get_a_codec(twin: ModuleType, tp: Any) -> None:
    assert isinstance(_sc(tp, twin), twin.StructCodec)


@pytest.mark.parametrize("tp", UNSUPPORTED, ids=lambda t: t.__name__)
def test_other_dataclasses_keep_the_generated_codec(twin: ModuleType, tp: Any) -> None:
    assert _sc(tp, twin) is None


def test_constructor_errors_agree(twin: ModuleType) -> None:
    enc, dec = py_codec(Small)
    good = [("A", "A", "int")]
    cases: list[tuple[Any, Any, dict[str, Any]]] = [
        (42, good, {}),
        (Small, [("A", "A", "dict")], {}),
        (Small, [("A", "A", "Optional[list[float]]")], {}),
        (Small, [("A", "A", ["int"])], {}),
        (Small, [("A", b"A", "int")], {}),
        (Small, [(1, "A", "int")], {}),
        (Small, [("A", "A", "int"), ("B", "A", "str")], {}),
        (Small, good, {"construct": "init"}),
        (Small, [("A", "\ud800", "int")], {}),
        (Small, [("A", "A")], {}),
    ]
    for tp, fields, kw in cases:
        args = {"tuple_layout": False, "construct": "new", "fallback_encode": enc,
                "fallback_decode": dec, **kw}
        want = _outcome(_struct_py.StructCodec, tp, fields, **args)
        assert want[0] == "raise"
        assert _outcome(twin.StructCodec, tp, fields, **args) == want
    # Repeated wire names are fine in the tuple layout (there are no keys).
    twin.StructCodec(Small, [("A", "A", "int"), ("B", "A", "str")], tuple_layout=True,
                     construct="args", fallback_encode=enc, fallback_decode=dec)


# ---------------------------------------------------------------- values

EDGE_INTS = [0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1,
             -1, -32, -33, -128, -129, -32768, -32769, -2**31, -2**31 - 1, -2**63]
LONG_STRS = ["a" * 31, "a" * 32, "é" * 15, "é" * 16, "x" * 255, "x" * 256, "ü" * 200, "z" * 65535,
             "z" * 65536, "€" * 30000]
LONG_BYTES = [b"\x00" * 255, b"\x01" * 256, b"\x02" * 65535, b"\x03" * 65536, b"\x04" * 70000]

INTS = st.one_of(st.sampled_from(EDGE_INTS), st.integers(-2**63, 2**64 - 1))
STRS = st.one_of(st.text(), st.sampled_from(LONG_STRS))
SHORT_STRS = st.text(max_size=40)
BYTES_ = st.one_of(st.binary(), st.sampled_from(LONG_BYTES))
FLOATS = st.floats(allow_nan=True, allow_infinity=True)
STR_LISTS = st.lists(SHORT_STRS, max_size=20)
INT_LISTS = st.lists(INTS, max_size=20)

EVERY = st.builds(
    Every, s=STRS, i=INTS, f=FLOATS, b=st.booleans(), raw=BYTES_, ls=STR_LISTS, li=INT_LISTS,
    os=st.none() | STRS, oi=st.none() | INTS, of=st.none() | FLOATS, ob=st.none() | st.booleans(),
    oraw=st.none() | BYTES_, ols=st.none() | STR_LISTS, oli=st.none() | INT_LISTS, ren=INTS)
SMALL = st.builds(Small, Name=STRS, Count=INTS, Tags=STR_LISTS)
TUP = st.builds(Tup, A=INTS, B=STRS, C=st.none() | BYTES_, D=INT_LISTS)
OTHERS = st.one_of(
    st.builds(Frozen, A=INTS, B=SHORT_STRS), st.builds(KwOnly, A=INTS, B=SHORT_STRS),
    st.builds(Checked, A=st.integers(0, 2**64 - 1), B=SHORT_STRS.filter(lambda b: b not in ("key", "pe", "rt"))),
    st.builds(Slotted, A=INTS, B=st.none() | SHORT_STRS),
    st.builds(Wide, *[INTS] * 20), st.builds(Wider, *[SHORT_STRS] * 16), st.builds(Empty))
VALUES = st.one_of(EVERY, SMALL, TUP, OTHERS)


def _round_trip(twin: ModuleType, v: Any) -> None:
    tp = type(v)
    ref = py_codec(tp)[0](v)
    fields = dataclasses.fields(tp)
    if getattr(tp, "__grid_tuple__", False):
        obj: Any = [getattr(v, f.name) for f in fields]
    else:
        obj = {f.metadata.get("msg", f.name): getattr(v, f.name) for f in fields}
    assert ref == msgpack.Packer(use_bin_type=True).pack(obj)
    data = _strict(tp, twin).encode(v)
    assert type(data) is bytes and data == ref
    assert _check_decode(tp, twin, data)[0] == "ok"
    assert _canon(_strict(tp, twin).decode(data)) == _canon(v)


@SETTINGS
@given(v=VALUES)
def test_round_trip_matches_generated_codec(twin: ModuleType, v: Any) -> None:
    _round_trip(twin, v)


@SETTINGS
@given(v=VALUES)
def test_twins_agree_byte_for_byte(v: Any) -> None:
    cy = _compiled_or_skip()
    tp = type(v)
    data = _sc(tp, _struct_py).encode(v)
    assert _sc(tp, cy).encode(v) == data
    assert _canon(_sc(tp, cy).decode(data)) == _canon(_sc(tp, _struct_py).decode(data))


@pytest.mark.parametrize("n", [0, 15, 16, 65535, 65536])
def test_container_length_boundaries(twin: ModuleType, n: int) -> None:
    _round_trip(twin, Every("", 0, 0.0, False, b"", ["s"] * n, list(range(n)), None, None, None,
                            None, None, None if n % 2 else [], [-1] * n))
    _round_trip(twin, Small("x" * n, n, []))


def test_edge_values(twin: ModuleType) -> None:
    for i in EDGE_INTS:
        _round_trip(twin, Small("", i, []))
        _round_trip(twin, Tup(i, "", None, [i, -1, i]))
    for s in LONG_STRS:
        _round_trip(twin, Small(s, 0, [s, ""]))
    for b in LONG_BYTES:
        _round_trip(twin, Tup(0, "", b, []))
    for f in (0.0, -0.0, 1.5, float("inf"), float("-inf"), float("nan"), 5e-324, 1.7976931348623157e308):
        _round_trip(twin, Every("", 0, f, True, b"", [], [], None, None, f, False, b"", [], None))


def test_strings_of_every_short_length_and_byte_position(twin: ModuleType) -> None:
    # ASCII and non-ASCII text at each length around the eight-byte steps the
    # compiled decoder scans ASCII in, with the odd byte in every position.
    for n in range(20):
        s = "".join(chr(97 + i % 26) for i in range(n))
        _round_trip(twin, Small(s, n, [s, s[:1]]))
        for i in range(n):
            _round_trip(twin, Small(s[:i] + "é" + s[i + 1:], i, [s[:i] + "\x7f" + s[i + 1:]]))
            bad = bytearray(_sc(Small, twin).encode(Small(s, 0, [])))
            bad[2 + len("Name") + 1 + i] = 0xFF  # invalid UTF-8 in Name: the fallback's error
            assert _check_decode(Small, twin, bytes(bad))[0] != "ok"


# ---------------------------------------------------------------- the typed handler


def _handler_parts(twin: ModuleType) -> tuple[Any, Any, Any]:
    codec = _sc(Small, twin)
    enc, dec = codec.encode, codec.decode
    return enc, dec, (lambda exc: ValueError(f"bad: {exc}"))


def test_typed_handler_decodes_calls_and_encodes(twin: ModuleType) -> None:
    enc, dec, on_error = _handler_parts(twin)
    seen: list[Any] = []

    def fn(v: Small) -> Small:
        seen.append(v)
        return Small(v.Name.upper(), v.Count + 1, v.Tags + ["x"])

    for h in (twin.TypedHandler(fn, dec, enc, on_error),  # a StructCodec's own methods
              twin.TypedHandler(fn, lambda d: dec(d), lambda v: enc(v), on_error)):  # any callables
        seen.clear()
        out = h(enc(Small("ab", 1, ["t"])))
        assert type(out) is bytes and dec(out) == Small("AB", 2, ["t", "x"])
        assert seen == [Small("ab", 1, ["t"])]
        # A payload that does not decode raises what on_decode_error makes of it, fn unreached.
        with pytest.raises(ValueError, match="^bad: msgp") as info:
            h(b"\xc1")
        assert info.value.__cause__ is None and info.value.__suppress_context__
        assert len(seen) == 1
    # Errors of fn and of encode propagate as they are.
    with pytest.raises(KeyError):
        twin.TypedHandler(lambda v: {}["k"], dec, enc, on_error)(enc(Small("a", 0, [])))
    assert twin.TypedHandler(lambda v: None, dec, enc, on_error)(enc(Small("a", 0, []))) == b"\xc0"
    with pytest.raises(AttributeError):
        twin.TypedHandler(lambda v: object(), dec, enc, on_error)(enc(Small("a", 0, [])))


def test_typed_handler_takes_only_callables(twin: ModuleType) -> None:
    enc, dec, on_error = _handler_parts(twin)
    for args, what in (((1, dec, enc, on_error), "fn"), ((len, None, enc, on_error), "decode"),
                       ((len, dec, b"", on_error), "encode"), ((len, dec, enc, 0), "on_decode_error")):
        with pytest.raises(TypeError, match=f"TypedHandler: {what} must be callable"):
            twin.TypedHandler(*args)


# ---------------------------------------------------------------- encode: values off the kinds


class IntSub(int):
    pass


class StrSub(str):
    pass


class FloatSub(float):
    pass


def _small_like(**kw: Any) -> Small:
    v = Small("n", 1, ["t"])
    for k, x in kw.items():
        object.__setattr__(v, k, x)
    return v


ODD_VALUES = [
    {"Count": True}, {"Count": 2**64}, {"Count": 2**64 + 5}, {"Count": -2**63 - 1}, {"Count": -2**100},
    {"Count": IntSub(5)}, {"Count": 1.5}, {"Count": FloatSub(2.0)}, {"Count": None}, {"Count": "7"},
    {"Name": StrSub("x")}, {"Name": b"bin"}, {"Name": bytearray(b"ba")}, {"Name": memoryview(b"mv")},
    {"Name": "\ud800"}, {"Name": "ok\udcff"}, {"Name": None}, {"Name": object()}, {"Name": {"a": 1}},
    {"Name": ("t", "u")}, {"Tags": ("a", "b")}, {"Tags": [["nested"]]}, {"Tags": [1, None, True, 2.5, b"b"]},
    {"Tags": ["a", "\udc00"]}, {"Tags": ["a", 2**64]}, {"Tags": ["a", IntSub(3)]}, {"Tags": None},
    {"Tags": {"a"}}, {"Tags": [{"k": 1}]}, {"Tags": "str"}, {"Tags": [msgpack.ExtType(1, b"x")]},
    {"Name": dt.datetime(2020, 1, 1)}, {"Count": msgpack.Timestamp(1, 0)},
]


@pytest.mark.parametrize("kw", ODD_VALUES, ids=range(len(ODD_VALUES)))
def test_encode_values_off_the_kinds(twin: ModuleType, kw: dict[str, Any]) -> None:
    _check_encode(Small, twin, _small_like(**kw))


def test_encode_odd_objects(twin: ModuleType) -> None:
    class Bad:
        Name = "x"

        @property
        def Count(self) -> int:
            raise RuntimeError("no count")

    class Lookalike:
        Name, Count, Tags = "x", 3, ["y"]

    for v in (None, object(), {"Name": "x", "Count": 1, "Tags": []}, Bad(), Lookalike(),
              Every("", 0, 0.0, False, b"", [], [], None, None, None, None, None, None, None)):
        _check_encode(Small, twin, v)
    assert _sc(Small, twin).encode(None) == b"\xc0"


# ---------------------------------------------------------------- decode: foreign encodings


def _s(text: str, form: str = "fix") -> bytes:
    raw = text.encode()
    head = {"fix": bytes([0xA0 | len(raw)]) if len(raw) < 32 else None,
            "8": b"\xd9" + bytes([len(raw)]), "16": b"\xda" + len(raw).to_bytes(2, "big"),
            "32": b"\xdb" + len(raw).to_bytes(4, "big")}[form]
    assert head is not None
    return head + raw


N, C, T = _s("Name"), _s("Count"), _s("Tags")
TAGS = b"\x92" + _s("a") + _s("b")

# Foreign but valid encodings the fast path takes itself ...
FAST_FOREIGN = [
    msgpack.packb({"Tags": ["a"], "Count": 1, "Name": "x"}),     # other order
    msgpack.packb({"Count": 1, "Name": "x", "Tags": []}),
    msgpack.packb({"Name": "x", "Count": 1, "Tags": None}),            # nil list: None
    b"\x83" + N + _s("x", "8") + C + b"\xcd\x00\x05" + T + TAGS,     # str8, int wider than needed
    b"\x83" + N + _s("x", "16") + C + b"\xcf" + b"\x00" * 7 + b"\x01" + T + b"\xdc\x00\x01" + _s("a", "32"),
    # keys as str8/str32/str16, int64 -1, array32
    b"\x83" + _s("Name", "8") + _s("x") + _s("Count", "32") + b"\xd3" + b"\xff" * 8 + _s("Tags", "16") + b"\x90",
    b"\x83" + N + _s("x") + C + b"\xd0\x05" + T + b"\xdd\x00\x00\x00\x00",
    b"\x83" + N + _s("x") + C + b"\xd3\x80" + b"\x00" * 7 + T + b"\x90",   # int64 min
    b"\x83" + N + _s("x") + C + b"\xcf" + b"\xff" * 8 + T + b"\x90",        # uint64 max
    b"\x83" + N + _s("x") + C + b"\xe0" + T + b"\x90",                     # -32
    b"\xde\x00\x03" + N + _s("x") + C + b"\x01" + T + b"\x90",             # map16
    b"\xdf\x00\x00\x00\x03" + N + _s("x") + C + b"\x01" + T + b"\x90",     # map32
]
# ... and inputs it hands to the generated codec.
SLOW_FOREIGN = [
    msgpack.packb({"Name": "x", "Count": 1, "Tags": [], "Extra": 1}),  # unknown key
    msgpack.packb({"Name": "x", "Count": 1, "Other": []}),           # unknown instead of one
    msgpack.packb({"Name": "x", "Count": 1}),                          # missing key
    msgpack.packb({}),
    msgpack.packb({"Name": "x", "Count": 1, "Tags": [1, 2]}),          # wrong item type
    msgpack.packb({"Name": b"bin", "Count": 1, "Tags": [b"b", "s"]}),  # bin for str
    msgpack.packb({"Name": None, "Count": None, "Tags": []}),
    msgpack.packb({"Name": "x", "Count": 1.0, "Tags": []}),
    msgpack.packb({"Name": "x", "Count": True, "Tags": []}),
    msgpack.packb({"Name": "x", "Count": 1, "Tags": "notalist"}),
    msgpack.packb({"Name": {"x": 1}, "Count": 1, "Tags": []}),
    msgpack.packb({"Name": "x", "Count": 1, "Tags": [["x"]]}),
    msgpack.packb({"Name": "x", "Count": msgpack.ExtType(3, b"e"), "Tags": []}),
    msgpack.packb({"Name": "x", "Count": msgpack.Timestamp(5, 7), "Tags": []}, datetime=False),
    msgpack.packb(["x", 1, []]),                                       # array for a map type
    msgpack.packb("x"), msgpack.packb(None), msgpack.packb(5),
    b"\x83" + N + b"\xcd\x00\x05" + C + b"\xcd\x00\x05" + T + TAGS,  # wide int for str
    b"\x83" + N + _s("x") + N + _s("y") + C + b"\x01",                     # repeated key
    b"\x83" + N + _s("x") + C + b"\x01" + N + _s("y"),
    b"\x83" + b"\xc4\x04Name" + _s("x") + C + b"\x01" + T + b"\x90",       # bin key
    b"\x83" + N + _s("x") + C + b"\x01" + b"\x05" + b"\x90",               # int key
    b"\x83" + N + _s("x") + C + b"\x01" + T + b"\x90" + b"\x00",           # trailing byte
    b"\x83" + N + _s("x") + C + b"\x01" + T + b"\x90" + b"\xc1",
    b"\x83" + N + b"\xa2\xff\xfe" + C + b"\x01" + T + b"\x90",             # invalid UTF-8
    b"\x83" + N + _s("x") + C + b"\x01" + T + b"\x91\xa1\x80",
    b"\x83" + b"\xa4Nam\xff" + _s("x") + C + b"\x01" + T + b"\x90",
    b"\x83" + N + b"\xa3\xed\xa0\x80" + C + b"\x01" + T + b"\x90",         # encoded surrogate
    b"\x83" + N + _s("x") + C + b"\x01" + T + b"\x91\xc1",
    b"\x83" + N + _s("x") + C + b"\xc1" + T + b"\x90",
    b"\x83" + N + _s("x") + C + b"\x01" + T + b"\xdc\xff\xff",             # array longer than the input
    b"\x83" + N + b"\xdb\xff\xff\xff\xff" + C + b"\x01",                   # str longer than the input
    b"\xdf\xff\xff\xff\xff" + N, b"\x8f", b"\x80", b"\x90", b"\xc0", b"\xc1", b"\x00", b"",
]
FOREIGN_SMALL = FAST_FOREIGN + SLOW_FOREIGN


def test_fast_path_takes_foreign_common_shapes(twin: ModuleType) -> None:
    for data in FAST_FOREIGN:
        assert _outcome(_strict(Small, twin).decode, data) == _check_decode(Small, twin, data)
    v = Every("s", -5, 1.25, True, b"r", ["a"], [1, -1], None, 3, None, False, b"", None, [2])
    obj = {f.metadata.get("msg", f.name): getattr(v, f.name) for f in dataclasses.fields(Every)}
    for data in (msgpack.packb(dict(reversed(obj.items()))),
                 msgpack.packb({**obj, "f": 1.1, "of": -2.5}, use_single_float=True)):
        assert _outcome(_strict(Every, twin).decode, data) == _check_decode(Every, twin, data)


@pytest.mark.parametrize("data", FOREIGN_SMALL, ids=range(len(FOREIGN_SMALL)))
def test_decode_foreign_encodings(twin: ModuleType, data: bytes) -> None:
    _check_decode(Small, twin, data)


def test_decode_foreign_encodings_of_every_kind(twin: ModuleType) -> None:
    v = Every("s", -5, 1.25, True, b"r", ["a"], [1, -1], None, 3, None, False, b"", None, [2])
    base = {f.metadata.get("msg", f.name): getattr(v, f.name) for f in dataclasses.fields(Every)}
    swaps: list[dict[str, Any]] = [
        {"f": 3}, {"f": 2**64 - 1}, {"f": True}, {"f": None}, {"of": 7}, {"b": 1}, {"b": None},
        {"raw": "str for bytes"}, {"raw": None}, {"oraw": "é"}, {"raw": bytearray(b"x")},
        {"ls": None}, {"li": None}, {"li": [True]}, {"li": [1.0]}, {"oli": ["x"]}, {"ols": [1]},
        {"os": b"bin"}, {"oi": 1.5}, {"ob": 0}, {"i": -2**63}, {"i": 2**64 - 1}, {"s": ""},
        {"Renamed é": None}, {"ren": 1},
    ]
    for swap in swaps:
        _check_decode(Every, twin, msgpack.packb({**base, **swap}))
    for drop in base:
        _check_decode(Every, twin, msgpack.packb({k: x for k, x in base.items() if k != drop}))
    _check_decode(Every, twin, msgpack.packb(dict(reversed(base.items()))))
    # float32 for a float (msgpack gives the float32's value), as the generated codec takes it.
    f32 = {**base, "f": 1.1, "of": -2.5}
    assert _check_decode(Every, twin, msgpack.packb(f32, use_single_float=True))[0] == "ok"
    # The tuple layout: other lengths, nil, a map.
    for obj in ([1, "x", None, []], [1, "x", b"b", [2]], [1, "x", None], [1, "x", None, [], 5],
                [1, 2, None, []], [1, "x", "s", []], None, {"A": 1}, [1, "x", None, None]):
        _check_decode(Tup, twin, msgpack.packb(obj))


def test_decode_construct_modes_and_errors(twin: ModuleType) -> None:
    for tp, obj in [(Frozen, {"A": 1, "B": "x"}), (Frozen, {"A": 1}), (KwOnly, {"B": "y", "A": 2}),
                    (KwOnly, {"A": 2, "B": "y"}), (Slotted, {"A": 1, "B": None}), (Slotted, {"A": 1}),
                    (Checked, {"A": 1, "B": "ok"}), (Checked, {"A": -1, "B": "x"}),
                    (Checked, {"A": 1, "B": "key"}), (Checked, {"A": 1, "B": "pe"}),
                    (Checked, {"A": 1, "B": "rt"}), (Wide, {f"f{i:02}": i for i in range(20)}),
                    (Empty, {}), (Empty, {"x": 1})]:
        _check_decode(tp, twin, msgpack.packb(obj))
    assert _check_decode(Checked, twin, msgpack.packb({"A": -1, "B": "x"})) == \
        ("raise", grid.ProtocolError, "msgp: negative A -1")


def test_decode_non_bytes_inputs(twin: ModuleType) -> None:
    data = msgpack.packb({"Name": "x", "Count": 1, "Tags": []})
    for x in (None, b"", bytearray(data), memoryview(data), bytearray(), "text", 5):
        _check_decode(Small, twin, x)


# ---------------------------------------------------------------- decode: truncated and corrupted

SAMPLES = [
    Small("bucket/prefix/object-000123", 123456, ["alpha", "beta", "gamma"]),
    Every("s" * 40, -2**40, -0.5, True, b"\x00" * 300, ["a", "é" * 20], [0, 2**63, -33], "o", -1, 2.5,
          True, b"", ["x"], [65536], 2**32),
    Tup(2**33, "t", b"b", [1, -129]),
]


@pytest.mark.parametrize("value", SAMPLES, ids=lambda v: type(v).__name__)
def test_every_prefix(twin: ModuleType, value: Any) -> None:
    tp = type(value)
    data = py_codec(tp)[0](value)
    for k in range(len(data)):
        assert _check_decode(tp, twin, data[:k])[0] == ("ok" if k == 0 else "raise")


@SETTINGS
@given(data=st.binary(max_size=64))
def test_random_bytes(twin: ModuleType, data: bytes) -> None:
    for tp in (Small, Tup, Every):
        _check_decode(tp, twin, data)


@SETTINGS
@given(which=st.integers(0, len(SAMPLES) - 1), edits=st.lists(
    st.tuples(st.sampled_from(["set", "insert", "delete"]), st.integers(0, 2**16), st.integers(0, 255)),
    min_size=1, max_size=4))
def test_corrupted_encodings(twin: ModuleType, which: int, edits: list[tuple[str, int, int]]) -> None:
    value = SAMPLES[which]
    data = bytearray(py_codec(type(value))[0](value))
    for op, at, byte in edits:
        at %= len(data) + 1
        if op == "insert":
            data.insert(at, byte)
        elif at < len(data):
            if op == "set":
                data[at] = byte
            else:
                del data[at]
    _check_decode(type(value), twin, bytes(data))


def test_every_single_byte_change_of_small(twin: ModuleType) -> None:
    data = py_codec(Small)[0](SAMPLES[0])
    for at in range(len(data)):
        for byte in (0x00, 0x7F, 0x80, 0x90, 0xA0, 0xC0, 0xC1, 0xC4, 0xCA, 0xCB, 0xCC, 0xCF, 0xD3,
                     0xD9, 0xDB, 0xDC, 0xDE, 0xDF, 0xE0, 0xFF, data[at] ^ 1):
            corrupted = data[:at] + bytes([byte]) + data[at + 1:]
            _check_decode(Small, twin, corrupted)
