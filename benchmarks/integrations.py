"""What serving a grid node from another server costs: the embedded server vs
a node mounted in aiohttp (grid.integrations.aiohttp) and in ASGI servers
(grid.integrations.asgi under uvicorn and hypercorn).

Same workload as benchmarks/requests.py: a server process (the node under
test) and a client process (a plain embedded-server grid node that dials it),
separate interpreters, uvloop in each, loopback only, one connection, a
512-byte echo handled inline on the server.  For each concurrency level the
client runs that many workers, each awaiting one request at a time, and
records requests/s, p50 and p99 after a warm-up.  Ratios are against the
embedded server at the same concurrency.

Usage::

    python benchmarks/integrations.py [--systems embedded,aiohttp,uvicorn,hypercorn]
        [--concurrency 1,128] [--seconds 3] [--warmup 1] [--size 512] [--json PATH]

A system whose server package is missing is reported as unavailable.  The
same file is the server and client program (``--role server|client``,
internal).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import signal
import socket
import subprocess
import sys
from typing import Any, Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _p in (ROOT, HERE):  # the checkout's grid (in-place build) and benchmarks/ itself
    if _p not in sys.path:
        sys.path.insert(0, _p)

from _report import print_table, write_json  # noqa: E402  (benchmarks/_report.py)
from _procs import HOST, _grid_ports, _ServerProc, _int_list, _str_list, _system_env  # noqa: E402


def _load_requests_bench() -> Any:
    # benchmarks/requests.py by path: its module name clashes with the PyPI package.
    spec = importlib.util.spec_from_file_location("_grid_bench_requests", os.path.join(HERE, "requests.py"))
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


ALL_SYSTEMS = ("embedded", "aiohttp", "uvicorn", "hypercorn")
LABELS = {"embedded": "embedded server", "aiohttp": "aiohttp mount",
          "uvicorn": "ASGI: uvicorn", "hypercorn": "ASGI: hypercorn"}
ECHO_HANDLER = 1
GRID_TIMEOUT = 10.0
TOKEN = "bench-token"


def _manager(local_port: int, peer_port: int) -> Any:
    import grid

    local, peer = f"http://{HOST}:{local_port}", f"http://{HOST}:{peer_port}"
    return grid.Manager(local, [local, peer], lambda: TOKEN, lambda t: None, retry_base=0.2)


# =========================================================================== server


async def role_server(args: argparse.Namespace) -> None:
    import grid

    mgr = _manager(args.port, args.peer_port)
    mgr.register_single(ECHO_HANDLER, lambda p: p)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    system = args.system
    try:
        if system == "aiohttp":
            from aiohttp import web

            from grid.integrations.aiohttp import mount
        elif system == "uvicorn":
            import uvicorn
        elif system == "hypercorn":
            from hypercorn.asyncio import serve
            from hypercorn.config import Config
    except ImportError as exc:
        print(f"UNAVAILABLE {exc}", flush=True)
        return
    from grid.integrations.asgi import GridASGI

    if system == "embedded":
        await mgr.start()
        print(f"READY {args.port} {grid.IMPLEMENTATION}", flush=True)
        await stop.wait()
        await mgr.close()
    elif system == "aiohttp":
        app = web.Application()
        mount(app, mgr)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, HOST, args.port).start()
        print(f"READY {args.port} {grid.IMPLEMENTATION}", flush=True)
        await stop.wait()
        await runner.cleanup()
    elif system == "uvicorn":
        server = uvicorn.Server(uvicorn.Config(
            GridASGI(mgr), host=HOST, port=args.port, lifespan="on", log_level="warning",
            access_log=False, ws_per_message_deflate=False))
        task = asyncio.ensure_future(server.serve())  # may take SIGTERM over: fine either way
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        print(f"READY {args.port} {grid.IMPLEMENTATION}", flush=True)

        async def watch() -> None:
            await stop.wait()
            server.should_exit = True

        watcher = asyncio.ensure_future(watch())
        await task
        watcher.cancel()
    elif system == "hypercorn":
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, args.port))
        sock.listen(128)
        config = Config()
        config.bind = [f"fd://{sock.detach()}"]
        config.loglevel = "WARNING"
        config.accesslog = None
        asgi = GridASGI(mgr)

        async def trigger() -> None:
            await stop.wait()
            await asgi.close_connections()

        task = asyncio.ensure_future(serve(asgi, config,  # type: ignore[arg-type]  # its TypedDicts
                                           shutdown_trigger=trigger))
        print(f"READY {args.port} {grid.IMPLEMENTATION}", flush=True)  # listening already
        await task
    else:
        raise SystemExit(f"unknown system {system}")


# =========================================================================== client


async def role_client(args: argparse.Namespace) -> None:
    import grid

    bench = _load_requests_bench()
    mgr = _manager(args.port, args.peer_port)
    await mgr.start()
    conn = mgr.connection(f"http://{HOST}:{args.peer_port}")
    await conn.wait_for_connect(timeout=30.0)
    payload = os.urandom(args.size)
    request = conn.request

    def call(p: bytes, _r: Any = request, _h: int = ECHO_HANDLER, _t: float = GRID_TIMEOUT) -> Any:
        return _r(_h, p, timeout=_t)

    if await call(payload) != payload:
        raise SystemExit("first echo mismatch")
    cells = [await bench.run_cell(call, payload, c, args.seconds, args.warmup)
             for c in args.concurrency]
    await mgr.close()
    print("RESULT " + json.dumps({"system": args.system, "impl": grid.IMPLEMENTATION,
                                  "cells": cells}), flush=True)


# =========================================================================== orchestrator


def _run_system(system: str, args: argparse.Namespace) -> Tuple[Optional[Dict[str, Any]], Optional[str]]:
    env = _system_env("grid")
    me = os.path.abspath(__file__)
    # The client dials (§1.2), so the connection goes through the server's route.
    client_port, server_port = _grid_ports(client_dials=True)
    common = [sys.executable, me, "--system", system, "--size", str(args.size),
              "--seconds", str(args.seconds), "--warmup", str(args.warmup),
              "--concurrency", ",".join(map(str, args.concurrency))]
    server = _ServerProc(common + ["--role", "server", "--port", str(server_port),
                                   "--peer-port", str(client_port)], env)
    try:
        state, fields = server.wait_ready()
        if state == "unavailable":
            return None, "unavailable: " + fields[0]
        if state != "ready":
            return None, fields[0]
        timeout = 60 + len(args.concurrency) * (args.seconds + args.warmup) * 2
        try:
            out = subprocess.run(common + ["--role", "client", "--port", str(client_port),
                                           "--peer-port", str(server_port)],
                                 env=env, stdout=subprocess.PIPE, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return None, f"client timed out after {timeout:.0f} s"
        for line in out.stdout.splitlines():
            if line.startswith("RESULT "):
                return json.loads(line[len("RESULT "):]), None
        return None, f"client exited with {out.returncode} and no result"
    finally:
        server.stop()


def _versions() -> Dict[str, Optional[str]]:
    from importlib import metadata

    out: Dict[str, Optional[str]] = {}
    for name in ("aiohttp", "uvicorn", "hypercorn", "websockets", "wsproto", "uvloop"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def orchestrate(args: argparse.Namespace) -> int:
    results: Dict[str, Dict[int, Dict[str, Any]]] = {}
    problems: Dict[str, str] = {}
    impl = None
    for system in args.systems:
        print(f"{LABELS.get(system, system)} ...", file=sys.stderr, flush=True)
        res, problem = _run_system(system, args)
        if res is None:
            problems[system] = problem or "failed"
            print(f"  {problem}", file=sys.stderr, flush=True)
            continue
        impl = res.get("impl", impl)
        results[system] = {c["concurrency"]: c for c in res["cells"]}

    rows: List[List[Any]] = []
    for c in args.concurrency:
        base = results.get("embedded", {}).get(c)
        for system in args.systems:
            cell = results.get(system, {}).get(c)
            if cell is None:
                rows.append([LABELS.get(system, system), c, None, None, None, None, None,
                             problems.get(system, "")])
                continue
            rps_ratio = cell["rps"] / base["rps"] if base and base["rps"] else None
            p50_ratio = cell["p50_us"] / base["p50_us"] if base and base["p50_us"] else None
            rows.append([LABELS.get(system, system), c, cell["rps"], cell["p50_us"], cell["p99_us"],
                         rps_ratio, p50_ratio,
                         f"{cell['errors']} errors" if cell["errors"] else ""])
    print_table(f"Mounted vs embedded: {args.size} B echo, one connection, "
                f"{args.seconds:g} s per cell, grid {impl or '?'}",
                ["server", "conc", "req/s", "p50 us", "p99 us", "req/s vs embedded",
                 "p50 vs embedded", "note"], rows)
    if args.json:
        write_json(args.json, {
            "benchmark": "integrations",
            "size": args.size, "seconds": args.seconds, "warmup": args.warmup,
            "concurrency": args.concurrency, "implementation": impl,
            "python": platform.python_version(), "machine": platform.machine(),
            "cpus": os.cpu_count(), "versions": _versions(),
            "results": {s: list(cells.values()) for s, cells in results.items()},
            "problems": problems,
        })
        print(f"wrote {args.json}")
    return 0 if results and not problems else 1


def main(argv: Optional[List[str]] = None) -> int:
    """Command line (see the module docstring)."""
    ap = argparse.ArgumentParser(description="cost of serving grid from aiohttp / ASGI servers")
    ap.add_argument("--systems", type=_str_list, default=list(ALL_SYSTEMS),
                    help="comma list of embedded,aiohttp,uvicorn,hypercorn (default: all)")
    ap.add_argument("--concurrency", type=_int_list, default=[1, 128], help="comma list (default 1,128)")
    ap.add_argument("--seconds", type=float, default=3.0, help="measured seconds per cell (default 3)")
    ap.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per cell (default 1)")
    ap.add_argument("--size", type=int, default=512, help="payload bytes (default 512)")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    ap.add_argument("--role", choices=["orchestrator", "server", "client"], default="orchestrator",
                    help=argparse.SUPPRESS)
    ap.add_argument("--system", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--peer-port", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.role == "orchestrator":
        return orchestrate(args)
    import uvloop

    uvloop.run(role_server(args) if args.role == "server" else role_client(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
