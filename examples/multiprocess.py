"""One grid node per process: the pattern for a Python server that runs one
process per core.

Each worker process creates its *own* Manager after it starts (never one
inherited through fork), with its own host string and port; the host list is
the same in every process, so the workers form one grid exactly as separate
machines would.  Run it::

    python examples/multiprocess.py --workers 4

Every worker waits until it is connected to all the others, calls each of
them ``--calls`` times, and prints one JSON line with what it reached.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import sys
from typing import Any

import grid

WHOAMI = 1  # handler: replies with the pid of the process that serves it


async def worker(local: str, hosts: list[str], token: str, calls: int,
                 all_done: Any) -> dict[str, object]:
    mgr = grid.Manager(local, hosts, lambda: token,
                       lambda t: None if t == token else _reject())
    mgr.register_single(WHOAMI, lambda payload: str(os.getpid()).encode())
    await mgr.start()
    try:
        peers = [mgr.connection(h) for h in hosts if h != local]
        await asyncio.gather(*(c.wait_for_connect(timeout=30) for c in peers))
        ok, peer_pids = 0, set()
        for c in peers:
            replies = await asyncio.gather(*(c.request(WHOAMI) for _ in range(calls)))
            ok += len(replies)
            peer_pids.update(int(r or b"0") for r in replies)
        # Stay up until every other worker has finished calling us too.
        await asyncio.get_running_loop().run_in_executor(None, all_done.wait, 60)
        return {"local": local, "hosts": hosts, "pid": os.getpid(), "ok": ok,
                "reached": [c.remote for c in peers if c], "peer_pids": sorted(peer_pids)}
    finally:
        await mgr.close(grace=1.0)


def _reject() -> None:
    raise PermissionError("invalid token")


def _run(local: str, hosts: list[str], token: str, calls: int, all_done: Any,
         out: Any) -> None:
    try:
        result = grid.run(worker(local, hosts, token, calls, all_done))
    except BaseException as exc:
        all_done.abort()  # release the others at once
        out.put({"local": local, "error": repr(exc)})
        raise
    out.put(result)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--base-port", type=int, default=9101)
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--token", default="example-token")
    args = ap.parse_args()
    hosts = [f"http://127.0.0.1:{args.base_port + i}" for i in range(args.workers)]
    # "spawn": each worker starts a fresh interpreter, so nothing of the
    # parent's event loop or sockets leaks into it.
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    all_done = ctx.Barrier(len(hosts))
    procs = [ctx.Process(target=_run, args=(h, hosts, args.token, args.calls, all_done, out))
             for h in hosts]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
    for r in results:
        print(json.dumps(r))
    failed = [p.exitcode for p in procs if p.exitcode != 0]
    return 1 if failed or any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
