"""Stream benchmark: grid streams vs a raw asyncio stream, picows and grpc.aio
unary-stream, plus typed (dataclass) single requests vs byte-level ones.

Every system is measured the same way as in requests.py: a server process and
a client process (separate interpreters, uvloop in each, loopback only), one
connection.  Each *cell* runs for a warm-up and then a fixed measured window;
the client counts the items completed inside the window and reads its own CPU
time and the server process's (``/proc/<pid>/stat``) around it, so the table
shows which side was the bottleneck (100 % = one core busy).

Cells:

one-way stream
    the server streams ``size``-byte messages to the client as fast as it may
    (an unbounded stream, cancelled after the window); messages/s and MB/s
    (10^6 bytes of payload per second).  grid runs once per capacity
    (``in_capacity=0, out_capacity=N``: the handler may be N messages ahead
    of the caller, which returns one credit per message it consumes).
two-way echo
    ``size``-byte items echoed by the stream handler; round trips/s.
    Capacity 1 = strict ping-pong (send, wait for the echo, repeat); capacity
    N > 1 = pipelined: a separate sender task keeps sending while the reader
    counts echoes, at most N in flight (grid's credits; the raw client holds
    itself to the same N).
typed requests
    ``grid.SingleHandler`` with a small dataclass (msgp map) against
    byte-level ``conn.request`` with a payload of the same encoded size, both
    echoed, ``--concurrency`` workers each awaiting one call at a time.

Systems:
  grid       grid Manager pair, compiled core (GRID_PURE unset in both processes)
  grid-pure  grid Manager pair, pure-Python twins (GRID_PURE=1 in both processes)
  raw        baselines/raw_stream.py: length+id framed asyncio.Protocol, writes
             coalesced per loop iteration, NO credit window (TCP flow control
             only): the ceiling for a one-way stream
  picows     baselines/picows_echo.py: picows WebSocket, one frame per item,
             a credit window of the largest capacity with one credit frame
             per item the ``async for`` consumer takes (one-way cells only)
  grpc       baselines/grpc_echo.py: grpc.aio unary-stream, identity
             serialisers (one-way cells only; HTTP/2 flow control)
  floor      _window.py: the blocking-socket round trip, which makes each
             capacity's credit-window ceiling (capacity / round trip)

Usage::

    python benchmarks/streams.py [--systems grid,grid-pure,raw,picows,grpc,floor]
        [--sizes 64,4096] [--capacities 1,64] [--echo-size 64]
        [--concurrency 16] [--seconds 2] [--warmup 0.5]
        [--pin none|split|same] [--dialer consumer|producer] [--busy-loop]
        [--json PATH]

``--busy-loop`` is a diagnostic: every grid, raw and picows process keeps its
event loop from sleeping (a callback that schedules itself again), so a
window-bound stream shows what its credit window allows without the time the
machine takes to wake a sleeping process.  CPU columns then read about 100%,
the typed cells share the loop with that callback, and the window ceiling
still comes from the blocking floor, which never spins.

The same file is the server and client program (``--role server|client``,
internal).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import platform
import signal
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _p in (ROOT, HERE):  # the checkout's grid (in-place build) and benchmarks/ itself
    if _p not in sys.path:
        sys.path.insert(0, _p)

import _window  # noqa: E402
from _stream_cells import Window, _drain, _finish, _merge_slices, cell_oneway, cell_requests  # noqa: E402
from _report import num, print_table, print_targets, ratio_cell, target, write_json  # noqa: E402
from _procs import (  # noqa: E402
    HOST, _ServerProc, _cpus, _grid_ports, _grid_url, _int_list, _label, _str_list, _system_env,
)

ALL_SYSTEMS = ("grid", "grid-pure", "raw", "picows", "grpc", "floor")
#: Systems that need a package outside the core dependencies: (module, package).
OPTIONAL = {"grpc": ("grpc", "grpcio"), "picows": ("picows", "picows")}
REQUEST_SLICES = 4  # typed and byte-level request cells alternate in this many slices each
SLICE_WARMUP = 0.1  # warm-up seconds before every slice after the first
#: The capacity the stream targets are stated for (else the largest one run).
TARGET_CAPACITY = 64
GRID_TIMEOUT = 10.0  # per-request timeout for the typed/bytes cells (never hit in a healthy run)
TYPED_HANDLER = 40
BYTES_HANDLER = 41
GEN_BASE = 50  # one-way stream handler ids: GEN_BASE + index of the capacity
ECHO_BASE = 80  # two-way echo stream handler ids: ECHO_BASE + index of the capacity


@dataclasses.dataclass
class Small:
    """The typed-request payload: a msgp map {"Name": str, "Count": int, "Tags": [str]}."""

    Name: str
    Count: int
    Tags: List[str]


SMALL = Small("bucket/prefix/object-000123", 123456, ["alpha", "beta", "gamma"])


# =========================================================================== helpers


def _grid_manager(local_port: int, peer_port: int, local_is_server: bool) -> Any:
    import grid

    local = _grid_url(local_port)
    peer = _grid_url(peer_port)
    client_host, server_host = (peer, local) if local_is_server else (local, peer)
    return grid.Manager(
        local=local,
        hosts=[client_host, server_host],
        auth_fn=lambda: "token",
        validate_token=lambda tok: None,
    )


def _typed_handler() -> Any:
    import grid

    return grid.SingleHandler(TYPED_HANDLER, Small, Small)


def _typed_size() -> int:
    from grid.types import encode_payload

    return len(encode_payload(Small, SMALL) or b"")


# =========================================================================== grid


async def grid_server(args: argparse.Namespace) -> None:
    try:
        import grid

        mgr = _grid_manager(args.port, args.peer_port, local_is_server=True)
    except (ImportError, AttributeError) as exc:
        print(f"UNAVAILABLE {type(exc).__name__}: {exc}", flush=True)
        return

    async def gen(ctx: Any, payload: Optional[bytes], inbound: Any, out: Any) -> None:
        size, _, count = (payload or b"0").partition(b",")
        msg = os.urandom(int(size))
        send = out.send
        if count and int(count):
            for _ in range(int(count)):
                await send(msg)
            return
        while True:
            await send(msg)

    async def echo(ctx: Any, payload: Optional[bytes], inbound: Any, out: Any) -> None:
        send = out.send
        async for item in inbound:
            await send(item)

    for i, cap in enumerate(args.capacities):
        mgr.register_stream(GEN_BASE + i, grid.StreamHandler(gen, in_capacity=0, out_capacity=cap))
        mgr.register_stream(ECHO_BASE + i, grid.StreamHandler(echo, in_capacity=cap, out_capacity=cap))
    _typed_handler().register(mgr, lambda s: s)
    mgr.register_single(BYTES_HANDLER, lambda p: p)

    # The client leaves first; its "disconnected" warning here is expected.  (Failures
    # during a cell show up as errors in the client's results; handler errors still log.)
    logging.getLogger("grid").setLevel(logging.ERROR)
    await mgr.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"READY {args.port} {grid.IMPLEMENTATION}", flush=True)
    await stop.wait()
    await mgr.close()


async def grid_client(args: argparse.Namespace) -> Tuple[str, List[Dict[str, Any]]]:
    import grid

    mgr = _grid_manager(args.port, args.peer_port, local_is_server=False)
    await mgr.start()
    conn = mgr.connection(_grid_url(args.peer_port))
    await conn.wait_for_connect(timeout=10.0)
    spid, secs, warm = args.server_pid, args.seconds, args.warmup
    cells: List[Dict[str, Any]] = []

    def cancel(s: Any) -> None:
        s.cancel()

    # -- one-way
    for size in [] if args.requests_only else args.sizes:
        for i, cap in enumerate(args.capacities):
            hid = GEN_BASE + i
            sample = await conn.new_stream(hid, b"%d,3" % size, in_capacity=0, out_capacity=cap)
            got = [x async for x in sample]
            if len(got) != 3 or any(len(x) != size for x in got):
                raise SystemExit(f"grid one-way sanity check failed: {[len(x) for x in got]}")

            def open_stream(hid: int = hid, cap: int = cap, size: int = size) -> Any:
                return conn.new_stream(hid, b"%d" % size, in_capacity=0, out_capacity=cap)

            res = await cell_oneway(open_stream, cancel, secs, warm, spid)
            cells.append(dict(res, kind="oneway", size=size, capacity=cap))
            await asyncio.sleep(0.2)  # let the server's handler task wind down

    # -- two-way echo
    payload = os.urandom(args.echo_size)
    for i, cap in enumerate([] if args.requests_only else args.capacities):
        hid = ECHO_BASE + i
        s = await conn.new_stream(hid, None, in_capacity=cap, out_capacity=cap)
        await s.send(payload)
        if await s.__anext__() != payload:
            raise SystemExit("grid echo sanity check failed")
        w = Window(spid)
        if cap == 1:

            async def pingpong(s: Any = s) -> None:
                send, nxt = s.send, s.__anext__
                while not w.stop:
                    await send(payload)
                    if await nxt() is None:
                        raise AssertionError("no echo")
                    w.count += 1

            tasks = [asyncio.ensure_future(pingpong())]
        else:

            async def sender(s: Any = s) -> None:
                send = s.send
                while True:
                    await send(payload)

            tasks = [asyncio.ensure_future(_drain(s, w)), asyncio.ensure_future(sender())]
        res = await w.measure(secs, warm)
        await _finish(tasks, w)
        s.cancel()
        res.update(errors=w.errors, first_error=w.first_error)
        cells.append(dict(res, kind="echo", size=args.echo_size, capacity=cap,
                          mode="ping-pong" if cap == 1 else "pipelined"))
        await asyncio.sleep(0.2)

    # -- typed vs byte-level single requests
    typed = _typed_handler()
    size = _typed_size()
    raw_payload = os.urandom(size)
    if await typed.call(conn, SMALL, GRID_TIMEOUT) != SMALL:
        raise SystemExit("typed echo sanity check failed")
    if await conn.request(BYTES_HANDLER, raw_payload, GRID_TIMEOUT) != raw_payload:
        raise SystemExit("bytes echo sanity check failed")

    def typed_call(_c: Any = typed.call, _conn: Any = conn) -> Any:
        return _c(_conn, SMALL, GRID_TIMEOUT)

    def bytes_call(_r: Any = conn.request) -> Any:
        return _r(BYTES_HANDLER, raw_payload, GRID_TIMEOUT)

    # The two kinds take turns in short slices, so that a change in the rest of the
    # machine's load during the cells weighs on both alike and the ratio stays fair.
    parts: Dict[str, List[Dict[str, Any]]] = {"typed": [], "bytes": []}
    for i in range(REQUEST_SLICES):
        for kind, call in (("typed", typed_call), ("bytes", bytes_call)):
            parts[kind].append(await cell_requests(call, args.concurrency, secs / REQUEST_SLICES,
                                                   warm if i == 0 else SLICE_WARMUP, spid))
    for kind in ("typed", "bytes"):
        cells.append(dict(_merge_slices(parts[kind]), kind=kind, size=size, concurrency=args.concurrency))

    logging.getLogger("grid").setLevel(logging.ERROR)  # quiet teardown
    await mgr.close()
    return grid.IMPLEMENTATION, cells


# =========================================================================== raw / grpc clients


async def raw_client(args: argparse.Namespace) -> Tuple[str, List[Dict[str, Any]]]:
    from baselines.raw_stream import RawStreamClient, RawWindowStreamClient

    spid, secs, warm = args.server_pid, args.seconds, args.warmup
    cells: List[Dict[str, Any]] = []

    async def open_produce(size: int, window: Optional[int]) -> Any:
        if window is None:
            c = await RawStreamClient.connect(HOST, args.peer_port)
        else:
            c = await RawWindowStreamClient.connect_window(HOST, args.peer_port, window)
        c.start_produce(size)
        return c

    # TCP flow control only (the ceiling), then grid's credit window at each capacity
    for size in [] if args.requests_only else args.sizes:
        for window in [None, *args.capacities]:
            res = await cell_oneway(lambda size=size, window=window: open_produce(size, window),
                                    lambda c: c.close(), secs, warm, spid)
            cells.append(dict(res, kind="oneway", size=size, capacity=window))
            await asyncio.sleep(0.2)

    payload = os.urandom(args.echo_size)
    for cap in args.capacities:
        c = await RawStreamClient.connect(HOST, args.peer_port)
        c.start_echo()
        c.send(payload)
        if await c.__anext__() != payload:
            raise SystemExit("raw echo sanity check failed")
        w = Window(spid)
        if cap == 1:

            async def pingpong(c: Any = c) -> None:
                send, nxt = c.send, c.__anext__
                while not w.stop:
                    send(payload)
                    await nxt()
                    w.count += 1

            tasks = [asyncio.ensure_future(pingpong())]
        else:
            loop = asyncio.get_running_loop()
            state: Dict[str, Any] = {"inflight": 0, "waiter": None}

            async def sender(c: Any = c, cap: int = cap) -> None:
                send = c.send
                while True:
                    if state["inflight"] >= cap:
                        fut = state["waiter"] = loop.create_future()
                        await fut
                        continue
                    state["inflight"] += 1
                    send(payload)

            async def receiver(c: Any = c) -> None:
                async for _ in c:
                    w.count += 1
                    state["inflight"] -= 1
                    fut = state["waiter"]
                    if fut is not None and not fut.done():
                        fut.set_result(None)

            tasks = [asyncio.ensure_future(receiver()), asyncio.ensure_future(sender())]
        res = await w.measure(secs, warm)
        await _finish(tasks, w)
        c.close()
        res.update(errors=w.errors, first_error=w.first_error)
        cells.append(dict(res, kind="echo", size=args.echo_size, capacity=cap,
                          mode="ping-pong" if cap == 1 else "pipelined"))
        await asyncio.sleep(0.2)
    return "asyncio.Protocol", cells


async def picows_client(args: argparse.Namespace) -> Tuple[str, List[Dict[str, Any]]]:
    from baselines.picows_echo import PicowsStream

    window = max(args.capacities)
    cells: List[Dict[str, Any]] = []
    for size in args.sizes:
        sample = await PicowsStream.open(HOST, args.peer_port, size, window)
        got = [await sample.__anext__() for _ in range(3)]
        sample.close()
        if any(len(x) != size for x in got):
            raise SystemExit("picows stream sanity check failed")

        async def open_stream(size: int = size) -> Any:
            return await PicowsStream.open(HOST, args.peer_port, size, window)

        res = await cell_oneway(open_stream, lambda st: st.close(), args.seconds, args.warmup, args.server_pid)
        cells.append(dict(res, kind="oneway", size=size, capacity=window))
        await asyncio.sleep(0.2)
    return "picows", cells


async def grpc_client(args: argparse.Namespace) -> Tuple[str, List[Dict[str, Any]]]:
    from baselines import grpc_echo

    gclient = grpc_echo.GrpcClient(HOST, args.peer_port)
    await gclient.wait_ready()
    cells: List[Dict[str, Any]] = []
    for size in args.sizes:
        got = [x async for x in gclient.stream(size, 3)]
        if len(got) != 3 or any(len(x) != size for x in got):
            raise SystemExit("grpc stream sanity check failed")

        async def open_stream(size: int = size) -> Any:
            return gclient.stream(size)

        res = await cell_oneway(open_stream, lambda call: call.cancel(), args.seconds, args.warmup,
                                args.server_pid)
        cells.append(dict(res, kind="oneway", size=size, capacity=None))
        await asyncio.sleep(0.2)
    await gclient.close()
    return "grpc.aio", cells


# =========================================================================== server / client roles


async def role_server(args: argparse.Namespace) -> None:
    system = args.system
    if system in ("grid", "grid-pure"):
        await grid_server(args)
        return
    if system == "raw":
        from baselines import raw_stream

        server = await raw_stream.serve(HOST, 0)
        port = server.sockets[0].getsockname()[1]
        impl = "asyncio.Protocol"
    elif system == "grpc":
        from baselines import grpc_echo

        server, port = await grpc_echo.serve(HOST, 0)
        impl = "grpc.aio"
    elif system == "picows":
        from baselines import picows_echo

        server = await picows_echo.serve(HOST, 0)
        port = server.sockets[0].getsockname()[1]
        impl = "picows"
    else:
        raise SystemExit(f"unknown system {system}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"READY {port} {impl}", flush=True)
    await stop.wait()
    if system == "grpc":
        await server.stop(None)
    else:
        server.close()


async def role_client(args: argparse.Namespace) -> None:
    system = args.system
    if system in ("grid", "grid-pure"):
        impl, cells = await grid_client(args)
    elif system == "raw":
        impl, cells = await raw_client(args)
    elif system == "grpc":
        impl, cells = await grpc_client(args)
    elif system == "picows":
        impl, cells = await picows_client(args)
    else:
        raise SystemExit(f"unknown system {system}")
    print("RESULT " + json.dumps({"system": system, "impl": impl, "cells": cells}), flush=True)


# =========================================================================== orchestrator


def _run_pair(system: str, common: List[str], timeout: float, pin: str,
              dialer: str) -> Tuple[Optional[Dict[str, Any]], Optional[str]]:
    """Start a server, run the client process against it; (result, problem).
    A grid pair is given ports such that ``dialer`` (the stream's consumer,
    the client process; or its producer, the server) is the WebSocket client."""
    env = _system_env(system)
    base = [sys.executable, os.path.abspath(__file__), "--system", system] + common
    if system in ("grid", "grid-pure"):
        client_port, server_port = _grid_ports(client_dials=dialer == "consumer")
        server_cmd = base + ["--role", "server", "--port", str(server_port), "--peer-port", str(client_port)]
    else:
        client_port = server_port = 0
        server_cmd = base + ["--role", "server"]
    server_cpu, client_cpu = _cpus(pin)
    server = _ServerProc(server_cmd + ["--cpu", str(server_cpu)], env)
    try:
        state, fields = server.wait_ready()
        if state == "unavailable":
            return None, "unavailable: " + fields[0]
        if state != "ready":
            return None, fields[0]
        if system not in ("grid", "grid-pure"):
            server_port = int(fields[0])
        cmd = base + ["--role", "client", "--port", str(client_port), "--peer-port", str(server_port),
                      "--server-pid", str(server.proc.pid), "--cpu", str(client_cpu)]
        try:
            out = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return None, f"client timed out after {timeout:.0f} s"
        for line in out.stdout.splitlines():
            if line.startswith("RESULT "):
                res = json.loads(line[len("RESULT "):])
                if len(fields) > 1:
                    res["server_impl"] = fields[1]
                return res, None
        return None, f"client exited with {out.returncode} and no result"
    finally:
        server.stop()


def _pct(v: Optional[float]) -> str:
    return "-" if v is None else f"{v * 100:.0f}%"


def _size_label(n: int) -> str:
    return f"{n // 1024} KiB" if n >= 1024 and n % 1024 == 0 else f"{n} B"


def _find(cells: List[Dict[str, Any]], system: str, kind: str, **kw: Any) -> Optional[Dict[str, Any]]:
    for c in cells:
        if c["system"] == system and c["kind"] == kind and all(c.get(k) == v for k, v in kw.items()):
            return c
    return None


def _targets(cells: List[Dict[str, Any]], impls: Dict[str, str], args: argparse.Namespace) -> List[Dict[str, Any]]:
    out: List[Dict[str, Any]] = []
    cap = TARGET_CAPACITY if TARGET_CAPACITY in args.capacities else max(args.capacities)

    def ratio(a: Optional[Dict[str, Any]], b: Optional[Dict[str, Any]], key: str = "rate") -> Optional[float]:
        if a is None or b is None or not b.get(key):
            return None
        return a[key] / b[key]

    def add(name: str, value: Optional[float], bound: Optional[float], why: str) -> None:
        out.append(target(name, value, ">=", bound, why))

    small, big = min(args.sizes), max(args.sizes)
    for system, bounds in (("grid", (0.8, 30.0, 1.0, 0.8)), ("grid-pure", (None, None, None, None))):
        tag = "grid-accel" if system == "grid" else "grid-pure"
        g_small = _find(cells, system, "oneway", size=small, capacity=cap)
        g_big = _find(cells, system, "oneway", size=big, capacity=cap)
        add(f"one-way {_size_label(small)} stream (cap {cap}) {tag} msgs/s / raw msgs/s",
            ratio(g_small, _find(cells, "raw", "oneway", size=small, capacity=None)), bounds[0],
            f"needs {system} and raw")
        add(f"one-way {_size_label(small)} stream (cap {cap}) {tag} msgs/s / grpc.aio msgs/s",
            ratio(g_small, _find(cells, "grpc", "oneway", size=small)), bounds[1], f"needs {system} and grpc")
        if big > small:  # the large-item target needs a second, larger size
            add(f"one-way {_size_label(big)} stream (cap {cap}) {tag} MB/s / raw MB/s",
                ratio(g_big, _find(cells, "raw", "oneway", size=big, capacity=None), "mb_per_s"), bounds[2],
                f"needs {system} and raw")
        if system == "grid":
            for other in sorted(c for c in args.capacities if c > 1 and c != cap):
                add(f"one-way {_size_label(small)} stream (cap {other}) {tag} msgs/s / raw msgs/s",
                    ratio(_find(cells, system, "oneway", size=small, capacity=other),
                          _find(cells, "raw", "oneway", size=small, capacity=None)), None,
                    f"needs {system} and raw")
            for size in sorted({small, big}):
                add(f"one-way {_size_label(size)} stream (cap {cap}) {tag} msgs/s / raw with the same window",
                    ratio(_find(cells, system, "oneway", size=size, capacity=cap),
                          _find(cells, "raw", "oneway", size=size, capacity=cap)), None, "needs grid and raw")
            floor = _find(cells, "floor", "floor")
            top = {"rate": _window.ceiling(cap, floor)} if floor and cap > 1 else None
            add(f"one-way {_size_label(small)} stream (cap {cap}) {tag} msgs/s / window ceiling (cap / floor round trip)",
                ratio(g_small, top), None, "needs grid and floor")
            add(f"one-way {_size_label(small)} stream raw TCP-only msgs/s / window ceiling at cap {cap}",
                ratio(_find(cells, "raw", "oneway", size=small, capacity=None), top), None, "needs raw and floor")
            add(f"one-way {_size_label(small)} stream (cap {cap}) {tag} msgs/s / picows msgs/s",
                ratio(g_small, _find(cells, "picows", "oneway", size=small)), None, "needs grid and picows")
            add(f"one-way {_size_label(big)} stream (cap {cap}) {tag} msgs/s / picows msgs/s",
                ratio(g_big, _find(cells, "picows", "oneway", size=big)), None, "needs grid and picows")
        add(f"typed requests (c={args.concurrency}) {tag} req/s / byte-level req/s",
            ratio(_find(cells, system, "typed"), _find(cells, system, "bytes")), bounds[3], f"needs {system}")
    # CPU time per item barely moves when other processes compete for the machine, unlike the rates.
    add(f"one-way {_size_label(small)} stream (cap {cap}) CPU per msg: raw / grid-accel",
        ratio(_find(cells, "raw", "oneway", size=small, capacity=None),
              _find(cells, "grid", "oneway", size=small, capacity=cap),
              "cpu_us_per_item"), None, "needs grid and raw")
    add(f"one-way {_size_label(big)} stream (cap {cap}) CPU per msg: raw / grid-accel",
        ratio(_find(cells, "raw", "oneway", size=big, capacity=None),
              _find(cells, "grid", "oneway", size=big, capacity=cap),
              "cpu_us_per_item"), None, "needs grid and raw")
    add(f"typed requests (c={args.concurrency}) CPU per request: byte-level / typed, grid-accel",
        ratio(_find(cells, "grid", "bytes"), _find(cells, "grid", "typed"), "cpu_us_per_item"), None, "needs grid")
    for e_cap in args.capacities:
        add(f"two-way echo (cap {e_cap}) grid-accel round trips/s / raw",
            ratio(_find(cells, "grid", "echo", capacity=e_cap), _find(cells, "raw", "echo", capacity=e_cap)),
            None, "needs grid and raw")
    if args.requests_only:  # the stream targets have no cells to compare
        out = [t for t in out if t["target"].startswith("typed requests")]
    if impls.get("grid") not in (None, "cython"):
        for t in out:
            if "grid-accel" in t["target"]:
                t["note"] = f"'grid' ran with implementation {impls['grid']!r}, not the compiled core"
    return out


def orchestrate(args: argparse.Namespace) -> int:
    try:
        sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]
    except (AttributeError, ValueError):
        pass
    systems = [s for s in args.systems if s in ALL_SYSTEMS]
    unknown = [s for s in args.systems if s not in ALL_SYSTEMS]
    if unknown:
        print(f"unknown systems ignored: {', '.join(unknown)}", file=sys.stderr)
    common = ["--sizes", ",".join(map(str, args.sizes)), "--capacities", ",".join(map(str, args.capacities)),
              "--echo-size", str(args.echo_size), "--concurrency", str(args.concurrency),
              "--seconds", str(args.seconds), "--warmup", str(args.warmup)]
    n_cells = len(args.sizes) * (len(args.capacities) + 1) + len(args.capacities) + 2
    if args.busy_loop:
        common.append("--busy-loop")
    if args.requests_only:
        common.append("--requests-only")
        systems = [s for s in systems if s.startswith("grid")]
        n_cells = 2
    windows = sorted(c for c in args.capacities if c > 1)
    client_timeout = 60.0 + n_cells * (args.seconds + args.warmup + 1.0) * 3

    print(f"streams benchmark: server and client in separate processes (uvloop), one loopback connection; "
          f"{args.warmup:g} s warm-up + {args.seconds:g} s per cell; CPU pinning: {args.pin}; "
          f"{'busy loops (diagnostic); ' if args.busy_loop else ''}"
          f"systems: {', '.join(systems)}; sizes: {', '.join(map(str, args.sizes))}; "
          f"capacities: {', '.join(map(str, args.capacities))}")

    impls: Dict[str, str] = {}
    notes: List[str] = []
    cells: List[Dict[str, Any]] = []
    for system in systems:
        if system == "floor":
            print(f"  running {_label(system)} ...", flush=True)
            floor, problem = _window.floor_round_trip(args.pin, min(args.sizes), args.seconds, args.warmup)
            if floor is None:
                notes.append(f"floor: failed: {problem}")
            else:
                cells.append(dict(floor, system="floor", kind="floor", impl="blocking sockets", rate=None,
                                  errors=0, other_cpu=None))
            continue
        if system in OPTIONAL:
            import importlib.util

            module, package = OPTIONAL[system]
            if importlib.util.find_spec(module) is None:
                msg = f"{system}: {package} not installed (pip install -e '.[bench]'); skipped"
                print(msg)
                notes.append(msg)
                continue
        print(f"  running {_label(system)} ...", flush=True)
        res, problem = _run_pair(system, common, client_timeout, args.pin, args.dialer)
        if res is None:
            msg = f"{system}: failed: {problem}"
            if problem and problem.startswith("unavailable"):
                msg = f"{system}: not available ({problem[len('unavailable: '):]})"
            print(msg)
            notes.append(msg)
            continue
        impls[system] = res["impl"]
        if res.get("server_impl") and system.startswith("grid") and res["server_impl"] != res["impl"]:
            notes.append(f"{system}: client ran {res['impl']} but server ran {res['server_impl']}")
        for c in res["cells"]:
            c = dict(c, system=system, impl=res["impl"])
            cpu = (c.get("client_cpu") or 0.0) + (c.get("server_cpu") or 0.0)
            c["cpu_us_per_item"] = cpu / c["rate"] * 1e6 if c["rate"] and c.get("server_cpu") is not None else None
            if c["kind"] == "oneway":
                c["msgs_per_s"] = c["rate"]
                c["mb_per_s"] = c["rate"] * c["size"] / 1e6
            cells.append(c)
            if c["errors"]:
                notes.append(f"{system} {c['kind']} size={c['size']}: {c['errors']} errors "
                             f"(first: {c['first_error']})")

    def flow(system: str, cap: Optional[int]) -> str:
        if cap is not None:
            return str(cap)
        return "TCP only" if system == "raw" else "HTTP/2"

    def vs(c: Dict[str, Any], other: str, **kw: Any) -> str:
        o = _find(cells, other, "oneway", size=c["size"], **kw)
        return ratio_cell(c["rate"], o.get("rate") if o else None)

    def vs_window(c: Dict[str, Any]) -> str:
        if c["system"] == "raw" or c["capacity"] is None:
            return "-"
        return vs(c, "raw", capacity=c["capacity"])

    rows = []
    for size in args.sizes:
        for system in systems:
            for c in cells:
                if c["system"] == system and c["kind"] == "oneway" and c["size"] == size:
                    rows.append([_label(system), c["impl"], _size_label(size), flow(system, c["capacity"]),
                                 num(c["msgs_per_s"]), num(c["mb_per_s"], 1), vs(c, "raw", capacity=None),
                                 vs_window(c), vs(c, "picows"),
                                 _pct(c["client_cpu"]), _pct(c["server_cpu"]), num(c["cpu_us_per_item"], 2),
                                 _pct(c["other_cpu"]), c["errors"]])
    if rows:
        print_table("One-way stream, server -> client, consumer 'async for'", ["system", "impl", "msg size",
                    "capacity", "msgs/s", "MB/s", "÷raw", "÷raw same window", "÷picows", "client CPU", "server CPU", "CPU us/msg",
                    "other CPU", "errors"], rows)
    floor = _find(cells, "floor", "floor")
    rows = []
    for cap in windows if floor else []:
        top = _window.ceiling(cap, floor)  # type: ignore[arg-type]
        row = [cap, num(floor["p50_us"], 1), num(top)]  # type: ignore[index]
        for system, size, flow_cap in (("grid", min(args.sizes), cap), ("raw", min(args.sizes), cap),
                                       ("raw", min(args.sizes), None)):
            c = _find(cells, system, "oneway", size=size, capacity=flow_cap)
            row.append(ratio_cell(c["rate"] if c else None, top))
        rows.append(row)
    if rows:
        small = _size_label(min(args.sizes))
        print_table(f"Credit-window ceiling: capacity / blocking-floor round trip ({small})",
                    ["capacity", "floor p50 us", "ceiling msgs/s", f"grid {small} ÷ceiling",
                     f"raw same window {small} ÷ceiling", f"raw TCP only {small} ÷ceiling"], rows)
    rows = []
    for system in systems:
        for c in cells:
            if c["system"] == system and c["kind"] == "echo":
                rows.append([_label(system), c["impl"], _size_label(c["size"]), c["capacity"], c["mode"],
                             num(c["rate"]), _pct(c["client_cpu"]), _pct(c["server_cpu"]),
                             num(c["cpu_us_per_item"], 2), _pct(c["other_cpu"]), c["errors"]])
    if rows:
        print_table("Two-way echo stream", ["system", "impl", "msg size", "capacity", "mode", "round trips/s",
                                            "client CPU", "server CPU", "CPU us/trip", "other CPU", "errors"], rows)
    rows = []
    for system in systems:
        for c in cells:
            if c["system"] == system and c["kind"] in ("typed", "bytes"):
                what = "typed (dataclass)" if c["kind"] == "typed" else "byte-level"
                rows.append([_label(system), c["impl"], what, f"{c['size']} B", c["concurrency"], num(c["rate"]),
                             _pct(c["client_cpu"]), _pct(c["server_cpu"]), num(c["cpu_us_per_item"], 2),
                             _pct(c["other_cpu"]), c["errors"]])
    if rows:
        print_table("Single requests: typed vs byte-level, same encoded size", ["system", "impl", "payload",
                    "size", "conc", "req/s", "client CPU", "server CPU", "CPU us/req", "other CPU", "errors"],
                    rows)

    targets = _targets(cells, impls, args)
    print_targets(targets)
    print("note: the raw one-way stream at 'TCP only' has no credit window, only TCP flow control.  With a "
          "capacity it keeps grid's credit window (at most that many items unacknowledged, credits returned a "
          "quarter window at a time, an eighth by a reader of items under 2 KiB that keeps up), so '÷raw same "
          "window' compares the same flow control; grid returns one credit message per item, batched.")
    if args.dialer == "consumer":
        print("note: the consuming grid node dials (WebSocket client), so one-way items travel unmasked, as "
              "picows's do; --dialer producer measures the other half of a mesh's connections, where the "
              "producer masks every item it sends (RFC 6455).")
    else:
        print("note: the producing grid node dials (WebSocket client) and masks every item it sends "
              "(RFC 6455); picows's items stay unmasked.")
    busy = [c for c in cells if (c.get("other_cpu") or 0) > 0.25]
    if busy:
        worst = max(c["other_cpu"] for c in busy)
        notes.append(f"{len(busy)} of {len(cells)} cells ran while the rest of the machine used more than 25% "
                     f"of a CPU (up to {worst * 100:.0f}%; 'other CPU' column): those numbers are understated")
    print("note: CPU columns are % of one core over the measured window; 'CPU us/...' is client + server CPU "
          "time per item (less sensitive to a busy machine than the rates); 'other CPU' is what the rest of "
          "the machine (other processes, softirq) used meanwhile.")
    for n in notes:
        print(f"note: {n}")

    if args.json:
        write_json(args.json, {
            "benchmark": "streams",
            "config": {"systems": systems, "sizes": args.sizes, "capacities": args.capacities,
                       "echo_size": args.echo_size, "concurrency": args.concurrency, "seconds": args.seconds,
                       "warmup": args.warmup, "pin": args.pin, "dialer": args.dialer, "busy_loop": args.busy_loop,
                       "typed_size": None if "grid" not in impls and
                       "grid-pure" not in impls else _find_typed_size(cells),
                       "python": platform.python_version(), "platform": platform.platform(),
                       "cpus": os.cpu_count(), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
            "implementations": impls,
            "results": cells,
            "targets": targets,
            "notes": notes,
        })
        print(f"wrote {args.json}")
    return 0


def _find_typed_size(cells: List[Dict[str, Any]]) -> Optional[int]:
    for c in cells:
        if c["kind"] == "typed":
            return int(c["size"])
    return None


# =========================================================================== CLI


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="grid stream benchmark (vs raw asyncio and grpc.aio)")
    ap.add_argument("--systems", type=_str_list, default=list(ALL_SYSTEMS),
                    help="comma list of grid,grid-pure,raw,picows,grpc,floor (default: all)")
    ap.add_argument("--sizes", type=_int_list, default=[64, 4096],
                    help="one-way message sizes in bytes (default 64,4096)")
    ap.add_argument("--capacities", type=_int_list, default=[1, 64],
                    help="grid stream capacities; also the echo windows and, the largest, picows's "
                         "credit window (default 1,64)")
    ap.add_argument("--echo-size", type=int, default=64, help="two-way echo item size (default 64)")
    ap.add_argument("--concurrency", type=int, default=16, help="typed/byte-level request workers (default 16)")
    ap.add_argument("--requests-only", action="store_true",
                    help="run only the typed vs byte-level single-request cells (grid and grid-pure; "
                         "other systems have none and are skipped)")
    ap.add_argument("--seconds", type=float, default=2.0, help="measured seconds per cell (default 2)")
    ap.add_argument("--warmup", type=float, default=0.5, help="warm-up seconds per cell (default 0.5)")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    ap.add_argument("--dialer", choices=["consumer", "producer"], default="consumer",
                    help="which grid node dials, and so masks what it sends: the stream's consumer "
                         "(default) or its producer")
    ap.add_argument("--busy-loop", action="store_true",
                    help="diagnostic: keep every process's event loop from sleeping, to see a window-bound "
                         "stream without the machine's wake-up latency")
    ap.add_argument("--pin", choices=["none", "split", "same"], default="none",
                    help="CPU placement: none = let the OS schedule (default); split = server on one CPU, "
                         "client on another; same = both on one CPU")
    # internal: the server / client processes
    ap.add_argument("--role", choices=["orchestrator", "server", "client"], default="orchestrator",
                    help=argparse.SUPPRESS)
    ap.add_argument("--system", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--peer-port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--server-pid", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--cpu", type=int, default=-1, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.role == "orchestrator":
        return orchestrate(args)
    if args.cpu >= 0 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    import uvloop

    role = role_server(args) if args.role == "server" else role_client(args)
    uvloop.run(_busy(role) if args.busy_loop else role)
    return 0


async def _busy(role: Any) -> Any:
    """Run ``role`` with a callback that reschedules itself every loop turn,
    so the loop polls instead of sleeping (``--busy-loop``)."""
    loop = asyncio.get_running_loop()

    def spin() -> None:
        loop.call_soon(spin)

    spin()
    return await role


if __name__ == "__main__":
    sys.exit(main())
