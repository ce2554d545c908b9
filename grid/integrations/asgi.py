"""Serve a grid node from an ASGI server (uvicorn, hypercorn, ...).

The server owns the socket and the WebSocket framing; grid gets whole
messages through the ASGI WebSocket interface (``websocket.receive`` /
``websocket.send``).  Wrap your application (or none) with :class:`GridASGI`:

.. code-block:: python

    mgr = grid.Manager("http://10.0.0.1:9000", hosts, auth_fn, validate_token)
    mgr.register_single(ECHO, echo)
    app = GridASGI(mgr, your_asgi_app)   # grid route + everything else to your app
    # uvicorn module:app --host 10.0.0.1 --port 9000

With ``manage=True`` (the default) the ASGI lifespan starts the manager
(``start(serve=False)``: it dials the peers it should dial) and closes it at
shutdown; the server must run the lifespan protocol (uvicorn ``lifespan="on"``
or ``"auto"``; hypercorn always does) and a wrapped app must support it too.
With ``manage=False`` you start and close the manager yourself, on the
server's event loop.

Messages larger than the server's own limit (uvicorn ``ws_max_size``, 16 MiB
by default; hypercorn ``websocket_max_message_size``) are refused by the
server before grid sees them: set it to the manager's ``max_message_size``
if you send large payloads.  Disable per-message compression
(``ws_per_message_deflate=False``): grid payloads rarely compress and the
Go grid does not negotiate it.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from grid import _http
from grid.integrations._wire import DEFAULT_HIGH_WATER, DEFAULT_LOW_WATER, MessageWire, error_parts

if TYPE_CHECKING:
    from grid.manager import Manager

__all__ = ["GridASGI", "Scope", "Receive", "Send", "ASGIApp"]

log = logging.getLogger("grid.integrations.asgi")

#: An ASGI connection scope.
Scope = MutableMapping[str, Any]
#: The ASGI receive callable.
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
#: The ASGI send callable.
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
#: An ASGI 3 application.
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class GridASGI:
    """An ASGI 3 application serving the grid route of ``manager`` and
    passing every other request (HTTP, WebSocket and lifespan) to ``app``.

    :param manager: the node's :class:`grid.Manager`; its host string names
        the address the ASGI server listens on.
    :param app: the application behind it; ``None`` answers 404.
    :param path: the grid route (default: ``manager.route_path``).
    :param manage: start the manager at lifespan startup and close it at
        lifespan shutdown.
    :param high_water: bytes queued towards one peer before its callers wait.
    :param low_water: bytes queued below which they resume.
    """

    def __init__(self, manager: Manager, app: ASGIApp | None = None, *, path: str | None = None,
                 manage: bool = True, high_water: int = DEFAULT_HIGH_WATER,
                 low_water: int = DEFAULT_LOW_WATER) -> None:
        self.manager = manager
        self.app = app
        self.path = path if path is not None else manager.route_path
        self.manage = manage
        self.high_water = high_water
        self.low_water = low_water
        self._wires: weakref.WeakSet[MessageWire] = weakref.WeakSet()
        self._refusing = False

    async def close_connections(self, timeout: float = 5.0) -> None:
        """Drop every grid WebSocket this app serves, refuse new ones (503)
        until the next lifespan startup, and wait (at most ``timeout``
        seconds) until the server reports them closed.

        uvicorn closes WebSockets itself when it shuts down; hypercorn waits
        ``graceful_timeout`` for them and then cancels them, so call this
        from its ``shutdown_trigger`` after the trigger fires (hypercorn
        still listens then: without the refusal the peers, which redial at
        once, would come straight back)."""
        self._refusing = True
        live = [w for w in self._wires if not w.closed.done()]
        for w in live:
            w.fail("server shutting down")
        pending = [w.closed for w in live if not w.closed.done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "websocket" and scope.get("path") == self.path:
            await self._serve_grid(scope, receive, send)
        elif kind == "http" and scope.get("path") == self.path:
            await self._plain_http(scope, send)
        elif kind == "lifespan":
            await self._lifespan(scope, receive, send)
        elif self.app is not None:
            await self.app(scope, receive, send)
        elif kind == "http":
            await _respond(send, 404, [("Content-Type", "text/plain; charset=utf-8")],
                           b"not found\n")
        elif kind == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1008})

    # -- lifespan

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.app is None:
            await _plain_lifespan(receive, send, self._startup, self._shutdown)
            return

        async def wrapped() -> MutableMapping[str, Any]:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await self._startup()
            elif msg["type"] == "lifespan.shutdown":
                await self._shutdown()
            return msg

        await self.app(scope, wrapped, send)

    async def _startup(self) -> None:
        self._refusing = False
        if self.manage:
            await self.manager.start(serve=False)

    async def _shutdown(self) -> None:
        if self.manage:
            await self.manager.close()

    # -- the grid route

    async def _plain_http(self, scope: Scope, send: Send) -> None:
        status, response = self.manager.check_upgrade(scope.get("method", "GET"),
                                                      _target(scope), _headers(scope))
        headers, body = error_parts(response)
        await _respond(send, status if status != 101 else 426, headers, body)

    async def _serve_grid(self, scope: Scope, receive: Receive, send: Send) -> None:
        msg = await receive()
        if msg["type"] != "websocket.connect":
            return
        status, response = self.manager.check_upgrade("GET", _target(scope), _headers(scope))
        if status == 101 and self._refusing:
            status, response = 503, _http.error_response(503, "grid: server shutting down")
        if status != 101:
            client = scope.get("client")
            log.info("grid: refused upgrade from %s: HTTP %d", client, status)
            headers, body = error_parts(response)
            if "websocket.http.response" in (scope.get("extensions") or {}):
                await send({"type": "websocket.http.response.start", "status": status,
                            "headers": [(k.lower().encode("latin-1"), v.encode("latin-1"))
                                        for k, v in headers]})
                await send({"type": "websocket.http.response.body", "body": body})
            else:
                await send({"type": "websocket.close", "code": 1008})  # the server's 403
            return
        await send({"type": "websocket.accept"})

        async def send_bytes(payload: bytes) -> None:
            await send({"type": "websocket.send", "bytes": payload})

        async def close(code: int) -> None:
            await send({"type": "websocket.close", "code": code})

        client = scope.get("client")
        wire = MessageWire(self.manager, send_bytes, close,
                           f"{client[0]}:{client[1]}" if client else "?",
                           high_water=self.high_water, low_water=self.low_water)
        self._wires.add(wire)
        reason = "connection closed by peer"
        try:
            while True:
                msg = await receive()
                kind = msg["type"]
                if kind == "websocket.receive":
                    data = msg.get("bytes")
                    if data is not None:
                        wire.on_binary(data)
                        await wire.readable()
                    else:
                        wire.on_text(msg.get("text") or "")
                elif kind == "websocket.disconnect":
                    reason = f"websocket closed (code {msg.get('code', 1005)})"
                    break
        finally:
            wire.lost(reason)


def _target(scope: Scope) -> str:
    path = str(scope.get("path", "/"))
    query = scope.get("query_string") or b""
    return path + ("?" + query.decode("latin-1") if query else "")


def _headers(scope: Scope) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in scope.get("headers") or ():
        k = name.decode("latin-1").lower()
        v = value.decode("latin-1")
        out[k] = out[k] + ", " + v if k in out else v
    return out


async def _respond(send: Send, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]})
    await send({"type": "http.response.body", "body": body})


async def _plain_lifespan(receive: Receive, send: Send,
                          startup: Callable[[], Awaitable[None]] | None = None,
                          shutdown: Callable[[], Awaitable[None]] | None = None) -> None:
    while True:
        msg = await receive()
        if msg["type"] == "lifespan.startup":
            try:
                if startup is not None:
                    await startup()
            except Exception as exc:
                await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                return
            await send({"type": "lifespan.startup.complete"})
        elif msg["type"] == "lifespan.shutdown":
            if shutdown is not None:
                await shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return
