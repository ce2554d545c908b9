"""What tracing costs: request throughput with no tracer vs a tracer on both
ends (grid.Manager.add_tracer), side by side.

One process, one uvloop, two managers on loopback (grid.testing.TestGrid):
so every request pays for both the caller and the callee, and the ratio is
the total CPU cost of tracing per call.  Rounds alternate off/on so that
drift (thermal, other processes) hits both alike; each row is one round.

Usage::

    python benchmarks/tracing.py [--concurrency 128] [--seconds 2] [--rounds 3]
        [--size 512] [--handler sync|async] [--tracer noop|list|prometheus]

``noop`` is a tracer that does nothing (the cost of building the records
and leaving the inline path); ``list`` appends each record to a list (cleared
per round); ``prometheus`` attaches grid.prometheus.GridCollector.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import grid  # noqa: E402
from grid.testing import TestGrid  # noqa: E402
from grid.trace import CallTrace  # noqa: E402

ECHO = 1


async def _measure(conn: Any, concurrency: int, seconds: float, payload: bytes) -> float:
    stop = False
    count = 0

    async def worker() -> None:
        nonlocal count
        while not stop:
            await conn.request(ECHO, payload, timeout=10)
            count += 1

    tasks = [asyncio.ensure_future(worker()) for _ in range(concurrency)]
    await asyncio.sleep(0.2)  # warm-up
    start_count, t0 = count, time.perf_counter()
    await asyncio.sleep(seconds)
    n, dt = count - start_count, time.perf_counter() - t0
    stop = True
    await asyncio.gather(*tasks)
    return n / dt


async def main(args: argparse.Namespace) -> None:
    async def aecho(p: bytes | None) -> bytes | None:
        return p

    def setup(m: grid.Manager) -> None:
        m.register_single(ECHO, (lambda p: p) if args.handler == "sync" else aecho)

    records: list[CallTrace] = []

    def noop(rec: CallTrace) -> None:
        pass

    async with TestGrid(2, setup=setup) as g:
        conn = g.conn(0, 1)
        payload = b"x" * args.size
        rows = []
        for r in range(args.rounds):
            off = await _measure(conn, args.concurrency, args.seconds, payload)
            detach: Any
            if args.tracer == "prometheus":
                import grid.prometheus as gprom

                collector = gprom.GridCollector(*g.managers)
                detach = collector.close
            else:
                fn = records.append if args.tracer == "list" else noop
                for m in g.managers:
                    m.add_tracer(fn)

                def detach() -> None:
                    for m in g.managers:
                        m.remove_tracer(fn)
            on = await _measure(conn, args.concurrency, args.seconds, payload)
            detach()
            records.clear()
            rows.append((off, on))
            print(f"round {r + 1}: off {off:10,.0f} req/s   on {on:10,.0f} req/s   "
                  f"on/off {on / off:6.3f}", flush=True)
        off_m = sorted(o for o, _ in rows)[len(rows) // 2]
        on_m = sorted(o for _, o in rows)[len(rows) // 2]
        print(f"median: off {off_m:,.0f} req/s, on {on_m:,.0f} req/s, on/off {on_m / off_m:.3f} "
              f"({grid.IMPLEMENTATION}, {args.handler} handler, tracer={args.tracer}, "
              f"c={args.concurrency})")


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--concurrency", type=int, default=128, help="workers (default 128)")
    p.add_argument("--seconds", type=float, default=2.0, help="measured seconds per cell")
    p.add_argument("--rounds", type=int, default=3, help="off/on rounds (default 3)")
    p.add_argument("--size", type=int, default=512, help="payload bytes (default 512)")
    p.add_argument("--handler", choices=("sync", "async"), default="sync")
    p.add_argument("--tracer", choices=("noop", "list", "prometheus"), default="noop")
    return p.parse_args()


if __name__ == "__main__":
    grid.run(main(_parse()))
