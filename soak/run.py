"""Soak test: a 3-node grid (three processes on loopback) under steady load
for a long time (default 30 minutes), checking that memory and open muxes
do not grow without bound.

Each node is tests/peer_node.py with ``--control``.  The run is a sequence of
rounds of ``--interval`` seconds.  In each round every node calls both others
with ``--concurrency`` request workers per peer (512-byte-ish echo, unique
payloads checked on return) and keeps ``--streams`` two-way echo streams per
peer busy (capacity 8/8, every item checked).  Between rounds the load stops
for a moment: a quiescent checkpoint, where every node must report zero
outstanding requests, zero open streams and an empty send queue.

Every round prints one line::

    t=  12.0s  req/s  84,210  items/s  21,933  p50   410us p99  1.9ms p999  4.1ms
        rss 38/39/38 MiB  open-mux 0/0/0  errors 0

Pass/fail rule (exit code 0/1, verdict on the last line, ``soak: PASS`` or
``soak: FAIL: ...``):

- every reply and stream item correct, no call failed;
- at every quiescent checkpoint each node's open muxes (outstanding requests
  and streams over all its connections) return to 0 within 5 s;
- memory: for each node, its RSS at the end minus its RSS after the first
  20% of the run (the warm-up) is below ``--rss-bound`` MiB (default 32).
  A per-round leak large enough to matter over 30 minutes exceeds it;
  allocator noise at steady state stays far below it.

Usage::

    python soak/run.py                  # 30 minutes (make soak)
    python soak/run.py --minutes 0.5    # a short run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
NODE = ROOT / "tests" / "peer_node.py"
LAT_BASE = 1.05  # the histogram bucket ratio of tests/peer_node.py
TOKEN = "soak-token"


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Node:
    """One node process and its control channel."""

    def __init__(self, local: str, hosts: list[str], ping_interval: float) -> None:
        self.local = local
        self.hosts = hosts
        self.ping_interval = ping_interval
        self.proc: asyncio.subprocess.Process | None = None
        self._answers: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next = 0
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, str(NODE), "--local", self.local, "--hosts", ",".join(self.hosts),
            "--token", TOKEN, "--control", "--ping-interval", str(self.ping_interval),
            "--retry-base", "0.5", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, env=env)
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 30)
        if line.strip() != b"ready":
            raise RuntimeError(f"node {self.local} did not start: {line!r}")
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            answer = json.loads(line)
            fut = self._answers.pop(answer.get("id"), None)
            if fut is not None and not fut.done():
                fut.set_result(answer)
        for fut in self._answers.values():
            if not fut.done():
                fut.set_exception(ConnectionError(f"node {self.local} exited"))

    async def command(self, op: str, within: float = 60.0, **args: Any) -> dict[str, Any]:
        """One control command; its answer (RuntimeError if the node failed it)."""
        assert self.proc is not None and self.proc.stdin is not None
        self._next += 1
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._answers[self._next] = fut
        self.proc.stdin.write(json.dumps({"op": op, "id": self._next, **args}).encode() + b"\n")
        await self.proc.stdin.drain()
        answer = await asyncio.wait_for(fut, within)
        if "exception" in answer:
            raise RuntimeError(f"{self.local} {op}: {answer['exception']}")
        return answer

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)


def percentile(hist: dict[int, int], q: float) -> float:
    """The ``q`` quantile of a bucket histogram, in seconds (bucket upper edge)."""
    total = sum(hist.values())
    if total == 0:
        return float("nan")
    need = math.ceil(q * total)
    seen = 0
    for b in sorted(hist):
        seen += hist[b]
        if seen >= need:
            return float(LAT_BASE ** (b + 1) / 1e6)
    return float("nan")


def fmt_s(s: float) -> str:
    """Seconds as a short human figure (µs or ms)."""
    if math.isnan(s):
        return "-"
    return f"{s * 1e6:.0f}us" if s < 1e-3 else f"{s * 1e3:.1f}ms"


def open_muxes(stats: dict[str, Any]) -> int:
    """Outstanding requests + streams + queued messages over a node's connections."""
    return sum(c["outstanding_requests"] + c["outstanding_streams"] + c["send_queue_depth"]
               for c in stats["conns"].values())


