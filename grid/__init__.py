"""grid: MinIO-compatible multiplexed RPC and streams between servers.

See README.md for the quick start.  ``grid.ACCELERATED`` tells whether the
compiled core is in use (``GRID_PURE=1`` forces the pure-Python twins).
"""

from __future__ import annotations

from typing import Any

from grid._consts import LOCK_ROUTE_PATH, ROUTE_PATH
from grid import errors as _errors
from grid import types as _types
from grid._impl import ACCELERATED, IMPLEMENTATION
# the "X as X" form marks each as exported for type checkers (__all__ is built)
from grid.errors import (
    Disconnected as Disconnected,
    GridError as GridError,
    HandlerAlreadyExists as HandlerAlreadyExists,
    IncorrectSequence as IncorrectSequence,
    MessageTooLarge as MessageTooLarge,
    ProtocolError as ProtocolError,
    Rejected as Rejected,
    RemoteError as RemoteError,
    RemoteUnknownHandler as RemoteUnknownHandler,
    UnknownHandler as UnknownHandler,
    UsedAfterFork as UsedAfterFork,
)

__version__ = "0.1.0"

__all__ = [
    "ACCELERATED",
    "IMPLEMENTATION",
    "ROUTE_PATH",
    "LOCK_ROUTE_PATH",
    # the exception classes (grid.errors also holds Go's wire texts)
    *(name for name in _errors.__all__ if not name.endswith(("_TEXT", "_text"))),
]

from grid.connection import Connection, ConnectionStats, State, Subroute  # noqa: E402
from grid.handlers import CallContext, current_call  # noqa: E402
from grid.manager import Manager, ManagerStats  # noqa: E402
from grid.stream import Stream, StreamContext, StreamHandler, StreamOut  # noqa: E402
from grid.typed import SingleHandler, StreamTypeHandler, TypedStream, TypedStreamOut  # noqa: E402
from grid.types import JSON as JSON, MSS as MSS, ArrayOf as ArrayOf  # noqa: E402
from grid.types import Bytes as Bytes, NoPayload as NoPayload, URLValues as URLValues  # noqa: E402
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
    "Stream",
    "StreamContext",
    "StreamHandler",
    "StreamOut",
    "SingleHandler",
    "StreamTypeHandler",
    "TypedStream",
    "TypedStreamOut",
    # the payload types (grid.types also holds the codec functions)
    *(name for name in _types.__all__ if name[0].isupper()),
    "run",
    "CallTrace",
]
