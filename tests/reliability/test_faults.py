"""Process faults: a peer killed (SIGKILL) or frozen (SIGSTOP) in the middle of
requests and streams in both directions, and a restart storm.

Every test runs on asyncio and uvloop (``loop_kind``) and, with the rest of
the suite, in both codec modes.  The peer is tests/peer_node.py in its own
process, driven over its ``--control`` channel so that it can also be the
*caller* of streams served here.  What is asserted, each time:

- every call and stream in flight ends, promptly, with ``grid.Disconnected``
  on the surviving side (never a hang, never another error);
- the surviving side releases everything: ``outstanding_requests`` and
  ``outstanding_streams`` return to 0, the stream handlers it was running
  for the peer are cancelled, and no asyncio task is left behind;
- after a restart (or SIGCONT) the same connection object works again.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable
from typing import Any

import grid
from support import ControlPeer, hosts_where_first_dials, run

ECHO, HOLD, PID = 1, 2, 3  # the peer's handlers (tests/peer_node.py)
ECHO_STREAM, GEN_STREAM = 10, 11

N_REQUESTS = 500  # requests held in flight by the peer at the moment of the fault
N_OUT_STREAMS = 60  # two-way streams this side opens to the peer
N_GEN_STREAMS = 20  # one-way (server -> caller) streams this side reads from
N_IN_STREAMS = 40  # streams the peer opens to this side


def _expect(token: str, want: str) -> None:
    if token != want:
        raise PermissionError("invalid token")


class Served:
    """Counts the stream handlers this node is running for the peer."""

    def __init__(self) -> None:
        self.active = 0
        self.cancelled = 0
        self.changed = asyncio.Event()

    async def echo(self, ctx: grid.StreamContext, payload: bytes | None,
                   inbound: AsyncIterator[bytes] | None, out: grid.StreamOut) -> None:
        self.active += 1
        self.changed.set()
        try:
            assert inbound is not None
            async for item in inbound:
                await out.send(item)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.active -= 1
            self.changed.set()

    async def wait_until(self, cond: Callable[[], bool], timeout: float) -> None:
        async def loop() -> None:
            while not cond():
                self.changed.clear()
                await self.changed.wait()
        await asyncio.wait_for(loop(), timeout)


async def wait_stats(conn: grid.Connection, cond: Callable[[grid.ConnectionStats], bool],
                     timeout: float) -> grid.ConnectionStats:
    """Poll ``conn.stats()`` (every 10 ms) until ``cond`` holds; TimeoutError after ``timeout``."""
    end = time.monotonic() + timeout
    while True:
        s = conn.stats()
        if cond(s):
            return s
        if time.monotonic() > end:
            raise TimeoutError(f"stats never matched: {s}")
        await asyncio.sleep(0.01)


def make_node(local: str, hosts: list[str], served: Served, **kw: Any) -> grid.Manager:
    """This side's node: echo, plus the peer's stream ids registered so that
    capacities match (10 two-way 1/1 served by ``served``, 11 one-way)."""
    m = grid.Manager(local, hosts, lambda: "grid-test-token",
                     lambda t: _expect(t, "grid-test-token"), retry_base=0.2, **kw)
    m.register_single(ECHO, lambda p: p)
    m.register_stream(ECHO_STREAM, grid.StreamHandler(served.echo, in_capacity=1,
                                                      out_capacity=1))

    async def unused(ctx: Any, payload: Any, inbound: Any, out: Any) -> None:
        raise grid.RemoteError("not served here")

    m.register_stream(GEN_STREAM, grid.StreamHandler(unused, in_capacity=0, out_capacity=1))
    return m


class Workload:
    """Requests and streams in flight between this node and the peer, in
    both directions, each proven live before the fault."""

    def __init__(self, conn: grid.Connection, peer: ControlPeer, local: str,
                 served: Served) -> None:
        self.conn = conn
        self.peer = peer
        self.local = local
        self.served = served
        self.requests: list[asyncio.Future[Any]] = []
        self.readers: list[asyncio.Task[str]] = []
        self.peer_streams: asyncio.Task[dict[str, Any]] | None = None

    async def start(self, timeout: float | None = None,
                    request_timeout: float | None = None) -> None:
        conn = self.conn
        self.requests = [conn.request(HOLD, b"%d" % i, timeout=request_timeout)  # type: ignore[misc]
                         for i in range(N_REQUESTS)]
        live = asyncio.Event()
        started = 0

        async def two_way(i: int) -> str:
            nonlocal started
            st = await conn.new_stream(ECHO_STREAM, None, timeout=timeout)
            await st.send(b"first %d" % i)
            assert await st.__anext__() == b"first %d" % i
            await st.send(b"in flight %d" % i)  # echoed into our buffer, never read
            started += 1
            if started == N_OUT_STREAMS + N_GEN_STREAMS:
                live.set()
            return await _drain(st)

        async def one_way(i: int) -> str:
            nonlocal started
            st = await conn.new_stream(GEN_STREAM, b"0", timeout=timeout)
            assert await st.__anext__() == b"0"
            started += 1
            if started == N_OUT_STREAMS + N_GEN_STREAMS:
                live.set()
            return await _drain(st)

        self.readers = [asyncio.ensure_future(two_way(i)) for i in range(N_OUT_STREAMS)]
        self.readers += [asyncio.ensure_future(one_way(i)) for i in range(N_GEN_STREAMS)]
        # The peer opens streams to us and keeps echoing through them.
        self.peer_streams = asyncio.ensure_future(self.peer.command(
            "streams", answer_within=120, host=self.local, n=N_IN_STREAMS, items=10**9))
        await asyncio.wait_for(live.wait(), 20)
        await self.served.wait_until(lambda: self.served.active == N_IN_STREAMS, 20)
        await wait_stats(conn, lambda s: s.outstanding_requests == N_REQUESTS and
                         s.outstanding_streams == N_OUT_STREAMS + N_GEN_STREAMS + N_IN_STREAMS,
                         20)

    async def outcomes(self) -> tuple[list[Any], list[Any]]:
        """(request outcomes, caller-stream outcomes) once all have ended."""
        reqs = await asyncio.gather(*self.requests, return_exceptions=True)
        streams = await asyncio.gather(*self.readers, return_exceptions=True)
        return reqs, streams


async def _drain(st: Any) -> str:
    """Read a stream until it ends; the way it ended, as a word."""
    try:
        async for _ in st:
            pass
    except grid.Disconnected:
        return "disconnected"
    return "eof"


def _tasks() -> int:
    """The loop's tasks, less a dial attempt in progress (the dialer's
    ``wait_for`` wraps each attempt in a task while the peer is away)."""
    return sum(1 for t in asyncio.all_tasks()
               if "connect_and_upgrade" not in t.get_coro().__qualname__)  # type: ignore[union-attr]


def _all_disconnected(reqs: list[Any], streams: list[Any]) -> None:
    kinds = {type(r).__name__ for r in reqs}
    assert all(isinstance(r, grid.Disconnected) for r in reqs), kinds
    assert streams == ["disconnected"] * len(streams), set(map(repr, streams))


async def _after_fault_clean(conn: grid.Connection, served: Served, baseline_tasks: int,
                             timeout: float) -> None:
    await served.wait_until(lambda: served.active == 0, timeout)
    s = conn.stats()
    assert s.outstanding_requests == 0 and s.outstanding_streams == 0, s
    assert s.send_queue_depth == 0, s
    assert _tasks() <= baseline_tasks, asyncio.all_tasks()


async def _works(conn: grid.Connection) -> None:
    assert await conn.request(ECHO, b"back", timeout=5) == b"back"
    st = await conn.new_stream(ECHO_STREAM, None, timeout=5)
    await st.send(b"again")
    assert await st.__anext__() == b"again"
    await st.close_send()
    assert [x async for x in st] == []
    await wait_stats(conn, lambda s: s.outstanding_streams == 0 and
                     s.outstanding_requests == 0, 5)


def test_sigkill_mid_requests_and_streams_then_restart(loop_kind: str) -> None:
    async def main() -> None:
        a, b = hosts_where_first_dials()
        served = Served()
        me = make_node(a, [a, b], served)
        await me.start()
        peer = ControlPeer(b, [a, b])
        work: Workload | None = None
        try:
            await peer.start()
            conn = me.connection(b)
            await conn.wait_for_connect(timeout=10)
            first_pid = await conn.request(PID)
            baseline_tasks = _tasks()
            work = Workload(conn, peer, a, served)
            await work.start()
            assert work.peer_streams is not None
            t0 = time.monotonic()
            await peer.kill()
            reqs, streams = await asyncio.wait_for(work.outcomes(), 5)
            # The socket closes with the process: everything fails at once.
            assert time.monotonic() - t0 < 2.0
            _all_disconnected(reqs, streams)
            await _after_fault_clean(conn, served, baseline_tasks + 1, 5)
            assert served.cancelled == N_IN_STREAMS
            assert conn.state is not grid.State.CONNECTED
            work.peer_streams.cancel()
            await asyncio.gather(work.peer_streams, return_exceptions=True)
            assert _tasks() <= baseline_tasks

            await peer.start()
            await conn.wait_for_connect(timeout=10)
            assert await conn.request(PID) != first_pid
            await _works(conn)
            assert conn.stats().reconnects == 1
        finally:
            await peer.kill()
            await me.close()
            if work is not None and work.peer_streams is not None:
                await asyncio.gather(work.peer_streams, return_exceptions=True)
    run(loop_kind, main, timeout=90)


REQUEST_DEADLINE = 4.0


def test_sigstop_detected_by_keepalive_during_requests_and_streams(loop_kind: str) -> None:
    interval = 0.2

    async def main() -> None:
        a, b = hosts_where_first_dials()
        served = Served()
        me = make_node(a, [a, b], served, ping_interval=interval)
        await me.start()
        peer = ControlPeer(b, [a, b], extra=["--ping-interval", str(interval)])
        work: Workload | None = None
        try:
            await peer.start()
            conn = me.connection(b)
            await conn.wait_for_connect(timeout=10)
            baseline_tasks = _tasks()
            peer_before = await peer.command("stats")
            work = Workload(conn, peer, a, served)
            # Deadlines beyond the keepalive bound, so that only keepalive can
            # end these calls; the requests' deadline is short because the
            # peer's HOLD handlers outlive the connection until it passes.
            await work.start(timeout=30, request_timeout=REQUEST_DEADLINE)
            assert work.peer_streams is not None
            peer.signal(signal.SIGSTOP)
            t0 = time.monotonic()
            reqs, streams = await asyncio.wait_for(work.outcomes(), 10)
            detected = time.monotonic() - t0
            # §9: no pong for 2 x ping_interval drops the connection; the check
            # runs every interval, so up to 3 intervals, plus scheduling slack.
            assert detected < 3 * interval + 0.6, detected
            assert "no pong" in (conn.last_error or "")
            _all_disconnected(reqs, streams)
            await _after_fault_clean(conn, served, baseline_tasks + 1, 5)

            peer.signal(signal.SIGCONT)
            # The thawed peer sees its side dead too: its streams to us end.
            result = await asyncio.wait_for(work.peer_streams, 20)
            assert result["counts"] == {"disconnected": N_IN_STREAMS}, result
            await conn.wait_for_connect(timeout=10)
            await _works(conn)
            # Nothing left behind in the peer either: no mux, no extra task.
            # Its async HOLD handlers are cancelled as soon as it sees the old
            # connection gone (their replies could never be delivered), well
            # before their own deadline.
            deadline = time.monotonic() + 3
            while True:
                st = await peer.command("stats")
                c = st["conns"][a]
                if (c["outstanding_requests"], c["outstanding_streams"]) == (0, 0) and \
                        st["tasks"] <= peer_before["tasks"]:
                    break
                assert time.monotonic() < deadline, st
                await asyncio.sleep(0.05)
            assert st["pid"] == peer_before["pid"]  # the same process, thawed
        finally:
            await peer.kill()
            await me.close()
            if work is not None and work.peer_streams is not None:
                await asyncio.gather(work.peer_streams, return_exceptions=True)
    run(loop_kind, main, timeout=90)


STORM_RESTARTS = 50
STORM_WARMUP = 5
#: Allowed size of what the storm allocated and still holds at its end
#: (tracemalloc, started at the end of the warm-up): the live connection, its
#: buffers and caches.  A leak of one connection's worth of state per restart
#: (the 20 requests + one stream in flight at each drop, the wire, its
#: buffers: tens of KiB) over 45 restarts would exceed it.
STORM_TRACED_BOUND = 1024 * 1024
#: Allowed growth of this process's RSS over the same span: a coarse check
#: for leaks outside the Python allocators (RSS moves by a few MiB with the
#: allocator's arenas alone, leak or not).
STORM_RSS_BOUND = 16 * 1024 * 1024
#: Allowed growth of the number of gc-tracked objects over the same span
#: (leaked futures, streams, wires and tasks are all gc-tracked).
STORM_OBJECTS_BOUND = 2000


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_restart_storm_caller_memory_flat(loop_kind: str) -> None:
    """A node closed and recreated on the same port 50 times while another
    keeps calling it: the caller's memory stays flat and its counters return
    to zero."""

    async def main() -> dict[str, int]:
        a, b = hosts_where_first_dials()
        caller = grid.Manager(a, [a, b], lambda: "t", lambda t: _expect(t, "t"),
                              retry_base=0.05)
        caller.register_single(ECHO, lambda p: p)

        async def echo(ctx: Any, payload: Any, inbound: Any, out: Any) -> None:
            async for item in inbound:
                await out.send(item)

        caller.register_stream(ECHO_STREAM, grid.StreamHandler(echo, in_capacity=1,
                                                               out_capacity=1))
        await caller.start()
        conn = caller.connection(b)
        outcomes: dict[str, int] = {}
        stop = False

        async def keep_calling() -> None:
            i = 0
            while not stop:
                batch = [conn.request(ECHO, b"%d" % (i + j), timeout=2) for j in range(20)]
                results = await asyncio.gather(*batch, return_exceptions=True)
                for j, r in enumerate(results):
                    k = ("ok" if r == b"%d" % (i + j) else "wrong") \
                        if not isinstance(r, BaseException) else type(r).__name__
                    outcomes[k] = outcomes.get(k, 0) + 1
                i += 20
                try:
                    st = await conn.new_stream(ECHO_STREAM, None, timeout=2)
                    await st.send(b"s%d" % i)
                    k = "stream_ok" if await st.__anext__() == b"s%d" % i else "wrong"
                    await st.close_send()
                    async for _ in st:
                        k = "wrong"
                except grid.Disconnected:
                    k = "stream_disconnected"
                outcomes[k] = outcomes.get(k, 0) + 1
                if not conn.connected:
                    try:
                        await conn.wait_for_connect(timeout=2)
                    except TimeoutError:
                        pass

        worker = asyncio.ensure_future(keep_calling())
        mem: dict[str, int] = {}
        try:
            for n in range(STORM_RESTARTS):
                node = grid.Manager(b, [a, b], lambda: "t", lambda t: _expect(t, "t"))
                node.register_single(ECHO, lambda p: p)
                node.register_stream(ECHO_STREAM, grid.StreamHandler(echo, in_capacity=1,
                                                                     out_capacity=1))
                await node.start()
                await conn.wait_for_connect(timeout=10)
                before = outcomes.get("ok", 0)
                # It served the caller in this life before going down again.
                while outcomes.get("ok", 0) < before + 40:
                    assert not worker.done()
                    await asyncio.sleep(0.005)
                await node.close()
                del node
                if n + 1 == STORM_WARMUP:
                    gc.collect()
                    mem["rss_warm"], mem["objects_warm"] = _rss(), len(gc.get_objects())
                    tracemalloc.start()
            stop = True
            await asyncio.wait_for(worker, 10)
            s = await wait_stats(conn, lambda s: s.outstanding_requests == 0 and
                                 s.outstanding_streams == 0, 5)
            assert s.send_queue_depth == 0
            assert s.reconnects == STORM_RESTARTS - 1
            gc.collect()
            mem["rss_end"], mem["objects_end"] = _rss(), len(gc.get_objects())
            mem["traced_end"] = tracemalloc.get_traced_memory()[0]
            assert outcomes.get("wrong", 0) == 0, outcomes
            assert set(outcomes) <= {"ok", "Disconnected", "stream_ok", "stream_disconnected"}, \
                outcomes
            assert outcomes["stream_ok"] >= STORM_RESTARTS
        finally:
            tracemalloc.stop()
            stop = True
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)
            await caller.close()
        print(f"restart storm: {outcomes} {mem}")
        return mem

    mem = run(loop_kind, main, timeout=120)
    assert mem["traced_end"] < STORM_TRACED_BOUND, mem
    assert mem["rss_end"] - mem["rss_warm"] < STORM_RSS_BOUND, mem
    assert mem["objects_end"] - mem["objects_warm"] < STORM_OBJECTS_BOUND, mem
