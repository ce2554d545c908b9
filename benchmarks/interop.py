"""Interop benchmark: grid (Python) against MinIO's own Go grid, and each against itself.

Every pair is measured the same way as in requests.py: a server node and a
client node in separate processes, one loopback connection (the client
dials), a warm-up and then a fixed measured window.  The nodes serve the
interop handlers of ``interop/handlers.json`` (Python: ``interop/pynode.py``;
Go: ``gridpeer``, MinIO's pinned ``internal/grid``).

Cells:

echo
    the ``echo`` handler with a ``--size`` (512) byte payload; ``c`` workers,
    each awaiting one request at a time; requests/s, p50 and p99 latency.
one-way stream
    the ``stream-bench`` handler (in_capacity 0, out_capacity 128) sends
    ``--stream-size`` (64) byte items as fast as the caller's credits allow;
    messages/s received by the caller, stream cancelled after the window.

Pairs (client -> server):

  py-py       Python -> Python, compiled core in both processes
  py-py-pure  Python -> Python, pure-Python twins (GRID_PURE=1) in both
  py-go       Python (compiled) -> Go
  go-py       Go -> Python (compiled)
  go-go       Go -> Go, the reference every Python figure is divided by

The Go client's load scenarios are gridpeer's ``bench-echo`` and
``bench-stream`` (``interop/bench.go``).  Go pairs need the Go toolchain (the
peer is built once and cached, see interop/README.md); without it only the
Python pairs run.

Usage::

    python benchmarks/interop.py [--pairs py-py,py-py-pure,py-go,go-py,go-go]
        [--concurrency 1,16,128] [--seconds 3] [--warmup 1] [--size 512]
        [--stream-size 64] [--pin none|split|same] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import select
import signal
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# The checkout's grid (in-place build) and interop/ first; benchmarks/ (for
# _report) last, so that "interop" is the package, not this file.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) not in (HERE, ROOT)]
sys.path.insert(0, ROOT)
sys.path.append(HERE)

from _report import print_table, write_json  # noqa: E402
from _procs import _cpus, _grid_ports, _grid_url, _int_list, _str_list  # noqa: E402  (benchmarks/_procs.py)

HOST = "127.0.0.1"
ALL_PAIRS = ("py-py", "py-py-pure", "py-go", "go-py", "go-go")
REFERENCE = "go-go"
TOKEN = "interop-token"  # gridpeer's default token
GRID_TIMEOUT = 10.0


def _label(pair: str) -> str:
    return {
        "py-py": "Python -> Python (accel)",
        "py-py-pure": "Python -> Python (pure)",
        "py-go": "Python (accel) -> Go",
        "go-py": "Go -> Python (accel)",
        "go-go": "Go -> Go",
    }[pair]


def _kinds(pair: str) -> Tuple[str, str]:
    client, server = pair.split("-")[:2]
    return client, server


def _pure(pair: str) -> bool:
    return pair.endswith("-pure")


# =========================================================================== Python client


def _load_run_cell() -> Any:
    """requests.py's closed-loop load generator, so the numbers compare with it."""
    spec = importlib.util.spec_from_file_location("_grid_bench_requests", os.path.join(HERE, "requests.py"))
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.run_cell


async def _oneway(conn: Any, handler_id: int, size: int, seconds: float, warmup: float) -> Dict[str, Any]:
    import msgpack

    stream = await conn.new_stream(handler_id, msgpack.packb(size))
    count = [0]
    bad = [0]

    async def drain() -> None:
        async for item in stream:
            if len(item) != size:
                bad[0] += 1
            count[0] += 1

    reader = asyncio.ensure_future(drain())
    await asyncio.sleep(warmup)
    c0, t0 = count[0], time.perf_counter()
    await asyncio.sleep(seconds)
    c1, dt = count[0], time.perf_counter() - t0
    error = None
    if reader.done() and reader.exception() is not None:
        error = repr(reader.exception())
    reader.cancel()
    await asyncio.gather(reader, return_exceptions=True)
    stream.cancel()
    n = c1 - c0
    return {"size": size, "messages": n, "seconds": round(dt, 4), "msgs_per_s": n / dt if dt > 0 else 0.0,
            "mb_per_s": n * size / dt / 1e6 if dt > 0 else 0.0, "errors": bad[0] + (error is not None),
            "first_error": error or ("wrong item size" if bad[0] else None)}


