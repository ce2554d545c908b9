"""Shared fixtures: every codec/mux test runs once per twin.

The pure twins (``py``) are always there; the compiled ones (``cy``) are added
when ``grid._codec`` / ``grid._mux`` import, whatever ``GRID_PURE`` says, so
both twins are checked in both runs of the suite (aiohttp ``REQUEST_PARSERS``).
``GRID_PURE`` only decides what ``grid._impl`` hands to the public modules.
Benchmarks and fuzz harnesses live outside ``tests/`` (``testpaths``), so they
are never collected.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import pytest

import grid._impl
from grid import _codec_py, _mux_py

#: True when this run was started with GRID_PURE=1 (the pure twins are selected).
PURE = grid._impl.PURE_REQUESTED


def _optional(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


#: The compiled twins, or None when they are not built.
codec_cy = _optional("grid._codec")
mux_cy = _optional("grid._mux")
struct_cy = _optional("grid._struct")

CODEC_TWINS = [_codec_py] + ([codec_cy] if codec_cy is not None else [])
MUX_TWINS = [_mux_py] + ([mux_cy] if mux_cy is not None else [])
CODEC_IDS = ["py"] + (["cy"] if codec_cy is not None else [])
MUX_IDS = ["py"] + (["cy"] if mux_cy is not None else [])

#: (reference, candidate) for cross-twin checks: (py, cy), or (py, py) as a
#: sanity run of the same checks when the compiled twin is not built.
CODEC_PAIR = (_codec_py, codec_cy if codec_cy is not None else _codec_py)
CODEC_PAIR_ID = "py-cy" if codec_cy is not None else "py-py"


@pytest.fixture(params=CODEC_TWINS, ids=CODEC_IDS)
def codec(request: pytest.FixtureRequest) -> ModuleType:
    """One codec twin per test instance (``grid._codec_py`` / ``grid._codec``)."""
    return request.param


@pytest.fixture(params=MUX_TWINS, ids=MUX_IDS)
def mux(request: pytest.FixtureRequest) -> ModuleType:
    """One mux twin per test instance (``grid._mux_py`` / ``grid._mux``)."""
    return request.param


@pytest.fixture(params=[CODEC_PAIR], ids=[CODEC_PAIR_ID])
def codec_pair(request: pytest.FixtureRequest) -> tuple[ModuleType, ModuleType]:
    """(pure, compiled) codec twins for comparisons; (pure, pure) if not built."""
    return request.param


@pytest.fixture(params=["asyncio", "uvloop"])
def loop_kind(request: pytest.FixtureRequest) -> str:
    """Which event loop a connection-level test's coroutine runs on."""
    return request.param
