"""Request/response benchmark: grid vs raw asyncio, picows, grpc.aio and the
blocking-socket floor.

Every system is measured the same way: a server process and a client process
(separate interpreters, uvloop in each, loopback only), one connection, a
512-byte echo at each concurrency level and a 32 KiB echo at 16 in flight.
For each cell the client runs that many workers, each awaiting one request at
a time; after a warm-up it records every completed request's latency
(``time.perf_counter_ns`` around the await) for a fixed duration and reports
requests/s, p50 and p99.

Systems:
  grid       grid Manager pair, compiled core (GRID_PURE unset in both processes)
  grid-pure  grid Manager pair, pure-Python twins (GRID_PURE=1 in both processes)
  raw        baselines/raw_echo.py: length+id framed asyncio.Protocol, writes
             batched per loop iteration, the ceiling at high concurrency
  picows     baselines/picows_echo.py: picows WebSocket with a small request-id
             mux, every message written as it is sent
  floor      baselines/blocking_echo.py: plain blocking sockets, the same
             framing as raw, one call at a time (c=1 cells only): the least a
             Python round trip takes on this machine
  grpc       baselines/grpc_echo.py: grpc.aio unary-unary, identity serialisers

Then a memory check: the client launches N (10,000) concurrent requests at a
server handler that holds every reply until all N have arrived, and reports
how far that raised the client's peak RSS (VmHWM, reset first where the kernel
allows).

Usage::

    python benchmarks/requests.py [--systems grid,grid-pure,raw,picows,floor,grpc]
        [--concurrency 1,16,128] [--seconds 3] [--warmup 1] [--size 512]
        [--large-size 32768] [--large-concurrency 16]
        [--inflight 10000] [--no-memcheck] [--json PATH]

The same file is the server and client program (``--role server|client|memcheck``,
internal).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
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

from _report import num, print_table, print_targets, ratio_cell, target, write_json  # noqa: E402
from _procs import (  # noqa: E402  (benchmarks/_procs.py)
    HOST, _ServerProc, _cpus, _grid_ports, _grid_url, _int_list, _label, _str_list, _system_env,
)

ALL_SYSTEMS = ("grid", "grid-pure", "raw", "picows", "floor", "grpc")
#: Systems that need a package outside the core dependencies: (module, extra).
OPTIONAL = {"grpc": ("grpc", "grpcio"), "picows": ("picows", "picows")}
MEMCHECK_SYSTEMS = ("grid", "grid-pure", "raw")
ECHO_HANDLER = 1
HOLD_HANDLER = 2
GRID_TIMEOUT = 10.0  # per-request timeout passed to grid (large: never hit in a healthy run)
MEMCHECK_TIMEOUT = 60.0
PROBE = b"probe"


# =========================================================================== helpers


def _uvloop_run(coro: Any) -> Any:
    import uvloop

    return uvloop.run(coro)


def _proc_status_kib(field: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _peak_rss_kib() -> int:
    hwm = _proc_status_kib("VmHWM")
    if hwm is not None:
        return hwm
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r // 1024 if sys.platform == "darwin" else r


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _percentile(sorted_vals: List[int], q: float) -> float:
    if not sorted_vals:
        return float("nan")
    k = min(len(sorted_vals) - 1, max(0, int(round(q * (len(sorted_vals) - 1)))))
    return float(sorted_vals[k])


# =========================================================================== load generator


async def run_cell(
    call: Callable[[bytes], Any], payload: bytes, concurrency: int, seconds: float, warmup: float
) -> Dict[str, Any]:
    """``concurrency`` workers, each awaiting one ``call(payload)`` at a time.

    Every request completing inside the measurement window counts towards the
    throughput and has its latency recorded.
    """
    phase = [0]  # 0 warm-up, 1 measuring, 2 stopping
    errors = [0]
    first_error: List[str] = []
    samples: List[List[int]] = [[] for _ in range(concurrency)]

    async def worker(lat: List[int]) -> None:
        pc = time.perf_counter_ns
        append = lat.append
        while phase[0] != 2:
            t0 = pc()
            try:
                reply = await call(payload)
            except Exception as exc:  # noqa: BLE001 - counted and reported
                errors[0] += 1
                if not first_error:
                    first_error.append(repr(exc))
                await asyncio.sleep(0.001)
                continue
            t1 = pc()
            if reply != payload:
                errors[0] += 1
                if not first_error:
                    first_error.append("echo mismatch")
                continue
            if phase[0] == 1:
                append(t1 - t0)

    tasks = [asyncio.ensure_future(worker(s)) for s in samples]
    await asyncio.sleep(warmup)
    t_start = time.perf_counter()
    phase[0] = 1
    await asyncio.sleep(seconds)
    phase[0] = 2
    elapsed = time.perf_counter() - t_start
    await asyncio.gather(*tasks)

    lat = sorted(x for s in samples for x in s)
    n = len(lat)
    return {
        "concurrency": concurrency,
        "requests": n,
        "seconds": round(elapsed, 4),
        "rps": n / elapsed if elapsed > 0 else 0.0,
        "p50_us": _percentile(lat, 0.50) / 1000.0,
        "p99_us": _percentile(lat, 0.99) / 1000.0,
        "mean_us": (sum(lat) / n / 1000.0) if n else float("nan"),
        "max_us": (lat[-1] / 1000.0) if n else float("nan"),
        "errors": errors[0],
        "first_error": first_error[0] if first_error else None,
    }


async def _launch_inflight(call: Callable[[bytes], Any], payload: bytes, n: int) -> Dict[str, Any]:
    """Fire ``n`` concurrent requests (one task each) and report the peak-RSS rise."""

    async def one() -> Any:
        return await call(payload)

    gc.collect()
    reset = _reset_peak_rss()
    rss_before = _proc_status_kib("VmRSS")
    hwm_before = _peak_rss_kib()
    t0 = time.perf_counter()
    replies = await asyncio.wait_for(
        asyncio.gather(*(one() for _ in range(n)), return_exceptions=True), MEMCHECK_TIMEOUT
    )
    dt = time.perf_counter() - t0
    hwm_after = _peak_rss_kib()
    bad = [r for r in replies if isinstance(r, BaseException) or r != payload]
    return {
        "inflight": n,
        "failed": len(bad),
        "first_error": repr(bad[0]) if bad else None,
        "seconds": round(dt, 4),
        "hwm_reset": reset,
        "rss_before_kib": rss_before,
        "peak_before_kib": hwm_before,
        "peak_after_kib": hwm_after,
        "delta_mib": (hwm_after - hwm_before) / 1024.0,
    }


# =========================================================================== grid


def _grid_manager(local_port: int, peer_port: int, local_is_server: bool) -> Any:
    """A Manager for this side.  Raises ImportError/AttributeError until the API exists."""
    import grid

    local = _grid_url(local_port)
    peer = _grid_url(peer_port)
    client_host, server_host = (peer, local) if local_is_server else (local, peer)
    return grid.Manager(
        local=local,
        hosts=[client_host, server_host],
        auth_fn=lambda: "token",
        validate_token=lambda tok: None,
        # The memory check's server holds every request until all 10,000 have
        # arrived: they must all be running at once (the default cap is 1024).
        max_running_handlers=65536,
    )


async def grid_server(port: int, peer_port: int, hold: int) -> None:
    try:
        import grid

        mgr = _grid_manager(port, peer_port, local_is_server=True)
        mgr.register_single(ECHO_HANDLER, lambda payload: payload)
    except (ImportError, AttributeError) as exc:
        print(f"UNAVAILABLE {type(exc).__name__}: {exc}", flush=True)
        return

    held = [0]
    release = asyncio.Event()

    async def hold_handler(payload: Any) -> Any:
        if payload == PROBE:
            return payload
        held[0] += 1
        if held[0] >= hold:
            release.set()
        await release.wait()
        return payload

    try:
        mgr.register_single(HOLD_HANDLER, hold_handler)
    except Exception as exc:  # noqa: BLE001 - async handlers unsupported: memcheck falls back to echo
        print(f"grid server: no async hold handler ({exc!r})", file=sys.stderr, flush=True)

    await mgr.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"READY {port} {grid.IMPLEMENTATION}", flush=True)
    await stop.wait()
    await mgr.close()


async def _grid_client_conn(port: int, server_port: int) -> Tuple[Any, Any]:
    mgr = _grid_manager(port, server_port, local_is_server=False)
    await mgr.start()
    conn = mgr.connection(_grid_url(server_port))
    await conn.wait_for_connect(timeout=10.0)
    return mgr, conn


# =========================================================================== server / client roles


async def role_server(args: argparse.Namespace) -> None:
    system = args.system
    if system in ("grid", "grid-pure"):
        await grid_server(args.port, args.peer_port, args.hold)
        return
    if system == "raw":
        from baselines import raw_echo

        server = await raw_echo.serve(HOST, 0, hold=args.hold)
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
    elif system == "floor":
        from baselines import blocking_echo

        server = blocking_echo.BlockingServer(HOST, 0)
        port = server.port
        impl = "blocking sockets"
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


async def _client_call(args: argparse.Namespace) -> Tuple[Callable[[bytes], Any], str, Callable[[], Any]]:
    """(call, implementation, async close) for the system under test."""
    system = args.system
    if system in ("grid", "grid-pure"):
        import grid

        mgr, conn = await _grid_client_conn(args.port, args.peer_port)
        request = conn.request

        def call(p: bytes, _r=request, _h=ECHO_HANDLER, _t=GRID_TIMEOUT) -> Any:
            return _r(_h, p, timeout=_t)

        return call, grid.IMPLEMENTATION, mgr.close
    if system == "raw":
        from baselines import raw_echo

        client = await raw_echo.RawClient.connect(HOST, args.peer_port)

        async def close_raw() -> None:
            client.close()

        return client.request, "asyncio.Protocol", close_raw
    if system == "grpc":
        from baselines import grpc_echo

        gclient = grpc_echo.GrpcClient(HOST, args.peer_port)
        await gclient.wait_ready()
        return gclient.request, "grpc.aio", gclient.close
    if system == "picows":
        from baselines import picows_echo

        pclient = await picows_echo.PicowsClient.connect(HOST, args.peer_port)

        async def close_picows() -> None:
            pclient.close()

        return pclient.request, "picows", close_picows
    raise SystemExit(f"unknown system {system}")


def _cell_plan(args: argparse.Namespace) -> List[Tuple[int, int]]:
    """(payload size, concurrency) of every cell a system runs, in order."""
    if args.system == "floor":  # one call at a time is all a blocking client does
        return [(args.size, 1)] if 1 in args.concurrency else []
    cells = [(args.size, c) for c in args.concurrency]
    if args.large_size:
        cells += [(args.large_size, c) for c in args.large_concurrency]
    return cells


def _floor_cell(args: argparse.Namespace, size: int) -> Dict[str, Any]:
    from baselines import blocking_echo

    client = blocking_echo.BlockingClient(HOST, args.peer_port)
    lat = sorted(blocking_echo.measure(client, os.urandom(size), args.seconds, args.warmup))
    client.close()
    n = len(lat)
    elapsed = sum(lat) / 1e9
    return {"concurrency": 1, "size": size, "requests": n, "seconds": round(elapsed, 4),
            "rps": n / elapsed if elapsed > 0 else 0.0, "p50_us": _percentile(lat, 0.50) / 1000.0,
            "p99_us": _percentile(lat, 0.99) / 1000.0, "mean_us": elapsed * 1e6 / n if n else float("nan"),
            "max_us": (lat[-1] / 1000.0) if n else float("nan"), "errors": 0, "first_error": None}


async def role_client(args: argparse.Namespace) -> None:
    plan = _cell_plan(args)
    if args.system == "floor":
        cells = [_floor_cell(args, size) for size, _ in plan]
        print("RESULT " + json.dumps({"system": "floor", "impl": "blocking sockets", "cells": cells}), flush=True)
        return
    call, impl, close = await _client_call(args)
    cells = []
    for size, c in plan:
        payload = os.urandom(size)
        if await call(payload) != payload:
            raise SystemExit("first echo mismatch")
        cells.append(dict(await run_cell(call, payload, c, args.seconds, args.warmup), size=size))
    await close()
    print("RESULT " + json.dumps({"system": args.system, "impl": impl, "cells": cells}), flush=True)


async def role_memcheck(args: argparse.Namespace) -> None:
    payload = os.urandom(args.size)
    system = args.system
    mode = "echo"
    note = None
    if system in ("grid", "grid-pure"):
        import grid

        impl = grid.IMPLEMENTATION
        mgr, conn = await _grid_client_conn(args.port, args.peer_port)
        close = mgr.close
        for _ in range(100):  # warm the connection and allocator first
            await conn.request(ECHO_HANDLER, payload, timeout=GRID_TIMEOUT)
        try:
            ok = await conn.request(HOLD_HANDLER, PROBE, timeout=2.0) == PROBE
        except Exception as exc:  # noqa: BLE001
            ok, note = False, f"hold handler unusable ({exc!r}); fired at the echo handler instead"
        mode = "hold" if ok else "echo"
        handler = HOLD_HANDLER if ok else ECHO_HANDLER

        def call(p: bytes, _r=conn.request, _h=handler) -> Any:
            return _r(_h, p, timeout=MEMCHECK_TIMEOUT)

    elif system == "raw":
        from baselines import raw_echo

        impl = "asyncio.Protocol"
        client = await raw_echo.RawClient.connect(HOST, args.peer_port)

        async def close() -> None:
            client.close()

        call = client.request  # (no warm-up: the server holds every reply until N have arrived)
        mode = "hold"
    else:
        raise SystemExit(f"no memcheck for {system}")
    res = await _launch_inflight(call, payload, args.inflight)
    await close()
    res.update({"system": system, "impl": impl, "mode": mode, "note": note})
    print("RESULT " + json.dumps(res), flush=True)


# =========================================================================== orchestrator


def _run_pair(
    system: str, client_role: str, client_args: List[str], timeout: float, hold: int = 0, pin: str = "none"
) -> Tuple[Optional[Dict[str, Any]], Optional[str]]:
    """Start a server, run one client process against it; (result, problem)."""
    env = _system_env(system)
    me = os.path.abspath(__file__)
    base = [sys.executable, me, "--system", system]
    if system in ("grid", "grid-pure"):
        # The caller dials (WebSocket client, masking its requests) in every run.
        client_port, server_port = _grid_ports(client_dials=True)
        server_cmd = base + ["--role", "server", "--port", str(server_port), "--peer-port", str(client_port)]
    else:
        client_port = server_port = 0
        server_cmd = base + ["--role", "server"]
    server_cpu, client_cpu = _cpus(pin)
    server_cmd += ["--hold", str(hold), "--cpu", str(server_cpu)]
    server = _ServerProc(server_cmd, env)
    try:
        state, fields = server.wait_ready()
        if state == "unavailable":
            return None, "unavailable: " + fields[0]
        if state != "ready":
            return None, fields[0]
        if system not in ("grid", "grid-pure"):
            server_port = int(fields[0])
        cmd = base + ["--role", client_role, "--port", str(client_port), "--peer-port", str(server_port)]
        cmd += client_args + ["--cpu", str(client_cpu)]
        try:
            out = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return None, f"client timed out after {timeout:.0f} s"
        for line in out.stdout.splitlines():
            if line.startswith("RESULT "):
                res = json.loads(line[len("RESULT ") :])
                if len(fields) > 1:
                    res["server_impl"] = fields[1]
                return res, None
        return None, f"client exited with {out.returncode} and no result"
    finally:
        server.stop()


Cells = Dict[str, Dict[Tuple[int, int], Dict[str, Any]]]


def _targets(results: Cells, memory: Dict[str, Dict[str, Any]], impls: Dict[str, str],
             args: argparse.Namespace) -> List[Dict[str, Any]]:
    """Each target: the measured ratio beside its bound (``bound`` None: for information)."""
    out: List[Dict[str, Any]] = []
    small, large = args.size, args.large_size
    big_c = args.large_concurrency[0] if args.large_concurrency else 16

    def cell(system: str, size: int, c: int) -> Optional[Dict[str, Any]]:
        return results.get(system, {}).get((size, c))

    def ratio(a: str, b: str, size: int, c: int, key: str) -> Tuple[Optional[float], str]:
        x, y = cell(a, size, c), cell(b, size, c)
        if x is None or y is None or not y.get(key) or x.get(key) != x.get(key):
            return None, f"needs {a} and {b} at {size} B, c={c}"
        return x[key] / y[key], ""

    def add(name: str, value: Tuple[Optional[float], str], op: str, bound: Optional[float],
            unit: str = "x") -> None:
        out.append(target(name, value[0], op, bound, value[1], unit))

    add(f"c=1 {small} B grid-accel p50 / picows p50", ratio("grid", "picows", small, 1, "p50_us"), "<=", 1.0)
    add(f"c=1 {small} B grid-accel p99 / picows p99", ratio("grid", "picows", small, 1, "p99_us"), "<=", 1.0)
    add(f"c=1 {small} B grid-accel p50 / blocking floor p50", ratio("grid", "floor", small, 1, "p50_us"), "<=", 1.5)
    add(f"c=1 {small} B grid-accel p99 / blocking floor p99", ratio("grid", "floor", small, 1, "p99_us"), "<=", 1.5)
    add(f"c=1 {small} B grid-accel p50 / raw p50", ratio("grid", "raw", small, 1, "p50_us"), "<=", 1.3)
    add(f"c=1 {small} B picows p50 / blocking floor p50", ratio("picows", "floor", small, 1, "p50_us"), "<=", None)
    add(f"c=1 {small} B raw p50 / blocking floor p50", ratio("raw", "floor", small, 1, "p50_us"), "<=", None)
    if large:
        add(f"c={big_c} {large} B grid-accel req/s / picows req/s",
            ratio("grid", "picows", large, big_c, "rps"), ">=", 1.0)
        add(f"c={big_c} {large} B grid-accel req/s / raw req/s", ratio("grid", "raw", large, big_c, "rps"), ">=", None)
    for c in args.concurrency:
        if c > 1:
            add(f"c={c} {small} B grid-accel req/s / picows req/s", ratio("grid", "picows", small, c, "rps"),
                ">=", None)
    add(f"c=128 {small} B grid-accel req/s / raw req/s", ratio("grid", "raw", small, 128, "rps"), ">=", 1.5)
    add(f"c=128 {small} B grid-accel req/s / grpc req/s", ratio("grid", "grpc", small, 128, "rps"), ">=", 20.0)
    add(f"c=128 {small} B grid-accel req/s / grid-pure req/s", ratio("grid", "grid-pure", small, 128, "rps"),
        ">=", 2.0)
    m = memory.get("grid")
    mval = None
    if m is not None and not m.get("failed"):
        mval = m["delta_mib"]
    add(f"{m['inflight'] if m else 10000:,} in-flight grid requests: client peak RSS rise",
        (mval, "" if m else "needs the grid memory check"), "<", 64.0, unit=" MiB")
    if impls.get("grid") not in (None, "cython"):
        for t in out:
            if "grid-accel" in t["target"] or "grid requests" in t["target"]:
                t["note"] = f"'grid' ran with implementation {impls['grid']!r}, not the compiled core"
    return out


def _median_run(rounds: List[Dict[str, Any]]) -> Dict[str, Any]:
    """One client result whose cells hold the median of each figure over the rounds."""
    import statistics

    first = rounds[0]
    cells = []
    for i, cell in enumerate(first["cells"]):
        merged = dict(cell)
        same = [r["cells"][i] for r in rounds if i < len(r["cells"])]
        for key in ("rps", "p50_us", "p99_us", "mean_us", "max_us"):
            vals = [c[key] for c in same if c.get(key) == c.get(key)]
            if vals:
                merged[key] = statistics.median(vals)
        merged["errors"] = sum(c["errors"] for c in same)
        merged["rounds"] = len(same)
        if len(same) > 1:
            merged["p50_us_rounds"] = [c["p50_us"] for c in same]
            merged["rps_rounds"] = [c["rps"] for c in same]
        cells.append(merged)
    return dict(first, cells=cells)


def _missing_package(system: str) -> Optional[str]:
    if system not in OPTIONAL:
        return None
    import importlib.util

    module, package = OPTIONAL[system]
    if importlib.util.find_spec(module) is None:
        return f"{system}: {package} not installed (pip install -e '.[bench]'); skipped"
    return None


def orchestrate(args: argparse.Namespace) -> int:
    try:
        sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]
    except (AttributeError, ValueError):
        pass
    systems = [s for s in args.systems if s in ALL_SYSTEMS]
    unknown = [s for s in args.systems if s not in ALL_SYSTEMS]
    if unknown:
        print(f"unknown systems ignored: {', '.join(unknown)}", file=sys.stderr)
    conc_args = ["--concurrency", ",".join(map(str, args.concurrency)), "--seconds", str(args.seconds),
                 "--warmup", str(args.warmup), "--size", str(args.size), "--large-size", str(args.large_size),
                 "--large-concurrency", ",".join(map(str, args.large_concurrency))]
    per_cell = args.seconds + args.warmup
    n_cells = len(args.concurrency) + (len(args.large_concurrency) if args.large_size else 0)
    client_timeout = 60.0 + n_cells * (per_cell * 3 + 10)

    large = (f" and a {args.large_size}-byte echo at {', '.join(map(str, args.large_concurrency))} in flight"
             if args.large_size else "")
    print(f"requests benchmark: {args.size}-byte echo{large} over one loopback connection, server and client "
          f"in separate processes (uvloop); {args.warmup:g} s warm-up + {args.seconds:g} s per cell; CPU pinning: "
          f"{args.pin}; systems: {', '.join(systems)}; concurrency: {', '.join(map(str, args.concurrency))}; "
          f"rounds: {args.rounds}")

    results: Cells = {}
    impls: Dict[str, str] = {}
    memory: Dict[str, Dict[str, Any]] = {}
    notes: List[str] = []
    flat: List[Dict[str, Any]] = []

    runs: Dict[str, List[Dict[str, Any]]] = {}
    for system in list(systems):
        missing = _missing_package(system)
        if missing:
            print(missing)
            notes.append(missing)
            systems.remove(system)
    # Round-robin: each round runs every system once, so a change in the machine's
    # load meets all of them; each cell's figures are the medians over the rounds.
    for rnd in range(args.rounds):
        for system in systems:
            if rnd and system not in runs:
                continue  # failed in the first round
            tag = f" (round {rnd + 1}/{args.rounds})" if args.rounds > 1 else ""
            print(f"  running {_label(system)}{tag} ...", flush=True)
            res, problem = _run_pair(system, "client", conc_args, client_timeout, pin=args.pin)
            if res is None:
                if rnd == 0:
                    runs.setdefault("!" + system, []).append({"problem": problem})
                else:
                    notes.append(f"{system}: round {rnd + 1} failed: {problem}")
                continue
            runs.setdefault(system, []).append(res)
    for system in systems:
        if system in runs:
            res, problem = _median_run(runs[system]), None
        else:
            res, problem = None, runs["!" + system][0]["problem"]
        if res is None:
            if problem and problem.startswith("unavailable") and system.startswith("grid"):
                msg = f"{system}: not available yet ({problem[len('unavailable: '):]})"
                print("grid: not available yet" if system == "grid" else f"{system}: not available yet")
            else:
                msg = f"{system}: failed: {problem}"
                print(msg)
            notes.append(msg)
            continue
        impls[system] = res["impl"]
        if res.get("server_impl") and system.startswith("grid") and res["server_impl"] != res["impl"]:
            notes.append(f"{system}: client ran {res['impl']} but server ran {res['server_impl']}")
        results[system] = {}
        for cell in res["cells"]:
            cell = dict(cell, system=system, impl=res["impl"])
            results[system][(cell["size"], cell["concurrency"])] = cell
            flat.append(cell)
            if cell["errors"]:
                notes.append(f"{system} {cell['size']} B c={cell['concurrency']}: {cell['errors']} errors "
                             f"(first: {cell['first_error']})")

    if args.memcheck:
        for system in systems:
            if system not in MEMCHECK_SYSTEMS or system not in results:
                continue
            print(f"  memory check {_label(system)}: {args.inflight:,} in flight ...", flush=True)
            res, problem = _run_pair(system, "memcheck", ["--inflight", str(args.inflight), "--size", str(args.size)],
                                     MEMCHECK_TIMEOUT + 60, hold=args.inflight, pin=args.pin)
            if res is None:
                notes.append(f"{system} memory check failed: {problem}")
                print(f"  {system} memory check failed: {problem}")
                continue
            memory[system] = res
            if res.get("note"):
                notes.append(f"{system} memory check: {res['note']}")

    def vs(system: str, other: str, key: str, size: int, c: int) -> str:
        a, b = results.get(system, {}).get((size, c)), results.get(other, {}).get((size, c))
        return ratio_cell(a[key] if a else None, b.get(key) if b else None)

    rows = []
    keys = sorted({k for per in results.values() for k in per}, key=lambda k: (k[0] != args.size, k[0], k[1]))
    for size, c in keys:
        for system in systems:
            cell = results.get(system, {}).get((size, c))
            if cell is None:
                continue
            rows.append([_label(system), impls.get(system, "?"), f"{size:,}", c, num(cell["rps"]),
                         num(cell["p50_us"], 1), num(cell["p99_us"], 1),
                         vs(system, "raw", "rps", size, c), vs(system, "picows", "rps", size, c),
                         vs(system, "picows", "p50_us", size, c), vs(system, "floor", "p50_us", size, c),
                         cell["errors"]])
    if rows:
        print_table("Request/response echo, one connection (ratios: this system / the named one, same cell)",
                    ["system", "impl", "bytes", "conc", "req/s", "p50 us", "p99 us", "req/s ÷raw",
                     "req/s ÷picows", "p50 ÷picows", "p50 ÷floor", "errors"], rows)
    if memory:
        mrows = [[_label(s), m["mode"], f"{m['inflight']:,}", m["failed"], f"{m['delta_mib']:.1f}",
                  f"{m['peak_after_kib'] / 1024:.1f}", f"{m['seconds']:.2f}"] for s, m in memory.items()]
        print_table("In-flight memory (client)", ["system", "server", "requests", "failed", "peak RSS rise MiB",
                                                  "peak RSS MiB", "s"], mrows)

    targets = _targets(results, memory, impls, args)
    print_targets(targets)
    for n in notes:
        print(f"note: {n}")

    if args.json:
        write_json(args.json, {
            "benchmark": "requests",
            "config": {"systems": systems, "concurrency": args.concurrency, "seconds": args.seconds,
                       "warmup": args.warmup, "rounds": args.rounds, "size": args.size, "large_size": args.large_size,
                       "large_concurrency": args.large_concurrency, "inflight": args.inflight, "pin": args.pin,
                       "python": platform.python_version(), "platform": platform.platform(),
                       "cpus": os.cpu_count(), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
            "implementations": impls,
            "results": flat,
            "memory": list(memory.values()),
            "targets": targets,
            "notes": notes,
        })
        print(f"wrote {args.json}")
    return 0


# =========================================================================== CLI


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="grid request/response benchmark (vs raw asyncio and grpc.aio)")
    ap.add_argument("--systems", type=_str_list, default=list(ALL_SYSTEMS),
                    help="comma list of grid,grid-pure,raw,picows,floor,grpc (default: all)")
    ap.add_argument("--concurrency", type=_int_list, default=[1, 16, 128], help="comma list (default 1,16,128)")
    ap.add_argument("--seconds", type=float, default=3.0, help="measured seconds per cell (default 3)")
    ap.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per cell (default 1)")
    ap.add_argument("--size", type=int, default=512, help="payload bytes (default 512)")
    ap.add_argument("--large-size", type=int, default=32768,
                    help="payload bytes of the large cells (default 32768; 0 = none)")
    ap.add_argument("--large-concurrency", type=_int_list, default=[16],
                    help="concurrency of the large cells (default 16)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="run every system this many times, round-robin, and report each cell's medians "
                         "(default 1)")
    ap.add_argument("--inflight", type=int, default=10_000, help="requests in flight for the memory check")
    ap.add_argument("--no-memcheck", dest="memcheck", action="store_false", help="skip the memory check")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    ap.add_argument("--pin", choices=["none", "split", "same"], default="none",
                    help="CPU placement: none = let the OS schedule (default); split = server on one CPU, "
                         "client on another; same = both on one CPU (measures total CPU cost per request)")
    # internal: the server / client processes
    ap.add_argument("--role", choices=["orchestrator", "server", "client", "memcheck"], default="orchestrator",
                    help=argparse.SUPPRESS)
    ap.add_argument("--system", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--peer-port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--hold", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--cpu", type=int, default=-1, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.role == "orchestrator":
        return orchestrate(args)
    if args.cpu >= 0 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    role = {"server": role_server, "client": role_client, "memcheck": role_memcheck}[args.role]
    _uvloop_run(role(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
