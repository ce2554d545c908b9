"""A grid node in its own process, for tests that kill, freeze or restart a
peer.  Prints ``ready`` once serving.  Handlers: 1 echo, 2 hold (never
answers until the process dies), 3 identity of this process (its pid),
4 this node's statistics as JSON (see :func:`node_stats`), stream 10
two-way echo (capacities 1/1), stream 11 one-way generator (the payload is
a decimal count of items ``b"<i>"`` to send; ``0`` sends until cancelled),
stream 12 two-way echo with capacities 8/8.

With ``--control`` the node also reads JSON commands from stdin, one per
line, and writes one JSON answer per command to stdout (carrying the
command's ``id``): a control channel that works across network namespaces,
where the test process cannot reach the node's address.  Commands:

``{"op": "stats"}``
    :func:`node_stats`.
``{"op": "wait", "host": H, "timeout": T}``
    wait until connected to H: ``{"ok": bool, "error": str|null}``.
``{"op": "calls", "host": H, "n": N, "timeout": T, "handler": 1}``
    N concurrent requests with unique payloads; counts of outcomes and the
    longest time any call took to finish (``max_elapsed``).
``{"op": "streams", "host": H, "n": N, "items": K, "timeout": T|null, "handler": 10}``
    N concurrent two-way streams each echoing K unique items; counts of
    outcomes and ``max_elapsed``.
``{"op": "load", "seconds": S, "concurrency": C, "streams": K, "timeout": T}``
    for S seconds, C request workers and K echo-stream workers per peer;
    returns counts, errors by type and a latency histogram (see ``_Hist``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
from typing import Any

import grid

#: Width of one latency histogram bucket: bucket i holds latencies in
#: [LAT_BASE**i, LAT_BASE**(i+1)) microseconds.
LAT_BASE = 1.05


def rss_bytes() -> int:
    """This process's resident set size in bytes (/proc/self/statm)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def node_stats(mgr: grid.Manager, extra_tasks: int = 0) -> dict[str, Any]:
    """``{"pid", "rss", "tasks", "conns": {host: {...}}}``: what a test needs to
    see that nothing leaked.  ``tasks`` counts the loop's tasks minus the
    node's own plumbing (``extra_tasks``: the main task, control tasks)."""
    conns = {}
    for c in mgr.stats().connections:
        conns[c.remote] = {
            "state": c.state.name,
            "outstanding_requests": c.outstanding_requests,
            "outstanding_streams": c.outstanding_streams,
            "send_queue_depth": c.send_queue_depth,
            "reconnects": c.reconnects,
            "last_error": c.last_error,
        }
    return {"pid": os.getpid(), "rss": rss_bytes(),
            "tasks": len(asyncio.all_tasks()) - extra_tasks, "conns": conns}


def _kind(exc: BaseException) -> str:
    if isinstance(exc, grid.Disconnected):
        return "disconnected"
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "timeout"
    return type(exc).__name__


