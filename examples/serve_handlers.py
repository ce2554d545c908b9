"""Example handler module for ``grid serve`` (used by ``examples/node.toml``).

``grid serve --handlers examples/serve_handlers.py`` (a file path) or
``--handlers serve_handlers`` (a module on ``sys.path``) loads it.  The
convention: a module defines ``HANDLERS``, ``register(mgr)``, or both.

``HANDLERS``
    maps a handler id (1..255), or ``(id, "sub/route")``, to a function
    ``fn(payload: bytes | None) -> bytes | None`` (plain functions run inline
    on the event loop and must not block; ``async def`` ones run as tasks) or
    to a :class:`grid.StreamHandler`.
``register(mgr)``
    is called with the :class:`grid.Manager` before it starts, for what a
    table cannot say: typed handlers, state shared between handlers.  It may
    be ``async``.

Handlers of this example (a caller registers the same stream and typed ids
to use them; see :func:`register`):

====  ===========  ====================================================
id    subroute     what
====  ===========  ====================================================
1                  echo: returns the payload unchanged
2     ``text``     upper: returns the payload in upper case
3                  whoami: ``"<this node> serves <caller>"``
4                  fail: always raises ``RemoteError("refused: <payload>")``
10                 two-way stream (capacities 8/8): echoes each item upper-cased
11                 typed: ``Usage(Disk)`` -> ``Usage(Disk, Used=40, Total=100)``
====  ===========  ====================================================
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import grid

ECHO, UPPER, WHOAMI, FAIL, UPPER_STREAM, USAGE_ID = 1, 2, 3, 4, 10, 11


def echo(payload: bytes | None) -> bytes | None:
    """Return the payload unchanged."""
    return payload


async def upper(payload: bytes | None) -> bytes:
    """Return the payload in upper case (an ``async`` handler)."""
    return (payload or b"").upper()


def fail(payload: bytes | None) -> bytes:
    """Always fail: the caller gets ``grid.RemoteError`` with this text."""
    raise grid.RemoteError(f"refused: {(payload or b'').decode(errors='replace')}")


async def upper_stream(ctx: grid.StreamContext, payload: bytes | None,
                       inbound: AsyncIterator[bytes] | None, out: grid.StreamOut) -> None:
    """Echo every item of the caller's stream, upper-cased, then end."""
    assert inbound is not None
    async for item in inbound:
        await out.send(item.upper())


@dataclasses.dataclass
class Usage:
    """A typed payload (a msgp map ``{"Disk", "Used", "Total"}``)."""

    Disk: str
    Used: int = 0
    Total: int = 0


#: The typed handler; callers use ``USAGE.call(conn, Usage("/mnt/disk1"))``.
USAGE: grid.SingleHandler[Usage, Usage] = grid.SingleHandler(USAGE_ID, Usage, Usage)

#: Plain handlers and a stream, by id (or (id, subroute)).
HANDLERS = {
    ECHO: echo,
    (UPPER, "text"): upper,
    FAIL: fail,
    UPPER_STREAM: grid.StreamHandler(upper_stream, in_capacity=8, out_capacity=8),
}


def register(mgr: grid.Manager) -> None:
    """Register what needs the manager: ``whoami`` names this node, and the
    typed ``Usage`` handler."""

    def whoami(payload: bytes | None) -> bytes:
        call = grid.current_call()
        caller = call.caller if call is not None else "?"
        return f"{mgr.local} serves {caller}".encode()

    mgr.register_single(WHOAMI, whoami)
    USAGE.register(mgr, lambda u: Usage(u.Disk, 40, 100))
