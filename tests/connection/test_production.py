"""Production behaviours (issue 8): bounded handler concurrency, bounded
streams under a flood, graceful shutdown under load, managers in forked
children, one manager per process, and peer isolation while a peer is frozen.
Every test runs on asyncio's loop and on uvloop, in both modes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import grid
from grid.errors import BUSY_TEXT, SHUTTING_DOWN_TEXT
from grid.testing import TestGrid, free_port, free_ports
from support import PeerProcess, hosts_where_first_dials, run

ROOT = Path(__file__).resolve().parents[2]
HOLD, QUICK, STREAM = 1, 2, 10


class Gate:
    """Handlers that block on an event, counting how many run at once."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.running = 0
        self.peak = 0
        self.started = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    async def hold(self, payload: bytes | None) -> bytes | None:
        self.running += 1
        self.started += 1
        self.peak = max(self.peak, self.running)
        for n, fut in self._waiters:
            if self.started >= n and not fut.done():
                fut.set_result(None)
        try:
            await self.release.wait()
        finally:
            self.running -= 1
        return payload

    async def wait_started(self, n: int, timeout: float = 10.0) -> None:
        """Wait until ``n`` handlers have started."""
        if self.started >= n:
            return
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append((n, fut))
        await asyncio.wait_for(fut, timeout)


def test_handler_cap_queues_then_rejects(loop_kind: str) -> None:
    async def main() -> None:
        gate = Gate()
        async with TestGrid(3, max_running_handlers=4, max_queued_requests=8) as g:
            b = g.managers[1]
            b.register_single(HOLD, gate.hold)

            async def quick(payload: bytes | None) -> bytes | None:
                return payload

            b.register_single(QUICK, quick)
            ab = g.conn(0, 1)
            # 4 run, 8 wait (one of them with a deadline that passes while it
            # waits), the other 8 are refused at once.
            calls = [ab.request(HOLD, b"%d" % i, timeout=30) for i in range(4)]
            calls += [ab.request(HOLD, b"%d" % i, timeout=30) for i in range(4, 11)]
            expiring = ab.request(HOLD, b"expires", timeout=0.3)
            refused = [ab.request(HOLD, b"%d" % i, timeout=30) for i in range(12, 20)]
            for fut in refused:
                with pytest.raises(grid.RemoteError) as ei:
                    await asyncio.wait_for(fut, 10)
                assert ei.value.message == BUSY_TEXT
            await gate.wait_started(4)
            assert gate.running == 4
            # Another peer's connection has its own slots: C -> B is served
            # while A's are all taken.
            assert await g.conn(2, 1).request(QUICK, b"c", timeout=5) == b"c"
            with pytest.raises(TimeoutError):
                await expiring
            # B counts that deadline from when it received the request, a
            # transit later than A sent it: release the running handlers
            # (which lets B take the queued ones) only once it has passed on
            # B's clock too, so that B finds it expired however long the
            # transit took on a loaded machine.
            backlog = b.connection(g.hosts[0])._serving.backlog
            due = [t + m.deadline_ms / 1000 for m, _e, t, _s in backlog
                   if bytes(m.payload) == b"expires"]
            assert len(due) == 1
            if due[0] > time.monotonic():
                await asyncio.sleep(due[0] - time.monotonic() + 0.005)
            gate.release.set()
            replies = await asyncio.gather(*calls)
            assert replies == [b"%d" % i for i in range(11)]
            assert gate.peak == 4
            assert gate.started == 11  # the expired one never ran
            assert ab.stats().outstanding_requests == 0
            assert b.connection(g.hosts[0]).stats().running_handlers == 0

    run(loop_kind, main)


