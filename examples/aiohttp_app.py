"""A grid node mounted in an aiohttp application.

The app keeps its own routes (``/health``, ``/peers``) and serves the grid
route (``/minio/grid/v1``) on the same port; the manager is started and closed
by the app (``mount(..., manage=True)``).

Run one node per process, each naming every node of the grid::

    python examples/aiohttp_app.py --local http://127.0.0.1:9101 \\
        --hosts http://127.0.0.1:9101,http://127.0.0.1:9102
    python -m grid serve ...   # or any grid node for the other host string

``--demo`` runs a self-contained two-node grid in one process instead: this app
on a free port and a plain embedded-server node, calls both ways, then exits.

Needs ``pip install 'gridmux[aiohttp]'``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from aiohttp import web

import grid
from grid.integrations.aiohttp import mount
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


def make_app(local: str, hosts: list[str], token: str) -> web.Application:
    """An aiohttp application with its own routes and a grid node mounted."""
    mgr = grid.Manager(local, hosts, auth_fn=lambda: token,
                       validate_token=lambda t: _check(t, token))
    mgr.register_single(ECHO, lambda p: b"aiohttp node: " + (p or b""))

    async def health(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def peers(_request: web.Request) -> web.Response:
        return web.json_response({h: c.state.name for h, c in mgr.connections.items()})

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/peers", peers)
    mount(app, mgr)
    app["grid"] = mgr
    return app


def _check(got: str, want: str) -> None:
    if got != want:
        raise PermissionError("invalid token")


async def demo() -> None:
    """This app and an embedded-server node on loopback, calling each other."""
    hosts = demo_hosts()
    app = make_app(hosts[0], hosts, "demo-token")
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", int(hosts[0].rsplit(":", 1)[1])).start()
    other = grid.Manager(hosts[1], hosts, lambda: "demo-token", lambda t: _check(t, "demo-token"))
    other.register_single(ECHO, lambda p: b"embedded node: " + (p or b""))
    await other.start()
    try:
        to_app = other.connection(hosts[0])
        await to_app.wait_for_connect(timeout=10)
        print((await to_app.request(ECHO, b"hello", timeout=5) or b"").decode())
        to_other = app["grid"].connection(hosts[1])
        await to_other.wait_for_connect(timeout=10)
        print((await to_other.request(ECHO, b"hello back", timeout=5) or b"").decode())
        reader, writer = await asyncio.open_connection("127.0.0.1", int(hosts[0].rsplit(":", 1)[1]))
        writer.write(b"GET /peers HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        body = (await reader.read()).partition(b"\r\n\r\n")[2]
        writer.close()
        print("peers:", json.loads(body))
    finally:
        await other.close()
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    """Command line: serve one node, or ``--demo``."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--local", help="this node's host string, e.g. http://127.0.0.1:9101")
    ap.add_argument("--hosts", help="every node's host string, comma-separated")
    ap.add_argument("--token", default="grid-example-token")
    ap.add_argument("--demo", action="store_true", help="run a two-node demo and exit")
    args = ap.parse_args(argv)
    if args.demo:
        grid.run(demo())
        return 0
    if not args.local or not args.hosts:
        ap.error("--local and --hosts are required (or --demo)")
    app = make_app(args.local, args.hosts.split(","), args.token)
    host, port = args.local.split("://", 1)[1].rsplit(":", 1)
    web.run_app(app, host=host, port=int(port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
