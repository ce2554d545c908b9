"""Fairness, event-loop health and peer isolation (issue 8), each measured
side by side with its own baseline in one run.

Node A is this process; nodes B and C are child processes (this file run
with ``--node``).  A runs a loop-lag probe (a 1 ms sleep, overshoot recorded)
and keeps 512-byte echo requests going to B (same connection as the load)
and to C (another connection) while one of these runs:

* ``idle``      – nothing else (the baseline);
* ``bulk``      – 64 MiB requests echoed by B, back to back;
* ``firehose``  – a stream from B pushing 4 KiB items as fast as credit allows;
* ``frozen``    – C frozen with SIGSTOP while A has calls to it in flight
                  (only the A -> B column counts; isolation ratio).

Prints a table (p50/p99 of the small requests, loop lag p99/max, ratios to
the idle baseline) and writes JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from typing import Any, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import grid  # noqa: E402
from _procs import _ServerProc, _free_ports, _grid_url, _system_env  # noqa: E402
from _report import print_table, write_json  # noqa: E402

ECHO, HOLD, FIREHOSE = 1, 2, 20
TOKEN = "bench-token"
SMALL = b"s" * 512


def _manager(local: str, hosts: List[str], big: int) -> grid.Manager:
    return grid.Manager(local, hosts, lambda: TOKEN, max_message_size=big + (1 << 20),
                        ping_interval=0.5, retry_base=0.2)


async def node(local: str, hosts: List[str], big: int) -> None:
    """B or C: echo, a handler that never answers, and a 4 KiB firehose."""
    mgr = _manager(local, hosts, big)
    mgr.register_single(ECHO, lambda p: p)
    never = asyncio.get_running_loop().create_future()

    async def hold(payload: Optional[bytes]) -> Optional[bytes]:
        await asyncio.shield(never)  # cancelling this task must not end node()
        return payload

    async def firehose(ctx: grid.StreamContext, payload: Optional[bytes], inbound: Any,
                       out: grid.StreamOut) -> None:
        item = b"f" * 4096
        while True:
            await out.send(item)

    mgr.register_single(HOLD, hold)
    mgr.register_stream(FIREHOSE, grid.StreamHandler(firehose, in_capacity=0, out_capacity=128))
    await mgr.start()
    print("READY", flush=True)
    await never


def _pct(xs: List[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(len(s) * q))] if s else float("nan")


async def scenario(name: str, a: grid.Manager, hosts: List[str], peers: List[_ServerProc],
                   seconds: float, big: int) -> Dict[str, Any]:
    loop = asyncio.get_running_loop()
    to_b, to_c = a.connection(hosts[1]), a.connection(hosts[2])
    await to_b.wait_for_connect(30)
    await to_c.wait_for_connect(30)
    stop = asyncio.Event()
    lags: List[float] = []
    lat_b: List[float] = []
    lat_c: List[float] = []
    moved = [0]

    async def probe() -> None:
        while not stop.is_set():
            t = loop.time()
            await asyncio.sleep(0.001)
            lags.append(max(0.0, loop.time() - t - 0.001))

    async def smalls(conn: grid.Connection, out: List[float]) -> None:
        while not stop.is_set():
            t = time.perf_counter()
            try:
                await conn.request(ECHO, SMALL, timeout=30)
            except grid.Disconnected:
                if name != "frozen" or conn is to_b:
                    raise
                await conn.wait_for_connect(30)
                continue
            out.append(time.perf_counter() - t)

    async def bulk() -> None:
        payload = bytes(big)
        while not stop.is_set():
            r = await to_b.request(ECHO, payload, timeout=60)
            moved[0] += 2 * len(r or b"")

    async def firehose() -> None:
        st = await to_b.new_stream(FIREHOSE, in_capacity=0, out_capacity=128)
        async for item in st:
            moved[0] += len(item)
            if stop.is_set():
                st.cancel()
                break

    load: List[Any] = []
    if name == "bulk":
        load.append(bulk())
    elif name == "firehose":
        load.append(firehose())
    held: List[Any] = []
    if name == "frozen":
        held = [asyncio.ensure_future(to_c.request(HOLD, b"h", timeout=60)) for _ in range(50)]
        await asyncio.sleep(0.05)
        peers[1].proc.send_signal(signal.SIGSTOP)
    tasks = [asyncio.ensure_future(c) for c in
             [probe(), smalls(to_b, lat_b), *([] if name == "frozen" else [smalls(to_c, lat_c)]),
              *load]]
    t0 = time.perf_counter()
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.wait(tasks, timeout=120)
    elapsed = time.perf_counter() - t0
    failed_in = None
    if name == "frozen":
        res = await asyncio.gather(*held, return_exceptions=True)
        failed_in = sum(isinstance(r, grid.Disconnected) for r in res)
        peers[1].proc.send_signal(signal.SIGCONT)
        await to_c.wait_for_connect(30)
    for t in tasks:
        if t.done() and t.exception() is not None:
            raise t.exception()  # type: ignore[misc]
    return {
        "scenario": name,
        "b_p50_ms": _pct(lat_b, 0.5) * 1e3, "b_p99_ms": _pct(lat_b, 0.99) * 1e3,
        "c_p50_ms": _pct(lat_c, 0.5) * 1e3 if lat_c else None,
        "c_p99_ms": _pct(lat_c, 0.99) * 1e3 if lat_c else None,
        "lag_p99_ms": _pct(lags, 0.99) * 1e3, "lag_max_ms": max(lags) * 1e3,
        "load_MBps": moved[0] / elapsed / 1e6 if moved[0] else None,
        "frozen_calls_failed": failed_in,
    }


async def orchestrate(args: argparse.Namespace) -> int:
    ports = _free_ports(3)
    hosts = sorted(_grid_url(p) for p in ports)
    env = _system_env("grid-pure" if args.pure else "grid")
    peers = [_ServerProc([sys.executable, os.path.abspath(__file__), "--node", h,
                          "--hosts", ",".join(hosts), "--big", str(args.big)], env)
             for h in hosts[1:]]
    a = _manager(hosts[0], hosts, args.big)
    try:
        for p in peers:
            status, info = p.wait_ready()
            if status != "ready":
                print(f"peer failed: {info}", file=sys.stderr)
                return 1
        await a.start()
        rows = []
        for name in args.scenarios:
            rows.append(await scenario(name, a, hosts, peers, args.seconds, args.big))
    finally:
        await a.close()
        for p in peers:
            p.proc.send_signal(signal.SIGCONT)
            p.stop()
    base = rows[0]
    for r in rows:
        r["b_p99_ratio"] = r["b_p99_ms"] / base["b_p99_ms"]
        r["c_p99_ratio"] = (r["c_p99_ms"] / base["c_p99_ms"]) if r["c_p99_ms"] else None
    print_table(
        f"fairness ({'pure' if args.pure else 'accelerated'}; 512 B echo beside each load, "
        f"{args.big >> 20} MiB bulk; ratios to 'idle')",
        ["scenario", "A->B p50 ms", "A->B p99 ms", "x idle", "A->C p50 ms", "A->C p99 ms",
         "x idle", "lag p99 ms", "lag max ms", "load MB/s"],
        [[r["scenario"], r["b_p50_ms"], r["b_p99_ms"], r["b_p99_ratio"], r["c_p50_ms"],
          r["c_p99_ms"], r["c_p99_ratio"], r["lag_p99_ms"], r["lag_max_ms"], r["load_MBps"]]
         for r in rows],
    )
    if args.json:
        write_json(args.json, {"benchmark": "fairness", "pure": args.pure, "big": args.big,
                               "seconds": args.seconds, "rows": rows})
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenarios", default="idle,bulk,firehose,frozen",
                    type=lambda s: [x for x in s.split(",") if x])
    ap.add_argument("--seconds", type=float, default=4.0, help="seconds per scenario")
    ap.add_argument("--big", type=int, default=64 << 20, help="bulk message size (64 MiB)")
    ap.add_argument("--pure", action="store_true", help="run every node in pure mode")
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument("--node", help=argparse.SUPPRESS)
    ap.add_argument("--hosts", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.node:
        grid.run(node(args.node, args.hosts.split(","), args.big))
        return 0
    if args.scenarios[0] != "idle":
        args.scenarios.insert(0, "idle")
    return grid.run(orchestrate(args))  # type: ignore[no-any-return]


if __name__ == "__main__":
    sys.exit(main())