def test_stream_flood_is_refused_past_max_streams(loop_kind: str) -> None:
    async def main() -> None:
        release = asyncio.Event()

        async def wait_then_end(ctx: grid.StreamContext, payload: bytes | None,
                                inbound: object, out: grid.StreamOut) -> None:
            await release.wait()
            await out.send(b"done")

        def setup(m: grid.Manager) -> None:
            m.register_stream(STREAM, grid.StreamHandler(wait_then_end, in_capacity=0))

        async with TestGrid(2, setup=setup, max_streams=5) as g:
            ab = g.conn(0, 1)
            ba = g.managers[1].connection(g.hosts[0])
            results = await asyncio.gather(*(ab.new_stream(STREAM, b"x") for _ in range(200)),
                                           return_exceptions=True)
            opened = [r for r in results if isinstance(r, grid.Stream)]
            refused = [r for r in results if not isinstance(r, grid.Stream)]
            assert len(opened) == 5 and len(refused) == 195
            for exc in refused:
                assert type(exc) is grid.RemoteError and exc.message == "too many open streams"
            assert ba.stats().outstanding_streams == 5
            assert len(ba._link.tasks) == 5  # no task was spawned for a refused stream
            release.set()
            for st in opened:
                assert [item async for item in st] == [b"done"]
            assert ab.stats().outstanding_streams == 0
            # Slots are free again.
            again = await ab.new_stream(STREAM, b"y")
            assert [item async for item in again] == [b"done"]

    run(loop_kind, main)


def test_graceful_close_lets_in_flight_work_finish(loop_kind: str) -> None:
    async def main() -> None:
        gate = Gate()

        async def items(ctx: grid.StreamContext, payload: bytes | None, inbound: object,
                        out: grid.StreamOut) -> None:
            await gate.release.wait()
            for i in range(5):
                await out.send(b"%d" % i)

        def setup(m: grid.Manager) -> None:
            m.register_single(HOLD, gate.hold)
            m.register_single(QUICK, lambda p: p)
            m.register_stream(STREAM, grid.StreamHandler(items, in_capacity=0, out_capacity=2))

        async with TestGrid(2, setup=setup) as g:
            b = g.managers[1]
            ab = g.conn(0, 1)
            calls = [ab.request(HOLD, b"%d" % i, timeout=30) for i in range(200)]
            streams = [await ab.new_stream(STREAM) for _ in range(3)]
            await gate.wait_started(200)
            closing = asyncio.create_task(b.close(grace=10))
            await asyncio.sleep(0)  # one step: the close task starts draining
            assert b.draining
            # New calls, sync or async, and new streams are refused readably.
            for hid in (QUICK, HOLD):
                with pytest.raises(grid.RemoteError) as ei:
                    await ab.request(hid, b"late", timeout=5)
                assert ei.value.message == SHUTTING_DOWN_TEXT
            with pytest.raises(grid.RemoteError, match=SHUTTING_DOWN_TEXT):
                await ab.new_stream(STREAM)
            assert not closing.done()
            t0 = time.monotonic()
            gate.release.set()
            assert await asyncio.gather(*calls) == [b"%d" % i for i in range(200)]
            for st in streams:
                assert [x async for x in st] == [b"0", b"1", b"2", b"3", b"4"]
            await asyncio.wait_for(closing, 5)
            assert time.monotonic() - t0 < 5  # it did not wait out the grace period
            with pytest.raises(grid.Disconnected):
                await ab.request(QUICK, b"after", timeout=5)

    run(loop_kind, main)


def test_graceful_close_disconnects_what_does_not_finish(loop_kind: str) -> None:
    async def main() -> None:
        gate = Gate()  # never released

        async def prompt(payload: bytes | None) -> bytes | None:
            await asyncio.sleep(0.05)  # some work that ends within the grace
            return payload

        def setup(m: grid.Manager) -> None:
            m.register_single(HOLD, gate.hold)
            m.register_single(QUICK, prompt)

        async with TestGrid(2, setup=setup) as g:
            b = g.managers[1]
            ab = g.conn(0, 1)
            ok = [ab.request(QUICK, b"%d" % i, timeout=30) for i in range(100)]
            hung = [ab.request(HOLD, b"%d" % i, timeout=30) for i in range(100)]
            await gate.wait_started(100)  # every request has reached B
            t0 = time.monotonic()
            await b.close(grace=0.5)
            took = time.monotonic() - t0
            assert 0.4 < took < 3.0
            assert await asyncio.gather(*ok) == [b"%d" % i for i in range(100)]
            results = await asyncio.gather(*hung, return_exceptions=True)
            assert all(isinstance(r, grid.Disconnected) for r in results)

    run(loop_kind, main)


