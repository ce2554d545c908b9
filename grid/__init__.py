"""grid: MinIO-compatible multiplexed RPC and streams between servers.

See README.md for the quick start.  ``grid.ACCELERATED`` tells whether the
compiled core is in use (``GRID_PURE=1`` forces the pure-Python twins).
"""

from __future__ import annotations

from typing import Any

from grid._consts import LOCK_ROUTE_PATH, ROUTE_PATH
from grid._impl import ACCELERATED, IMPLEMENTATION
from grid.errors import (
    Disconnected,
    GridError,
    HandlerAlreadyExists,
    IncorrectSequence,
    ProtocolError,
    Rejected,
    RemoteError,
    UnknownHandler,
    UsedAfterFork,
)

__version__ = "0.1.0"

__all__ = [
    "ACCELERATED",
    "IMPLEMENTATION",
    "ROUTE_PATH",
    "LOCK_ROUTE_PATH",
    "GridError",
    "ProtocolError",
    "RemoteError",
    "Disconnected",
    "UnknownHandler",
    "HandlerAlreadyExists",
    "IncorrectSequence",
    "Rejected",
    "UsedAfterFork",
]

from grid.connection import Connection, ConnectionStats, State, Subroute  # noqa: E402
from grid.handlers import CallContext, current_call  # noqa: E402
from grid.manager import Manager, ManagerStats  # noqa: E402
from grid.stream import Stream, StreamContext, StreamHandler, StreamOut  # noqa: E402
from grid.typed import SingleHandler, StreamTypeHandler, TypedStream, TypedStreamOut  # noqa: E402
from grid.types import JSON, MSS, ArrayOf, Bytes, NoPayload, URLValues  # noqa: E402
from grid.errors import RemoteUnknownHandler  # noqa: E402
from grid.trace import CallTrace  # noqa: E402


def run(main: "Any") -> "Any":
    """Run a coroutine on uvloop when it is installed, else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        import asyncio

        return asyncio.run(main)
    return uvloop.run(main)


def dials(local: str, remote: str) -> bool:
    """Whether the node ``local`` dials ``remote`` (grid's dial rule, the same
    on every node); when it does not, it waits for ``remote`` to dial it."""
    from grid._impl import local_dials

    return bool(local_dials(local, remote))


__all__ += [
    "dials",
    "Manager",
    "ManagerStats",
    "Connection",
    "ConnectionStats",
    "State",
    "Subroute",
    "CallContext",
    "current_call",
    "RemoteUnknownHandler",
    "Stream",
    "StreamContext",
    "StreamHandler",
    "StreamOut",
    "SingleHandler",
    "StreamTypeHandler",
    "TypedStream",
    "TypedStreamOut",
    "NoPayload",
    "MSS",
    "Bytes",
    "URLValues",
    "ArrayOf",
    "JSON",
    "run",
    "CallTrace",
]
