"""How the stream benchmark measures a cell: a counter of completed items
read around a fixed window, with the CPU time of the client, the server
process and the rest of the machine over the same window."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable, Dict, List, Optional

from _procs import _busy_cpu_seconds, _proc_cpu_seconds


class Window:
    """Counts completed items; ``measure`` reads the counter around the window."""

    def __init__(self, server_pid: int) -> None:
        self.count = 0
        self.stop = False
        self.errors = 0
        self.first_error: Optional[str] = None
        self._server_pid = server_pid

    def error(self, exc: BaseException) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = repr(exc)

    async def measure(self, seconds: float, warmup: float) -> Dict[str, Any]:
        await asyncio.sleep(warmup)
        c0, t0, p0 = self.count, time.perf_counter(), time.process_time()
        s0, b0 = _proc_cpu_seconds(self._server_pid), _busy_cpu_seconds()
        await asyncio.sleep(seconds)
        c1, t1, p1 = self.count, time.perf_counter(), time.process_time()
        s1, b1 = _proc_cpu_seconds(self._server_pid), _busy_cpu_seconds()
        self.stop = True
        dt = t1 - t0
        other = None
        if dt > 0 and None not in (s0, s1, b0, b1):
            # CPU the rest of the machine used meanwhile (other processes, softirq), in cores
            other = max(0.0, (b1 - b0) - (s1 - s0) - (p1 - p0)) / dt  # type: ignore[operator]
        return {
            "count": c1 - c0,
            "seconds": round(dt, 4),
            "rate": (c1 - c0) / dt if dt > 0 else 0.0,
            "client_cpu": (p1 - p0) / dt if dt > 0 else None,
            "server_cpu": (s1 - s0) / dt if dt > 0 and s0 is not None and s1 is not None else None,
            "other_cpu": other,
        }


async def _finish(tasks: List["asyncio.Future[Any]"], w: Window) -> None:
    """Stop the cell's tasks; an error that ended one before the window closed counts."""
    for t in tasks:
        if t.done() and not t.cancelled() and t.exception() is not None:
            w.error(t.exception())  # type: ignore[arg-type]
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _drain(it: Any, w: Window) -> None:
    async for _ in it:
        w.count += 1


async def cell_oneway(open_stream: Callable[[], Any], cancel: Callable[[Any], Any], seconds: float,
                      warmup: float, server_pid: int) -> Dict[str, Any]:
    w = Window(server_pid)
    stream = await open_stream()
    reader = asyncio.ensure_future(_drain(stream, w))
    res = await w.measure(seconds, warmup)
    await _finish([reader], w)
    r = cancel(stream)
    if asyncio.iscoroutine(r):
        await r
    res.update(errors=w.errors, first_error=w.first_error)
    return res


def _merge_slices(parts: List[Dict[str, Any]]) -> Dict[str, Any]:
    """One cell's result from the results of its time slices: counts and errors
    summed, rates and CPU shares over the summed measured time."""
    secs = sum(p["seconds"] for p in parts)
    res: Dict[str, Any] = {"count": sum(p["count"] for p in parts), "seconds": round(secs, 4),
                           "errors": sum(p["errors"] for p in parts),
                           "first_error": next((p["first_error"] for p in parts if p["first_error"]), None)}
    res["rate"] = res["count"] / secs if secs > 0 else 0.0
    for key in ("client_cpu", "server_cpu", "other_cpu"):
        shares = [p[key] for p in parts]
        res[key] = (None if secs <= 0 or None in shares
                    else sum(x * p["seconds"] for x, p in zip(shares, parts)) / secs)
    return res


async def cell_requests(call: Callable[[], Any], concurrency: int, seconds: float, warmup: float,
                        server_pid: int) -> Dict[str, Any]:
    w = Window(server_pid)

    async def worker() -> None:
        while not w.stop:
            try:
                await call()
            except Exception as exc:  # noqa: BLE001 - counted and reported
                w.error(exc)
                await asyncio.sleep(0.001)
                continue
            w.count += 1

    tasks = [asyncio.ensure_future(worker()) for _ in range(concurrency)]
    res = await w.measure(seconds, warmup)
    await asyncio.gather(*tasks, return_exceptions=True)
    res.update(errors=w.errors, first_error=w.first_error)
    return res
