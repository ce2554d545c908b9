"""One surface, proved: the twins export the same names with the same
signatures, and the GRID_PURE / GRID_REQUIRE_ACCEL switches behave as
documented in grid/_impl.py (STYLE.md "What to absorb" 1-3)."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import grid
import grid._impl
from grid import _codec_py, _mux_py, _struct_py

from conftest import PURE, codec_cy, mux_cy, struct_cy

ROOT = Path(__file__).resolve().parents[2]

PAIRS = [
    pytest.param(_codec_py, codec_cy, id="codec"),
    pytest.param(_mux_py, mux_cy, id="mux"),
    pytest.param(_struct_py, struct_cy, id="struct"),
]
PURE_TWINS = [pytest.param(_codec_py, id="codec"), pytest.param(_mux_py, id="mux"),
              pytest.param(_struct_py, id="struct")]


def _compiled_or_skip(cy):
    if cy is None:
        if PURE:
            pytest.skip("GRID_PURE=1 and the compiled twin is not built")
        pytest.fail("the compiled twin does not import: build it with `setup.py build_ext --inplace`")
    return cy


def _bare(sig: inspect.Signature) -> inspect.Signature:
    """Names, kinds and defaults only: annotations differ legitimately
    (the pure twin's are strings, Cython's are C types)."""
    params = [p.replace(annotation=inspect.Parameter.empty) for p in sig.parameters.values()]
    return sig.replace(parameters=params, return_annotation=inspect.Signature.empty)


def _signature(obj, what: str) -> inspect.Signature:
    try:
        return _bare(inspect.signature(obj))
    except (ValueError, TypeError) as exc:
        pytest.fail(
            f"no introspectable signature for {what}: {exc}. For a cdef class, start its docstring "
            f"with a text signature line, e.g. 'Name(arg, kw=default)\\n--\\n\\n', so that "
            f"inspect.signature(cls) works; def methods need binding=True (Cython 3 default)."
        )


def _public(cls) -> set[str]:
    return {n for n in dir(cls) if not n.startswith("_")}


@pytest.mark.parametrize("mod", PURE_TWINS)
def test_pure_twins_export_what_they_define(mod):
    assert mod.__all__, mod.__name__
    for name in mod.__all__:
        obj = getattr(mod, name)
        if isinstance(obj, int):  # a constant (LARGE_FRAME): no __module__
            continue
        assert obj.__module__ == mod.__name__, name


@pytest.mark.parametrize("mod", PURE_TWINS)
def test_impl_reexports_every_twin_name(mod):
    # grid._impl re-exports each twin name from the selected twin.
    selected = {_codec_py: grid._impl.codec, _mux_py: grid._impl.mux, _struct_py: grid._impl.structs}[mod]
    assert selected.__name__ in (mod.__name__, mod.__name__.removesuffix("_py"))
    for name in mod.__all__:
        assert hasattr(grid._impl, name), name
        assert getattr(grid._impl, name) is getattr(selected, name), name


@pytest.mark.parametrize("py,cy", PAIRS)
def test_same_names(py, cy):
    cy = _compiled_or_skip(cy)
    assert list(cy.__all__) == list(py.__all__)
    for name in py.__all__:
        assert hasattr(cy, name), name
        assert inspect.isclass(getattr(cy, name)) == inspect.isclass(getattr(py, name)), name


@pytest.mark.parametrize("py,cy", PAIRS)
def test_same_signatures(py, cy):
    cy = _compiled_or_skip(cy)
    for name in py.__all__:
        p, c = getattr(py, name), getattr(cy, name)
        if isinstance(p, int):  # a constant: the same value, no signature
            assert type(c) is type(p) and c == p, name
            continue
        # For a class this is the constructor (__init__ for the pure twin).
        assert _signature(c, f"{cy.__name__}.{name}") == _signature(p, name), name
        if not inspect.isclass(p):
            continue
        assert _public(c) == _public(p), name
        for attr in sorted(_public(p)):
            if not callable(getattr(p, attr)):
                continue  # slots and properties: presence is checked above
            ca = getattr(c, attr)
            assert callable(ca), f"{name}.{attr}"
            assert _signature(ca, f"{cy.__name__}.{name}.{attr}") == _signature(getattr(p, attr), attr), \
                f"{name}.{attr}"


def _exception_classes(mod) -> dict[str, type]:
    """The exception classes a twin can raise: those it names, those of the
    other grid twin modules it calls, and those of the grid modules whose
    functions it calls (its private helper modules)."""
    found: dict[str, type] = {}
    helpers = [sys.modules[v.__module__] for v in vars(mod).values() if inspect.isfunction(v)
               and v.__module__.startswith("grid._") and v.__module__ != mod.__name__]
    for value in [mod] + [v for v in vars(mod).values() if inspect.ismodule(v)
                          and v.__name__.startswith("grid._") and v is not mod] + helpers:
        for name, obj in vars(value).items():
            if inspect.isclass(obj) and issubclass(obj, BaseException) \
                    and obj.__module__.startswith("grid"):
                found[name] = obj
    return found


@pytest.mark.parametrize("py,cy", PAIRS)
def test_same_exception_classes(py, cy):
    # Both twins raise the shared classes of grid.errors, not look-alikes, and
    # neither raises a class the other lacks.
    import grid.errors as errors

    cy = _compiled_or_skip(cy)
    p, c = _exception_classes(py), _exception_classes(cy)
    assert p, f"{py.__name__} raises none of grid.errors' classes"
    assert sorted(c) == sorted(p)
    for name, cls in p.items():
        assert cls is getattr(errors, name, None), f"{py.__name__}.{name} is not grid.errors.{name}"
        assert c[name] is cls, f"{cy.__name__}.{name} is not grid.errors.{name}"


@pytest.mark.skipif(PURE, reason="GRID_PURE=1 selects the pure twins on purpose")
def test_accelerated_loaded():
    # aiohttp's test_c_parser_loaded: a wheel or build without the compiled
    # core must not pass the accelerated run.
    assert grid.ACCELERATED is True
    assert grid.IMPLEMENTATION == "cython"
    assert codec_cy is not None and mux_cy is not None
    assert codec_cy.__name__ == "grid._codec" and mux_cy.__name__ == "grid._mux"
    assert grid._impl.codec is codec_cy
    assert grid._impl.mux is mux_cy
    assert grid._impl.FrameParser is codec_cy.FrameParser
    assert grid._impl.MuxState is mux_cy.MuxState
    assert struct_cy is not None and struct_cy.__name__ == "grid._struct"
    assert grid._impl.structs is struct_cy
    assert grid._impl.StructCodec is struct_cy.StructCodec


def test_pure_mode_selects_pure_twins():
    if not PURE:
        pytest.skip("only meaningful under GRID_PURE=1 (the accelerated run checks the other side)")
    assert grid.ACCELERATED is False
    assert grid.IMPLEMENTATION == "pure"
    assert grid._impl.codec is _codec_py
    assert grid._impl.mux is _mux_py
    assert grid._impl.structs is _struct_py


# ---------------------------------------------------------------- the switches, in fresh interpreters

PROBE = textwrap.dedent("""
    import importlib.abc, logging, sys
    BLOCK = {block!r}

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name in BLOCK:
                raise ImportError("simulated broken extension " + name)
            return None

    sys.meta_path.insert(0, Block())
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    logging.getLogger().addHandler(Keep())
    try:
        import grid, grid._impl
    except ImportError as exc:
        print("ImportError", exc)
        raise SystemExit(0)
    warnings = [r for r in records if r.levelno == logging.WARNING]
    print(grid._impl.PURE_REQUESTED, grid.ACCELERATED, grid.IMPLEMENTATION,
          grid._impl.codec.__name__, grid._impl.mux.__name__, grid._impl.structs.__name__,
          len(warnings))
    for r in warnings:
        print("W", r.name, r.getMessage())
