"""grid: MinIO-compatible multiplexed RPC and streams between servers.

See README.md for the quick start.  ``grid.ACCELERATED`` tells whether the
compiled core is in use (``GRID_PURE=1`` forces the pure-Python twins).
"""

from __future__ import annotations

from grid._consts import LOCK_ROUTE_PATH, ROUTE_PATH, Op
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
)

__version__ = "0.1.0"

__all__ = [
    "ACCELERATED",
    "IMPLEMENTATION",
    "ROUTE_PATH",
    "LOCK_ROUTE_PATH",
    "Op",
    "GridError",
    "ProtocolError",
    "RemoteError",
    "Disconnected",
    "UnknownHandler",
    "HandlerAlreadyExists",
    "IncorrectSequence",
    "Rejected",
]
