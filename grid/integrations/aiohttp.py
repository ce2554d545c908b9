"""Mount a grid node's route into an existing aiohttp application.

aiohttp owns the socket and the WebSocket framing (``web.WebSocketResponse``);
grid exchanges whole messages with it:

.. code-block:: python

    app = web.Application()
    app.router.add_get("/health", health)                 # your routes stay
    mgr = grid.Manager("http://10.0.0.1:9000", hosts, auth_fn, validate_token)
    grid.integrations.aiohttp.mount(app, mgr)
    web.run_app(app, host="10.0.0.1", port=9000)

The upgrade request is validated by :meth:`grid.Manager.check_upgrade` (token,
clock skew, WebSocket headers) before aiohttp answers 101, so a refused peer
gets the same HTTP error as from the embedded server.

Why not hand the raw socket to :meth:`grid.Manager.adopt`?  aiohttp has no
public way to detach a connection: its request handler would still own the
transport, answer after the handler returns and track the connection for
shutdown.  Bridging whole messages costs a little (see
``benchmarks/integrations.py``) and keeps aiohttp in charge of its socket.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import WSMsgType, web

from grid.integrations._wire import DEFAULT_HIGH_WATER, DEFAULT_LOW_WATER, MessageWire, error_parts

if TYPE_CHECKING:
    from grid.manager import Manager

__all__ = ["mount", "grid_handler"]

_SHUTDOWN_WAIT = 5.0  # seconds on_shutdown waits for grid WebSockets to close


def grid_handler(manager: Manager, *, high_water: int = DEFAULT_HIGH_WATER,
                 low_water: int = DEFAULT_LOW_WATER,
                 wires: weakref.WeakSet[MessageWire] | None = None,
                 ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """An aiohttp request handler serving ``manager``'s grid route; use
    :func:`mount` unless you route it yourself.  ``wires``, if given,
    collects the live grid WebSockets (for shutdown)."""

    async def handle(request: web.Request) -> web.StreamResponse:
        status, response = manager.check_upgrade(request.method, request.path_qs,
                                                  request.headers)
        if status != 101:
            headers, body = error_parts(response)
            refusal = web.Response(status=status, body=body,  # aiohttp sets the length
                                   headers=[h for h in headers if h[0].lower() != "content-length"])
            refusal.force_close()  # as the embedded server: no keep-alive after a refusal
            return refusal
        ws = web.WebSocketResponse(autoping=True, compress=False, heartbeat=None,
                                   max_msg_size=manager.max_message_size)
        await ws.prepare(request)

        async def close(code: int) -> None:
            await ws.close(code=code)

        wire = MessageWire(manager, ws.send_bytes, close, str(request.remote),
                           high_water=high_water, low_water=low_water)
        if wires is not None:
            wires.add(wire)
        reason = "connection closed by peer"
        try:
            while True:
                msg = await ws.receive()
                if msg.type is WSMsgType.BINARY:
                    wire.on_binary(msg.data)
                    await wire.readable()
                elif msg.type is WSMsgType.TEXT:
                    wire.on_text(msg.data)
                elif msg.type is WSMsgType.ERROR:
                    reason = f"websocket error: {msg.data!r}"
                    break
                elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                    reason = f"websocket closed (code {ws.close_code})"
                    break
        finally:
            wire.lost(reason)
        return ws

    return handle


def mount(app: web.Application, manager: Manager, *, path: str | None = None,
          manage: bool = True, high_water: int = DEFAULT_HIGH_WATER,
          low_water: int = DEFAULT_LOW_WATER) -> None:
    """Serve ``manager``'s grid route (default ``manager.route_path``) from
    ``app``, next to the app's other routes.

    :param manage: start the manager (``start(serve=False)``) in the app's
        ``on_startup`` and close it in ``on_shutdown``; with False you do both
        yourself, on the app's event loop.
    :param high_water: bytes queued towards one peer before its callers wait.
    :param low_water: bytes queued below which they resume.

    At shutdown (``on_shutdown``) every grid WebSocket of this app is dropped
    and closed, so that aiohttp does not wait for them.
    """
    wires: weakref.WeakSet[MessageWire] = weakref.WeakSet()
    app.router.add_route("GET", path if path is not None else manager.route_path,
                         grid_handler(manager, high_water=high_water, low_water=low_water,
                                      wires=wires))

    async def close_wires(_app: web.Application) -> None:
        live = [w for w in wires if not w.closed.done()]
        for w in live:
            w.fail("server shutting down")
        pending = [w.closed for w in live if not w.closed.done()]
        if pending:
            await asyncio.wait(pending, timeout=_SHUTDOWN_WAIT)

    if manage:
        async def start(_app: web.Application) -> None:
            await manager.start(serve=False)

        async def stop(_app: web.Application) -> None:
            await manager.close()

        app.on_startup.append(start)
        app.on_shutdown.append(stop)
    app.on_shutdown.append(close_wires)