""")


def _probe(env: dict[str, str], block: tuple[str, ...] = ()) -> list[str]:
    full = {k: v for k, v in os.environ.items() if k not in ("GRID_PURE", "GRID_REQUIRE_ACCEL")}
    full["PYTHONPATH"] = str(ROOT)
    full.update(env)
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(block=set(block))],
        cwd=ROOT, env=full, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


@pytest.mark.parametrize("value", ["1", "true", "yes", "TRUE", "Yes", " 1 "])
def test_grid_pure_on(value):
    lines = _probe({"GRID_PURE": value, "GRID_REQUIRE_ACCEL": "1"})
    assert lines == ["True False pure grid._codec_py grid._mux_py grid._struct_py 0"]


@pytest.mark.parametrize("value", [None, "", "0", "false", "no", "off"])
def test_grid_pure_off(value):
    env = {} if value is None else {"GRID_PURE": value}
    first = _probe(env)[0].split()
    assert first[0] == "False"  # not requested
    if codec_cy is not None and mux_cy is not None and struct_cy is not None:
        assert first[1:] == ["True", "cython", "grid._codec", "grid._mux", "grid._struct", "0"]
    else:  # nothing to load: the visible fallback
        assert first[1:] == ["False", "pure", "grid._codec_py", "grid._mux_py", "grid._struct_py", "1"]


@pytest.mark.parametrize("block", [("grid._codec",), ("grid._mux",), ("grid._struct",),
                                   ("grid._codec", "grid._mux", "grid._struct")],
                         ids=["codec", "mux", "struct", "all"])
def test_broken_extension_falls_back_with_one_warning(block):
    lines = _probe({}, block)
    assert lines[0] == "False False pure grid._codec_py grid._mux_py grid._struct_py 1"
    assert len(lines) == 2 and lines[1].startswith("W grid ")
    assert "compiled core unavailable" in lines[1]
    if "grid._codec" in block or codec_cy is not None:
        assert "simulated broken extension" in lines[1]


@pytest.mark.parametrize("block", [("grid._codec",), ("grid._mux",), ("grid._struct",)],
                         ids=["codec", "mux", "struct"])
def test_require_accel_turns_fallback_into_import_error(block):
    lines = _probe({"GRID_REQUIRE_ACCEL": "1"}, block)
    assert len(lines) == 1 and lines[0].startswith("ImportError GRID_REQUIRE_ACCEL=1")
    if "grid._codec" in block or codec_cy is not None:  # else _codec fails first, for real
        assert "simulated broken extension" in lines[0]
    # "0" is off, like GRID_PURE.
    assert _probe({"GRID_REQUIRE_ACCEL": "0"}, block)[0].endswith(" 1")


def test_pure_request_wins_over_require_accel():
    lines = _probe({"GRID_PURE": "1", "GRID_REQUIRE_ACCEL": "1"}, ("grid._codec", "grid._mux", "grid._struct"))
    assert lines == ["True False pure grid._codec_py grid._mux_py grid._struct_py 0"]