async def soak(args: argparse.Namespace) -> int:
    hosts = [f"http://127.0.0.1:{free_port()}" for _ in range(3)]
    nodes = [Node(h, hosts, args.ping_interval) for h in hosts]
    failures: list[str] = []
    duration = args.minutes * 60
    try:
        await asyncio.gather(*(n.start() for n in nodes))
        for n in nodes:
            for h in hosts:
                if h != n.local:
                    r = await n.command("wait", host=h, timeout=20)
                    if not r["ok"]:
                        raise RuntimeError(f"{n.local} -> {h}: {r['error']}")
        print(f"soak: 3 nodes {', '.join(hosts)}; {args.minutes:g} min, rounds of "
              f"{args.interval:g} s, {args.concurrency} request workers and {args.streams} "
              f"streams per peer per node; RSS bound {args.rss_bound} MiB", flush=True)
        start = time.monotonic()
        rss_warm: list[int] | None = None
        rss_first: list[int] = []
        rss_now: list[int] = []
        totals = {"requests": 0, "stream_items": 0}
        hist_all: dict[int, int] = {}
        peak_open = 0
        while time.monotonic() - start < duration:
            left = duration - (time.monotonic() - start)
            seconds = min(args.interval, max(left, 0.5))
            results = await asyncio.gather(*(
                n.command("load", within=seconds + 60, seconds=seconds,
                          concurrency=args.concurrency, streams=args.streams, timeout=10.0)
                for n in nodes))
            hist: dict[int, int] = {}
            reqs = items = wrong = 0
            errors: dict[str, int] = {}
            wall = max(r["elapsed"] for r in results)
            for r in results:
                reqs += r["requests"]
                items += r["stream_items"]
                wrong += r["wrong"]
                for k, v in r["errors"].items():
                    errors[k] = errors.get(k, 0) + v
                for b, c in r["hist"].items():
                    hist[int(b)] = hist.get(int(b), 0) + c
                    hist_all[int(b)] = hist_all.get(int(b), 0) + c
            totals["requests"] += reqs
            totals["stream_items"] += items
            # Quiescent checkpoint: the load has stopped; muxes must drain.
            settle_end = time.monotonic() + 5
            while True:
                stats = await asyncio.gather(*(n.command("stats") for n in nodes))
                opened = [open_muxes(s) for s in stats]
                if not any(opened) or time.monotonic() > settle_end:
                    break
                await asyncio.sleep(0.05)
            peak_open = max(peak_open, *opened)
            rss_now = [s["rss"] for s in stats]
            if not rss_first:
                rss_first = rss_now
            t = time.monotonic() - start
            if rss_warm is None and t >= 0.2 * duration:
                rss_warm = rss_now
            print(f"t={t:7.1f}s  req/s {reqs / wall:9,.0f}  items/s {items / wall:8,.0f}  "
                  f"p50 {fmt_s(percentile(hist, 0.5)):>7} p99 {fmt_s(percentile(hist, 0.99)):>7} "
                  f"p999 {fmt_s(percentile(hist, 0.999)):>7}  "
                  f"rss {'/'.join(str(r >> 20) for r in rss_now)} MiB  "
                  f"open-mux {'/'.join(map(str, opened))}  errors {sum(errors.values()) + wrong}"
                  + (f" {errors}" if errors else ""), flush=True)
            if wrong:
                failures.append(f"{wrong} wrong replies at t={t:.0f}s")
            if errors:
                failures.append(f"failed calls at t={t:.0f}s: {errors}")
            if any(opened):
                failures.append(f"open muxes did not return to 0 at t={t:.0f}s: {opened}")
            if len(failures) > 20:
                break
        if rss_warm is None:
            rss_warm = rss_first
        growth = [(b - a) / 2**20 for a, b in zip(rss_warm, rss_now)]
        if any(g >= args.rss_bound for g in growth):
            failures.append(f"RSS grew {', '.join(f'{g:.1f}' for g in growth)} MiB after the "
                            f"warm-up (bound {args.rss_bound} MiB)")
        elapsed = time.monotonic() - start
        print(f"soak: {elapsed:.0f} s, {totals['requests']:,} requests "
              f"({totals['requests'] / elapsed:,.0f}/s), {totals['stream_items']:,} stream items; "
              f"latency p50 {fmt_s(percentile(hist_all, 0.5))} p99 "
              f"{fmt_s(percentile(hist_all, 0.99))} p999 {fmt_s(percentile(hist_all, 0.999))}; "
              f"RSS after warm-up {'/'.join(str(r >> 20) for r in rss_warm)} MiB, at the end "
              f"{'/'.join(str(r >> 20) for r in rss_now)} MiB (growth "
              f"{', '.join(f'{g:+.1f}' for g in growth)} MiB); open muxes at checkpoints: "
              f"max {peak_open}", flush=True)
    finally:
        await asyncio.gather(*(n.stop() for n in nodes))
    if failures:
        print("soak: FAIL: " + "; ".join(failures[:10]), flush=True)
        return 1
    print("soak: PASS", flush=True)
    return 0


def main() -> None:
    """Parse the options and run the soak; exit with its status."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0, help="length of the run (30)")
    ap.add_argument("--interval", type=float, default=5.0,
                    help="seconds per round, i.e. between report lines (5)")
    ap.add_argument("--concurrency", type=int, default=32,
                    help="request workers per peer on each node (32)")
    ap.add_argument("--streams", type=int, default=8,
                    help="two-way echo streams per peer on each node (8)")
    ap.add_argument("--rss-bound", type=float, default=32.0,
                    help="allowed RSS growth per node after the warm-up, MiB (32)")
    ap.add_argument("--ping-interval", type=float, default=2.0,
                    help="the nodes' keepalive interval, seconds (2)")
    sys.exit(asyncio.run(soak(ap.parse_args())))


if __name__ == "__main__":
    main()