# The test forks a process with threads on purpose (what a user who forks
# after starting a Manager does); Python 3.12+ warns about exactly that.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_manager_in_forked_child_fails_clearly(loop_kind: str) -> None:
    if not hasattr(os, "fork"):
        pytest.skip("no os.fork on this platform")

    async def main() -> None:
        async with TestGrid(2, setup=lambda m: m.register_single(QUICK, lambda p: p)) as g:
            a = g.managers[0]
            ab = g.conn(0, 1)
            assert await ab.request(QUICK, b"before") == b"before"
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child: report what each use raised, never return
                out: dict[str, str] = {}
                try:
                    fut = ab.request(QUICK, b"child")
                    out["request"] = type(fut.exception()).__name__  # type: ignore[attr-defined]
                    try:
                        a.register_single(99, lambda p: p)
                    except grid.GridError as exc:
                        out["register"] = type(exc).__name__
                        out["text"] = str(exc)
                    out["state"] = ab.state.name
                finally:
                    os.write(w, json.dumps(out).encode())
                    os._exit(0)
            os.close(w)
            data = b""
            loop = asyncio.get_running_loop()
            while True:
                chunk = await loop.run_in_executor(None, os.read, r, 65536)
                if not chunk:
                    break
                data += chunk
            os.close(r)
            await loop.run_in_executor(None, os.waitpid, pid, 0)
            report = json.loads(data)
            assert report["request"] == "UsedAfterFork"
            assert report["register"] == "UsedAfterFork"
            assert "create a new Manager in each process" in report["text"]
            assert report["state"] == "SHUTDOWN"
            # The parent's connection is untouched by the child's life and exit.
            assert await ab.request(QUICK, b"after") == b"after"
            assert ab.state is grid.State.CONNECTED and ab.stats().reconnects == 0

    run(loop_kind, main)


def test_one_manager_per_process_forms_one_grid() -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "multiprocess.py"), "--workers", "3",
         "--base-port", str(free_port()), "--calls", "200"],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    assert len(lines) == 3
    pids = {ln["pid"] for ln in lines}
    assert len(pids) == 3 and os.getpid() not in pids
    for ln in lines:
        # Each worker reached both others, and every reply came from the
        # process that owns that host.
        assert sorted(ln["reached"]) == sorted(h for h in ln["hosts"] if h != ln["local"])
        assert ln["ok"] == 200 * 2
        assert set(ln["peer_pids"]) == pids - {ln["pid"]}


