"""A grid node served by an ASGI server (uvicorn or hypercorn).

``app`` is an ASGI application: the grid route (``/minio/grid/v1``) in front
of a small application of your own (here ``/health``).  The node is
configured from the environment and started/closed by the ASGI lifespan::

    GRID_LOCAL=http://127.0.0.1:9201 \\
    GRID_HOSTS=http://127.0.0.1:9201,http://127.0.0.1:9202 GRID_TOKEN=secret \\
        uvicorn examples.asgi_app:app --host 127.0.0.1 --port 9201 --lifespan on

    # or: hypercorn examples.asgi_app:app --bind 127.0.0.1:9201

``python examples/asgi_app.py --demo [--server uvicorn|hypercorn]`` runs a
self-contained two-node grid in one process instead: this app under the
chosen server on a free port and a plain embedded-server node, calls both
ways, then exits.

Needs ``pip install 'gridmux[asgi]'`` (uvicorn; hypercorn works the same).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import MutableMapping
from typing import Any

import grid
from grid.integrations.asgi import GridASGI, Receive, Send
from grid.testing import free_ports

ECHO = 1


def demo_hosts() -> list[str]:
    """[app node, embedded node] on free loopback ports, chosen so that the
    embedded node dials the app (one side of each pair dials, by a hash of
    the two host strings): the demo then goes through the mounted route."""
    while True:
        app_host, other = (f"http://127.0.0.1:{p}" for p in free_ports(2))
        if app_host != other and grid.dials(other, app_host):
            return [app_host, other]


async def other_app(scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
    """Your own ASGI application: everything that is not the grid route."""
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            await send({"type": msg["type"] + ".complete"})
            if msg["type"] == "lifespan.shutdown":
                return
    elif scope["type"] == "http":
        ok = scope["path"] == "/health"
        body = b"ok" if ok else b"not found"
        await send({"type": "http.response.start", "status": 200 if ok else 404,
                    "headers": [(b"content-type", b"text/plain"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
    else:  # other WebSockets: refused
        await receive()
        await send({"type": "websocket.close", "code": 1008})


def make_app(local: str, hosts: list[str], token: str) -> GridASGI:
    """The grid node ``local`` in front of :func:`other_app`."""

    def check(got: str) -> None:
        if got != token:
            raise PermissionError("invalid token")

    mgr = grid.Manager(local, hosts, auth_fn=lambda: token, validate_token=check)
    mgr.register_single(ECHO, lambda p: b"ASGI node: " + (p or b""))
    return GridASGI(mgr, other_app)  # manage=True: the lifespan starts and closes mgr


def _from_env() -> GridASGI | None:
    local = os.environ.get("GRID_LOCAL")
    if not local:
        return None
    hosts = os.environ.get("GRID_HOSTS", local).split(",")
    return make_app(local, hosts, os.environ.get("GRID_TOKEN", "grid-example-token"))


#: The application for ``uvicorn examples.asgi_app:app`` (None without GRID_LOCAL).
app = _from_env()


async def demo(server: str) -> None:
    """This app under ``server`` and an embedded-server node, calling each other."""
    hosts = demo_hosts()
    port = int(hosts[0].rsplit(":", 1)[1])
    asgi = make_app(hosts[0], hosts, "demo-token")
    stop = asyncio.Event()
    if server == "uvicorn":
        import uvicorn

        srv = uvicorn.Server(uvicorn.Config(asgi, host="127.0.0.1", port=port, lifespan="on",
                                            ws_per_message_deflate=False, log_level="warning"))

        async def serve() -> None:
            serving = asyncio.ensure_future(srv.serve())
            await stop.wait()
            srv.should_exit = True
            await serving
    else:
        from hypercorn.asyncio import serve as hypercorn_serve
        from hypercorn.config import Config

        config = Config()
        config.bind = [f"127.0.0.1:{port}"]

        async def trigger() -> None:
            await stop.wait()
            await asgi.close_connections()  # hypercorn would wait for them

        async def serve() -> None:
            await hypercorn_serve(asgi, config,  # type: ignore[arg-type]  # its TypedDicts
                                  shutdown_trigger=trigger)

    task = asyncio.ensure_future(serve())
    other = grid.Manager(hosts[1], hosts, lambda: "demo-token", None)
    other.register_single(ECHO, lambda p: b"embedded node: " + (p or b""))
    await other.start()
    try:
        to_app = other.connection(hosts[0])
        await to_app.wait_for_connect(timeout=10)  # dials until the server listens
        print((await to_app.request(ECHO, b"hello", timeout=5) or b"").decode())
        to_other = asgi.manager.connection(hosts[1])
        await to_other.wait_for_connect(timeout=10)
        print((await to_other.request(ECHO, b"hello back", timeout=5) or b"").decode())
    finally:
        await other.close()
        stop.set()
        await task


def main(argv: list[str] | None = None) -> int:
    """Command line: ``--demo`` (serving is the ASGI server's job)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--demo", action="store_true", help="run a two-node demo and exit")
    ap.add_argument("--server", choices=("uvicorn", "hypercorn"), default="uvicorn")
    args = ap.parse_args(argv)
    if not args.demo:
        ap.error("serve with an ASGI server (see the module docstring), or pass --demo")
    grid.run(demo(args.server))
    return 0


if __name__ == "__main__":
    sys.exit(main())