class _Control:
    """The stdin/stdout command loop of ``--control``."""

    def __init__(self, mgr: grid.Manager) -> None:
        self.mgr = mgr
        self.busy = 0  # control tasks running now (excluded from "tasks")

    def _conn(self, host: str) -> grid.Connection:
        return self.mgr.connection(host)

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        pending: set[asyncio.Task[None]] = set()
        while True:
            line = await reader.readline()
            if not line:
                os._exit(0)  # the test process went away
            t = asyncio.ensure_future(self._one(json.loads(line)))
            pending.add(t)
            t.add_done_callback(pending.discard)

    async def _one(self, cmd: dict[str, Any]) -> None:
        self.busy += 1
        try:
            result = await getattr(self, "op_" + cmd["op"])(cmd)
        except Exception as exc:
            result = {"exception": f"{type(exc).__name__}: {exc}"}
        finally:
            self.busy -= 1
        result["id"] = cmd.get("id")
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()

    async def op_stats(self, cmd: dict[str, Any]) -> dict[str, Any]:
        # main task + the command loop + this command
        return node_stats(self.mgr, extra_tasks=2 + self.busy)

    async def op_wait(self, cmd: dict[str, Any]) -> dict[str, Any]:
        try:
            await self._conn(cmd["host"]).wait_for_connect(cmd.get("timeout", 10))
            return {"ok": True, "error": None}
        except Exception as exc:
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}

    async def op_calls(self, cmd: dict[str, Any]) -> dict[str, Any]:
        conn = self._conn(cmd["host"])
        n, timeout, handler = cmd["n"], cmd.get("timeout"), cmd.get("handler", 1)
        counts: dict[str, int] = {}
        worst = 0.0

        async def one(i: int) -> None:
            nonlocal worst
            payload = b"c%d" % i
            t0 = time.monotonic()
            try:
                r = await conn.request(handler, payload, timeout=timeout)
                k = "ok" if r == payload else "wrong"
            except Exception as exc:
                k = _kind(exc)
            worst = max(worst, time.monotonic() - t0)
            counts[k] = counts.get(k, 0) + 1

        await asyncio.gather(*(one(i) for i in range(n)))
        return {"counts": counts, "max_elapsed": worst}

    async def op_streams(self, cmd: dict[str, Any]) -> dict[str, Any]:
        conn = self._conn(cmd["host"])
        n, items, timeout = cmd["n"], cmd.get("items", 1), cmd.get("timeout")
        handler = cmd.get("handler", 10)
        counts: dict[str, int] = {}
        worst = 0.0

        async def one(i: int) -> None:
            nonlocal worst
            t0 = time.monotonic()
            try:
                st = await conn.new_stream(handler, None, timeout=timeout)
                ok = True
                for j in range(items):
                    item = b"s%d.%d" % (i, j)
                    await st.send(item)
                    ok = ok and await st.__anext__() == item
                await st.close_send()
                async for _ in st:
                    ok = False  # nothing past the echoes
                k = "ok" if ok else "wrong"
            except Exception as exc:
                k = _kind(exc)
            worst = max(worst, time.monotonic() - t0)
            counts[k] = counts.get(k, 0) + 1

        await asyncio.gather(*(one(i) for i in range(n)))
        return {"counts": counts, "max_elapsed": worst}

    async def op_load(self, cmd: dict[str, Any]) -> dict[str, Any]:
        end = time.monotonic() + cmd["seconds"]
        timeout = cmd.get("timeout", 10.0)
        peers = [self._conn(h) for h in self.mgr.hosts if h != self.mgr.local]
        hist: dict[int, int] = {}
        counts = {"requests": 0, "stream_items": 0, "wrong": 0}
        errors: dict[str, int] = {}

        def record(t0: float) -> None:
            us = max((time.monotonic() - t0) * 1e6, 1.0)
            b = int(math.log(us, LAT_BASE))
            hist[b] = hist.get(b, 0) + 1

        async def requester(conn: grid.Connection, w: int) -> None:
            i = 0
            while time.monotonic() < end:
                payload = b"%d.%d" % (w, i)
                i += 1
                t0 = time.monotonic()
                try:
                    r = await conn.request(1, payload, timeout=timeout)
                except Exception as exc:
                    errors[_kind(exc)] = errors.get(_kind(exc), 0) + 1
                    await asyncio.sleep(0.05)
                    continue
                record(t0)
                counts["requests"] += 1
                if r != payload:
                    counts["wrong"] += 1

        async def streamer(conn: grid.Connection, w: int) -> None:
            while time.monotonic() < end:
                try:
                    st = await conn.new_stream(12, None, timeout=timeout + cmd["seconds"])
                    async with st:
                        i = 0
                        while time.monotonic() < end:
                            item = b"%d:%d" % (w, i)
                            i += 1
                            await st.send(item)
                            if await st.__anext__() != item:
                                counts["wrong"] += 1
                            counts["stream_items"] += 1
                        await st.close_send()
                        async for _ in st:
                            counts["wrong"] += 1
                except Exception as exc:
                    errors[_kind(exc)] = errors.get(_kind(exc), 0) + 1
                    await asyncio.sleep(0.05)

        jobs = [requester(c, w) for c in peers for w in range(cmd.get("concurrency", 16))]
        jobs += [streamer(c, w) for c in peers for w in range(cmd.get("streams", 4))]
        t0 = time.monotonic()
        await asyncio.gather(*jobs)
        return {**counts, "errors": errors, "hist": hist, "elapsed": time.monotonic() - t0}


async def main(args: argparse.Namespace) -> None:
    hosts = args.hosts.split(",")
    mgr = grid.Manager(args.local, hosts, lambda: args.token,
                       lambda t: None if t == args.token else (_ for _ in ()).throw(
                           PermissionError("invalid token")),
                       ping_interval=args.ping_interval,
                       stream_ping_interval=args.stream_ping_interval,
                       **({"retry_base": args.retry_base} if args.retry_base else {}))
    never = asyncio.get_running_loop().create_future()

    async def hold(payload: bytes | None) -> bytes | None:
        await asyncio.shield(never)  # cancelling this task must not end main()
        return payload

    mgr.register_single(1, lambda p: p)
    mgr.register_single(2, hold)
    mgr.register_single(3, lambda p: str(os.getpid()).encode())
    mgr.register_single(4, lambda p: json.dumps(node_stats(mgr, extra_tasks=1)).encode())

    async def echo_stream(ctx: grid.StreamContext, payload: bytes | None, inbound: object,
                          out: grid.StreamOut) -> None:
        async for item in inbound:  # type: ignore[attr-defined]
            await out.send(item)

    async def gen_stream(ctx: grid.StreamContext, payload: bytes | None, inbound: object,
                         out: grid.StreamOut) -> None:
        n = int(payload or b"0")
        i = 0
        while n == 0 or i < n:
            await out.send(b"%d" % i)
            i += 1

    mgr.register_stream(10, grid.StreamHandler(echo_stream, in_capacity=1, out_capacity=1))
    mgr.register_stream(11, grid.StreamHandler(gen_stream, in_capacity=0, out_capacity=1))
    mgr.register_stream(12, grid.StreamHandler(echo_stream, in_capacity=8, out_capacity=8))
    await mgr.start()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    if args.control:
        await _Control(mgr).serve()
    await never


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--local", required=True)
    ap.add_argument("--hosts", required=True)
    ap.add_argument("--token", default="grid-test-token")
    ap.add_argument("--ping-interval", type=float, default=10.0)
    ap.add_argument("--stream-ping-interval", type=float, default=15.0)
    ap.add_argument("--retry-base", type=float, default=0.0,
                    help="the dialer's retry base in seconds (default: the library's)")
    ap.add_argument("--control", action="store_true",
                    help="read JSON commands from stdin (see the module docstring)")
    ap.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop",
                    help="the event loop to run on (default uvloop, via grid.run)")
    parsed = ap.parse_args()
    if parsed.loop == "asyncio":
        asyncio.run(main(parsed))
    else:
        grid.run(main(parsed))