@pytest.mark.slow
def test_frozen_peer_does_not_slow_healthy_peers(loop_kind: str) -> None:
    """While C is frozen (SIGSTOP) with A's writes to it backed up (its
    socket full, A's sender paused), A's calls to B keep completing: every
    one of a few hundred is sent and answered while C's backlog is still
    stuck, so none waited behind it.  A's calls to C fail within the
    keepalive bound, and A reconnects to C once it thaws."""

    async def main() -> None:
        hosts = sorted(f"http://127.0.0.1:{p}" for p in free_ports(3))
        me = grid.Manager(hosts[0], hosts, lambda: "grid-test-token", ping_interval=0.5,
                          retry_base=0.2)
        await me.start()
        peers = [PeerProcess(h, hosts, extra=["--ping-interval", "0.5", "--retry-base", "0.2"])
                 for h in hosts[1:]]
        try:
            for p in peers:
                await p.start()
            to_b, to_c = me.connection(hosts[1]), me.connection(hosts[2])
            await to_b.wait_for_connect(timeout=10)
            await to_c.wait_for_connect(timeout=10)
            for _ in range(50):  # warm up
                assert await to_b.request(1, b"x" * 512, timeout=5) == b"x" * 512

            def c_stuck() -> bool:
                """A's writes to C are paused and C's connection is up: its
                backlog is stuck behind the frozen peer."""
                return to_c.state is grid.State.CONNECTED and to_c._sender.paused

            peers[1].signal(signal.SIGSTOP)
            t0 = time.monotonic()
            # Calls to C's handler that never answers, with payloads that
            # fill the socket buffers towards C, until A pauses its writes.
            held: list[asyncio.Future[bytes | None]] = []
            failed_at: list[float] = []
            chunk = b"h" * (256 << 10)
            while not c_stuck():
                assert len(held) < 256, "A's writes to C never paused"  # 64 MiB
                fut = asyncio.ensure_future(to_c.request(2, chunk, timeout=30))
                fut.add_done_callback(lambda _f: failed_at.append(time.monotonic()))
                held.append(fut)
                await asyncio.sleep(0)  # one loop iteration: the request is written
            # 200 calls to B, from 8 workers at once, each sent and answered
            # while C's backlog stays stuck.  That lasts until the keepalive
            # drops C (which fails the held calls): a call that waited for
            # C's writes would only come back after that.
            answered_while_stuck = 0

            async def worker() -> None:
                nonlocal answered_while_stuck
                for _ in range(25):
                    assert await to_b.request(1, b"x" * 512, timeout=5) == b"x" * 512
                    if c_stuck():
                        answered_while_stuck += 1

            calls = asyncio.ensure_future(asyncio.gather(*(worker() for _ in range(8))))
            await asyncio.wait([calls, *held], return_when=asyncio.FIRST_COMPLETED)
            finished = calls.done()
            if not finished:
                calls.cancel()
            assert finished and c_stuck(), (
                f"C's backlog cleared with {answered_while_stuck} of A's 200 calls to B answered")
            calls.result()
            assert answered_while_stuck == 200
            results = await asyncio.gather(*held, return_exceptions=True)
            failed_after = max(failed_at) - t0
            assert all(isinstance(r, grid.Disconnected) for r in results), results
            # Keepalive bound: two silent ping intervals (+ one interval of slack).
            assert failed_after < 2.5, failed_after
            peers[1].signal(signal.SIGCONT)
            await to_c.wait_for_connect(timeout=10)
            assert await to_c.request(1, b"back", timeout=5) == b"back"
        finally:
            for p in peers:
                await p.kill()
            await me.close()

    run(loop_kind, main, timeout=90)


def test_bulk_message_neither_drops_keepalive_nor_starves_others(loop_kind: str) -> None:
    """A 16 MiB echo takes longer than the keepalive bound (2 x 20 ms): the
    pongs queue behind it, yet the connection stays up because bytes keep
    arriving; small calls on another connection keep being answered."""

    async def main() -> None:
        big = 16 << 20

        def setup(m: grid.Manager) -> None:
            m.register_single(QUICK, lambda p: p)

        async with TestGrid(3, setup=setup, ping_interval=0.02,
                            max_message_size=big + (1 << 20)) as g:
            ab, ac = g.conn(0, 1), g.conn(0, 2)
            done = asyncio.Event()
            small = 0

            async def smalls() -> None:
                nonlocal small
                while not done.is_set():
                    assert await ac.request(QUICK, b"x" * 512, timeout=10) == b"x" * 512
                    small += 1

            task = asyncio.create_task(smalls())
            payload = os.urandom(big)
            t0 = time.monotonic()
            for _ in range(2):
                assert await ab.request(QUICK, payload, timeout=30) == payload
            took = time.monotonic() - t0
            done.set()
            await task
            assert took > 2 * 0.02  # the transfer outlasted the keepalive bound
            assert ab.state is grid.State.CONNECTED and ab.stats().reconnects == 0
            assert small > 0

    run(loop_kind, main)