async def role_client(args: argparse.Namespace) -> None:
    import grid
    from interop import pynode

    local, remote = f"http://{HOST}:{args.port}", f"http://{HOST}:{args.peer_port}"
    mgr = grid.Manager(local, [local, remote], auth_fn=lambda: TOKEN,
                       validate_token=pynode.token_checker(TOKEN))
    pynode.register(mgr)  # the caller reads stream capacities from its own registration
    await mgr.start()
    conn = mgr.connection(remote)
    await conn.wait_for_connect(timeout=10.0)
    run_cell = _load_run_cell()
    payload = os.urandom(args.size)
    echo = pynode.hid("echo")

    def call(p: bytes) -> Any:
        return conn.request(echo, p, GRID_TIMEOUT)

    cells = []
    for c in args.concurrency:
        cell = await run_cell(call, payload, c, args.seconds, args.warmup)
        cells.append(dict(cell, kind="echo", size=args.size))
    stream = await _oneway(conn, pynode.hid("stream-bench"), args.stream_size, args.seconds, args.warmup)
    cells.append(dict(stream, kind="stream"))
    await mgr.close()
    print("RESULT " + json.dumps({"impl": grid.IMPLEMENTATION, "cells": cells}), flush=True)


# =========================================================================== orchestration


def _env(pure: bool) -> Dict[str, str]:
    env = dict(os.environ)
    env.pop("GRID_PURE", None)
    if pure:
        env["GRID_PURE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _pin(cpu: int) -> Any:
    """A preexec_fn putting the child on ``cpu`` (None when unpinned)."""
    if cpu < 0:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


class _Server:
    """A server node process; READY (Python) or the ready event (Go) on stdout."""

    def __init__(self, kind: str, local: str, peer: str, pure: bool, cpu: int) -> None:
        self.kind = kind
        hosts = f"{local},{peer}"
        if kind == "py":
            cmd = [sys.executable, "-m", "interop.pynode", "--local", local, "--hosts", hosts, "--token", TOKEN]
            env = _env(pure)
        else:
            from interop import gopeer

            cmd = [str(gopeer.build_peer()), *gopeer.peer_args(local, hosts=hosts.split(","), token=TOKEN,
                                                               extra=["-log-state=false", "-grid-log=false"])]
            env = dict(os.environ)
        self.impl = "go"
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, cwd=ROOT, preexec_fn=_pin(cpu))

    def wait_ready(self, timeout: float = 30.0) -> Optional[str]:
        """None when ready, else the problem."""
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            r, _, _ = select.select([self.proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not r:
                break
            line = self.proc.stdout.readline()
            if not line:
                return f"server exited with {self.proc.wait()}"
            if line.startswith("READY "):
                self.impl = line.split()[2]
                return None
            if line.startswith("{") and json.loads(line).get("event") == "ready":
                return None
        return "server not ready in time"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _go_client(client: str, server: str, scenario: str, n: Optional[int], size: int,
               args: argparse.Namespace, cpu: int) -> Dict[str, Any]:
    from interop import gopeer

    cmd = [str(gopeer.build_peer()), *gopeer.peer_args(
        client, hosts=[client, server], token=TOKEN,
        extra=["-log-state=false", "-grid-log=false", "-remote", server, "-scenario", scenario,
               "-payload-size", str(size), "-duration", f"{args.seconds}s", "-warmup", f"{args.warmup}s",
               "-timeout", f"{args.seconds + args.warmup + 60}s"] + (["-n", str(n)] if n is not None else []))]
    out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         timeout=args.seconds + args.warmup + 90, preexec_fn=_pin(cpu))
    for line in out.stdout.splitlines():
        if line.startswith("{"):
            obj = json.loads(line)
            if obj.get("scenario") == scenario:
                d = obj.get("detail") or {}
                if not obj.get("ok"):
                    d = dict(d, failed=obj.get("error"))
                return d
            if obj.get("scenario") == "connect":
                raise RuntimeError(f"go client could not connect: {obj.get('error')}")
    raise RuntimeError(f"go client exited with {out.returncode}: {out.stderr[-500:]}")


def _run_pair(pair: str, args: argparse.Namespace) -> Tuple[Optional[Dict[str, Any]], Optional[str]]:
    """Start the server node, run the client's cells; (result, problem)."""
    ckind, skind = _kinds(pair)
    pure = _pure(pair)
    client, server = (_grid_url(port) for port in _grid_ports(client_dials=True))
    server_cpu, client_cpu = _cpus(args.pin)
    srv = _Server(skind, server, client, pure, server_cpu)
    try:
        problem = srv.wait_ready()
        if problem:
            return None, problem
        if ckind == "py":
            cmd = [sys.executable, os.path.abspath(__file__), "--role", "client",
                   "--port", client.rsplit(":", 1)[1], "--peer-port", server.rsplit(":", 1)[1],
                   "--concurrency", ",".join(map(str, args.concurrency)), "--seconds", str(args.seconds),
                   "--warmup", str(args.warmup), "--size", str(args.size), "--stream-size", str(args.stream_size)]
            timeout = 60 + (len(args.concurrency) + 1) * (args.seconds + args.warmup) * 3
            try:
                out = subprocess.run(cmd, env=_env(pure), stdout=subprocess.PIPE, text=True,
                                     timeout=timeout, cwd=ROOT, preexec_fn=_pin(client_cpu))
            except subprocess.TimeoutExpired:
                return None, f"client timed out after {timeout:.0f} s"
            for line in out.stdout.splitlines():
                if line.startswith("RESULT "):
                    res = json.loads(line[len("RESULT "):])
                    res["server_impl"] = srv.impl
                    return res, None
            return None, f"client exited with {out.returncode} and no result"
        cells = []
        for c in args.concurrency:
            d = _go_client(client, server, "bench-echo", c, args.size, args, client_cpu)
            cells.append({"kind": "echo", "concurrency": c, "size": args.size, "requests": d.get("requests"),
                          "seconds": d.get("seconds"), "rps": d.get("rps", 0.0), "p50_us": d.get("p50_us"),
                          "p99_us": d.get("p99_us"), "errors": d.get("errors", 0),
                          "first_error": d.get("first_error") or d.get("failed")})
        d = _go_client(client, server, "bench-stream", None, args.stream_size, args, client_cpu)
        cells.append({"kind": "stream", "size": args.stream_size, "messages": d.get("messages"),
                      "seconds": d.get("seconds"), "msgs_per_s": d.get("msgs_per_s", 0.0),
                      "mb_per_s": d.get("mb_per_s", 0.0), "errors": 1 if d.get("failed") else 0,
                      "first_error": d.get("failed")})
        return {"impl": "go", "server_impl": srv.impl, "cells": cells}, None
    except Exception as exc:  # noqa: BLE001 - reported as this pair's problem
        return None, f"{type(exc).__name__}: {exc}"
    finally:
        srv.stop()


def _fmt(v: Optional[float], digits: int = 0) -> str:
    if v is None or v != v:
        return "-"
    return f"{v:,.{digits}f}"


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    if a is None or not b:
        return None
    return a / b


def orchestrate(args: argparse.Namespace) -> int:
    try:
        sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]
    except (AttributeError, ValueError):
        pass
    from interop import gopeer

    pairs = [p for p in args.pairs if p in ALL_PAIRS]
    notes: List[str] = []
    have_go = gopeer.go_available()
    if not have_go:
        dropped = [p for p in pairs if "go" in p]
        pairs = [p for p in pairs if "go" not in p]
        if dropped:
            notes.append(f"no Go toolchain: skipped {', '.join(dropped)}")
    elif any("go" in p for p in pairs):
        t0 = time.perf_counter()
        gopeer.build_peer()
        if time.perf_counter() - t0 > 1:
            print(f"built gridpeer in {time.perf_counter() - t0:.0f} s")

    print(f"interop benchmark: {args.size}-byte echo at concurrency {', '.join(map(str, args.concurrency))} and a "
          f"{args.stream_size}-byte one-way stream (out capacity 128), one loopback connection, client dials; "
          f"{args.warmup:g} s warm-up + {args.seconds:g} s per cell; CPU pinning: {args.pin}; "
          f"pairs: {', '.join(pairs)}")

    results: Dict[str, Dict[str, Any]] = {}
    flat: List[Dict[str, Any]] = []
    for pair in pairs:
        print(f"  running {_label(pair)} ...", flush=True)
        res, problem = _run_pair(pair, args)
        if res is None:
            msg = f"{pair}: failed: {problem}"
            print("  " + msg)
            notes.append(msg)
            continue
        results[pair] = res
        for cell in res["cells"]:
            cell = dict(cell, pair=pair, client_impl=res["impl"], server_impl=res.get("server_impl"))
            flat.append(cell)
            if cell.get("errors"):
                notes.append(f"{pair} {cell['kind']} c={cell.get('concurrency', '-')}: {cell['errors']} errors "
                             f"(first: {cell.get('first_error')})")

    def echo(pair: str, c: int) -> Optional[Dict[str, Any]]:
        for cell in results.get(pair, {}).get("cells", []):
            if cell["kind"] == "echo" and cell["concurrency"] == c:
                return cell
        return None

    def stream(pair: str) -> Optional[Dict[str, Any]]:
        for cell in results.get(pair, {}).get("cells", []):
            if cell["kind"] == "stream":
                return cell
        return None

    rows = []
    for pair in pairs:
        if pair not in results:
            continue
        impls = f"{results[pair]['impl']} -> {results[pair].get('server_impl')}"
        for c in args.concurrency:
            cell = echo(pair, c)
            if cell is None:
                continue
            ref = echo(REFERENCE, c)
            r = _ratio(cell.get("rps"), ref.get("rps") if ref else None)
            cell["ratio_to_go_go"] = r
            rows.append([_label(pair), impls, c, _fmt(cell["rps"]), _fmt(cell["p50_us"], 1),
                         _fmt(cell["p99_us"], 1), "-" if r is None or pair == REFERENCE else f"{r:.2f}x",
                         cell.get("errors", 0)])
    if rows:
        print_table(f"Request/response, {args.size}-byte echo, one connection",
                    ["pair (client -> server)", "impl", "conc", "req/s", "p50 us", "p99 us", "vs go->go", "errors"],
                    rows)
    srows = []
    for pair in pairs:
        cell = stream(pair)
        if cell is None:
            continue
        ref = stream(REFERENCE)
        r = _ratio(cell.get("msgs_per_s"), ref.get("msgs_per_s") if ref else None)
        cell["ratio_to_go_go"] = r
        srows.append([_label(pair), f"{results[pair]['impl']} -> {results[pair].get('server_impl')}",
                      _fmt(cell["msgs_per_s"]), _fmt(cell["mb_per_s"], 1),
                      "-" if r is None or pair == REFERENCE else f"{r:.2f}x", cell.get("errors", 0)])
    if srows:
        print_table(f"One-way stream, {args.stream_size}-byte items, out capacity 128",
                    ["pair (client -> server)", "impl", "msgs/s", "MB/s", "vs go->go", "errors"], srows)

    targets = []
    cmax = max(args.concurrency)

    def add(name: str, value: Optional[float], bound: float, why: str) -> None:
        targets.append({"target": name, "value": value, "op": ">=", "bound": bound, "unit": "x",
                        "ok": None if value is None else value >= bound, "missing": None if value is not None else why})

    g, ref = echo("py-py", cmax), echo(REFERENCE, cmax)
    add(f"c={cmax} Python<->Python (accel) req/s / Go<->Go req/s",
        _ratio(g.get("rps") if g else None, ref.get("rps") if ref else None), 0.5, "needs py-py and go-go")
    g, ref = stream("py-py"), stream(REFERENCE)
    add(f"one-way {args.stream_size}-byte stream Python<->Python (accel) msgs/s / Go<->Go msgs/s",
        _ratio(g.get("msgs_per_s") if g else None, ref.get("msgs_per_s") if ref else None), 0.5,
        "needs py-py and go-go")
    if results.get("py-py", {}).get("impl") not in (None, "cython"):
        for t in targets:
            t["note"] = f"'py-py' ran with implementation {results['py-py']['impl']!r}, not the compiled core"
    print("\nTargets:")
    for t in targets:
        if t["value"] is None:
            status, val = "n/a ", f"({t['missing']})"
        else:
            status, val = ("PASS" if t["ok"] else "FAIL"), f"{t['value']:.2f}x"
        extra = f"  [{t['note']}]" if t.get("note") else ""
        print(f"  {status}  {t['target']}: {val} (target >= {t['bound']:g}x){extra}")
    for n in notes:
        print(f"note: {n}")

    if args.json:
        write_json(args.json, {
            "benchmark": "interop",
            "config": {"pairs": pairs, "concurrency": args.concurrency, "seconds": args.seconds,
                       "warmup": args.warmup, "size": args.size, "stream_size": args.stream_size,
                       "pin": args.pin, "minio_version": gopeer.minio_version(),
                       "python": platform.python_version(), "platform": platform.platform(),
                       "cpus": os.cpu_count(), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
            "results": flat,
            "targets": targets,
            "notes": notes,
        })
        print(f"wrote {args.json}")
    return 0


# =========================================================================== CLI


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="grid interop benchmark: Python and Go grid nodes, all pairings")
    ap.add_argument("--pairs", type=_str_list, default=list(ALL_PAIRS),
                    help="comma list of py-py,py-py-pure,py-go,go-py,go-go (default: all)")
    ap.add_argument("--concurrency", type=_int_list, default=[1, 16, 128], help="comma list (default 1,16,128)")
    ap.add_argument("--seconds", type=float, default=3.0, help="measured seconds per cell (default 3)")
    ap.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per cell (default 1)")
    ap.add_argument("--size", type=int, default=512, help="echo payload bytes (default 512)")
    ap.add_argument("--stream-size", type=int, default=64, help="one-way stream item bytes (default 64)")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    ap.add_argument("--pin", choices=["none", "split", "same"], default="none",
                    help="CPU placement: none (default), split = server and client on different "
                         "CPUs, same = both on one CPU")
    ap.add_argument("--role", choices=["orchestrator", "client"], default="orchestrator", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--peer-port", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.role == "orchestrator":
        return orchestrate(args)
    import uvloop

    uvloop.run(role_client(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
