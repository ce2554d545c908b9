"""Logging, metrics and tracing over real loopback sockets: trace records on
both sides of single requests and streams, the tracer's effect on the inline
path, Prometheus exposition, OpenTelemetry spans, stats counters and log
rate limiting."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

import grid
from grid.handlers import handler_name
from grid.testing import TestGrid
from grid.trace import CallTrace

from support import ROOT, hosts_where_first_dials, run

SYNC, ASYNC, FAIL_SYNC, FAIL_ASYNC, SLOW, SUB, HOLD = 1, 2, 3, 4, 5, 6, 7
STREAM, STREAM_FAIL = 20, 21
UNKNOWN = 99


class Recorder:
    """A tracer that keeps every record and lets a test wait for a count."""

    def __init__(self) -> None:
        self.records: list[CallTrace] = []
        self._waiters: list[tuple[Callable[[list[CallTrace]], bool], asyncio.Future[None]]] = []

    def __call__(self, rec: CallTrace) -> None:
        self.records.append(rec)
        for pred, fut in list(self._waiters):
            if not fut.done() and pred(self.records):
                fut.set_result(None)

    async def wait(self, pred: Callable[[list[CallTrace]], bool], timeout: float = 5.0) -> None:
        if pred(self.records):
            return
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append((pred, fut))
        try:
            await asyncio.wait_for(fut, timeout)
        finally:
            self._waiters.remove((pred, fut))

    def find(self, side: str, handler_id: int) -> list[CallTrace]:
        return [r for r in self.records if r.side == side and r.handler_id == handler_id]


def _setup(m: grid.Manager) -> None:
    async def aecho(p: bytes | None) -> bytes | None:
        return p

    def fail_sync(p: bytes | None) -> bytes:
        raise grid.RemoteError("sync failed")

    async def fail_async(p: bytes | None) -> bytes:
        raise ValueError("async failed")

    async def slow(p: bytes | None) -> bytes:
        await asyncio.sleep(0.05)  # the work whose duration the trace must show
        return b"slow-reply"

    m.register_single(SYNC, lambda p: p)
    m.register_single(ASYNC, aecho)
    m.register_single(FAIL_SYNC, fail_sync)
    m.register_single(FAIL_ASYNC, fail_async)
    m.register_single(SLOW, slow)
    m.register_single(SUB, lambda p: b"sub:" + (p or b""), subroute="disk/1")

    async def echo_stream(ctx: grid.StreamContext, payload: bytes | None,
                          inbound: AsyncIterator[bytes] | None, out: grid.StreamOut) -> None:
        assert inbound is not None
        async for item in inbound:
            await out.send(item + b"!")

    async def fail_stream(ctx: grid.StreamContext, payload: bytes | None,
                          inbound: AsyncIterator[bytes] | None, out: grid.StreamOut) -> None:
        await out.send(b"one")
        raise grid.RemoteError("stream failed")

    m.register_stream(STREAM, grid.StreamHandler(echo_stream, in_capacity=2, out_capacity=2))
    m.register_stream(STREAM_FAIL, grid.StreamHandler(fail_stream, in_capacity=0,
                                                      out_capacity=2))


def _pair(rec: Recorder, side: str, hid: int) -> CallTrace:
    found = rec.find(side, hid)
    assert len(found) == 1, (side, hid, rec.records)
    return found[0]


# ------------------------------------------------------------------ trace records


def test_trace_single_requests_both_sides(loop_kind: str) -> None:
    async def main() -> None:
        async with TestGrid(2, setup=_setup) as g:
            rec = Recorder()
            for m in g.managers:
                m.add_tracer(rec)
            a, b = g.hosts
            conn = g.conn(0, 1)
            wall0 = time.time()
            assert await conn.request(SYNC, b"abc") == b"abc"
            assert await conn.request(ASYNC, b"abcd") == b"abcd"
            assert await conn.request(ASYNC, None) is None
            with pytest.raises(grid.RemoteError, match="sync failed"):
                await conn.request(FAIL_SYNC, b"12")
            with pytest.raises(grid.RemoteError, match="ValueError: async failed"):
                await conn.request(FAIL_ASYNC, b"123")
            assert await conn.request(SLOW, b"s") == b"slow-reply"
            assert await conn.subroute("disk", "1").request(SUB, b"xy") == b"sub:xy"
            with pytest.raises(grid.RemoteUnknownHandler):
                await conn.request(UNKNOWN, b"q")
            await rec.wait(lambda rs: len(rs) == 16)
            wall1 = time.time()

            for r in rec.records:
                assert (r.caller, r.callee, r.kind) == (a, b, "single"), r
                assert r.local == (a if r.side == "caller" else b)
                assert r.peer == (b if r.side == "caller" else a)
                assert wall0 - 0.01 <= r.start <= wall1 and 0 <= r.duration < 5, r
                assert r.mux_id > 0
            # The same call on both sides: same mux id; the callee's time is within the caller's.
            for hid in (SYNC, ASYNC, FAIL_SYNC, FAIL_ASYNC, SLOW, SUB, UNKNOWN):
                callers = rec.find("caller", hid)
                callees = rec.find("callee", hid)
                assert len(callers) == len(callees) >= 1, hid
                for c, s in zip(callers, callees):
                    assert c.mux_id == s.mux_id and c.request_bytes == s.request_bytes
                    assert c.response_bytes == s.response_bytes and c.error == s.error
                    assert s.duration <= c.duration + 0.001

            c = _pair(rec, "caller", SYNC)
            assert (c.handler_name, c.subroute, c.request_bytes, c.response_bytes, c.error) == \
                ("LockLock", None, 3, 3, None) and c.ok
            sizes = [(r.request_bytes, r.response_bytes) for r in rec.find("callee", ASYNC)]
            assert sizes == [(4, 4), (0, 0)]
            assert _pair(rec, "callee", FAIL_SYNC).error == "sync failed"
            r = _pair(rec, "callee", FAIL_ASYNC)
            assert (r.error, r.response_bytes, r.request_bytes) == \
                ("ValueError: async failed", 0, 3) and not r.ok
            for side in ("caller", "callee"):
                r = _pair(rec, side, SLOW)
                assert r.duration >= 0.045 and r.response_bytes == len(b"slow-reply"), r
            r = _pair(rec, "caller", SUB)
            assert (r.subroute, r.request_bytes, r.response_bytes) == ("disk/1", 2, 6)
            assert _pair(rec, "callee", SUB).subroute == "disk/1"
            r = _pair(rec, "callee", UNKNOWN)
            assert r.error == "Invalid Handler for type: HandlerID(99)"
            assert r.handler_name == "HandlerID(99)"

    run(loop_kind, main, timeout=30)


def test_trace_disconnected_call_and_tracer_before_start(loop_kind: str) -> None:
    """A tracer added before start() covers connections made later; a call
    that fails before it is sent (peer down) is traced on the caller."""

    async def main() -> None:
        rec = Recorder()

        def setup(m: grid.Manager) -> None:
            _setup(m)
            m.add_tracer(rec)

        async with TestGrid(2, setup=setup) as g:
            conn = g.conn(0, 1)
            assert await conn.request(SYNC, b"x") == b"x"
            await rec.wait(lambda rs: len(rs) == 2)
            assert {r.side for r in rec.records} == {"caller", "callee"}
            await g.managers[1].close()
            # The caller learns of the close from its socket, which may take
            # a loop turn or a few more: call once it knows the peer is down.
            deadline = asyncio.get_running_loop().time() + 10
            while conn.connected:
                assert asyncio.get_running_loop().time() < deadline, "drop not noticed"
                await asyncio.sleep(0.005)
            with pytest.raises(grid.Disconnected):
                await conn.request(SYNC, b"late")
            await rec.wait(lambda rs: len(rs) == 3)
            r = rec.records[-1]
            assert (r.side, r.error, r.mux_id, r.request_bytes) == \
                ("caller", "remote disconnected", 0, 4)

    run(loop_kind, main, timeout=30)


def test_trace_streams_both_sides(loop_kind: str) -> None:
    async def main() -> None:
        async with TestGrid(2, setup=_setup) as g:
            rec = Recorder()
            for m in g.managers:
                m.add_tracer(rec)
            a, b = g.hosts
            conn = g.conn(0, 1)
            st = await conn.new_stream(STREAM, b"init", timeout=10)
            replies = []
            for item in (b"a", b"bb", b"ccc"):
                await st.send(item)
                replies.append(await st.__anext__())
            await st.close_send()
            replies += [x async for x in st]
            assert replies == [b"a!", b"bb!", b"ccc!"]

            st2 = await conn.new_stream(STREAM_FAIL, None)
            got = []
            with pytest.raises(grid.RemoteError, match="stream failed"):
                async for x in st2:
                    got.append(x)
            assert got == [b"one"]
            with pytest.raises(grid.RemoteUnknownHandler):
                await conn.new_stream(UNKNOWN, b"zz", in_capacity=0, out_capacity=1)
            await rec.wait(lambda rs: len(rs) == 6)

            for r in rec.records:
                assert (r.caller, r.callee, r.kind) == (a, b, "stream"), r
                assert 0 <= r.duration < 5
            for side in ("caller", "callee"):
                r = _pair(rec, side, STREAM)
                assert (r.request_bytes, r.response_bytes, r.error) == (4 + 6, 9, None), r
                r = _pair(rec, side, STREAM_FAIL)
                assert (r.request_bytes, r.response_bytes, r.error) == (0, 3, "stream failed"), r
                r = _pair(rec, side, UNKNOWN)
                assert r.error is not None and r.error.startswith("Invalid Handler"), r
            assert _pair(rec, "caller", STREAM).mux_id == _pair(rec, "callee", STREAM).mux_id
            assert _pair(rec, "caller", STREAM).duration >= _pair(rec, "callee", STREAM).duration

    run(loop_kind, main, timeout=30)


def test_tracer_removal_restores_inline_path(loop_kind: str) -> None:
    async def main() -> None:
        async with TestGrid(2, setup=_setup) as g:
            caller, callee = g.conn(0, 1), g.conn(1, 0)
            registry = g.managers[1]._registry
            assert callee._core.singles is registry._single
            rec = Recorder()
            g.managers[1].add_tracer(rec)
            assert callee._core.singles == {} and callee._core.singles_sub == {}
            assert await caller.request(SYNC, b"1") == b"1"
            assert len(rec.records) == 1 and rec.records[0].side == "callee"
            g.managers[1].remove_tracer(rec)
            assert g.managers[1].tracers == ()
            assert callee._core.singles is registry._single
            assert callee._core.singles_sub is registry._single_sub
            assert callee._call == callee._caller.call and "_on_request" not in callee.__dict__
            assert await caller.request(SYNC, b"2") == b"2"
            assert await caller.request(ASYNC, b"3") == b"3"
            assert len(rec.records) == 1
            with pytest.raises(ValueError):
                g.managers[1].remove_tracer(rec)

    run(loop_kind, main, timeout=30)


def test_failing_tracer_is_logged_once(loop_kind: str, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async with TestGrid(2, setup=_setup) as g:
            calls = []

            def bad(rec: CallTrace) -> None:
                calls.append(rec)
                raise RuntimeError("tracer bug")

            good = Recorder()
            g.managers[0].add_tracer(bad)
            g.managers[0].add_tracer(good)
            conn = g.conn(0, 1)
            for i in range(5):
                assert await conn.request(SYNC, b"%d" % i) == b"%d" % i
            await good.wait(lambda rs: len(rs) == 5)
            assert len(calls) == 5

    with caplog.at_level(logging.ERROR, logger="grid.trace"):
        run(loop_kind, main, timeout=30)
    errors = [r for r in caplog.records if r.name == "grid.trace"]
    assert len(errors) == 1 and "tracer bug" in (errors[0].exc_text or "")


def test_import_grid_imports_no_optional_package() -> None:
    code = ("import sys, grid; "
            "bad = [m for m in ('grid.otel', 'grid.prometheus', 'opentelemetry', "
            "'prometheus_client') if m in sys.modules]; print(bad); assert not bad")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


# ------------------------------------------------------------------ stats


def test_stats_running_and_queued_handlers(loop_kind: str) -> None:
    async def main() -> None:
        release = asyncio.Event()

        def setup(m: grid.Manager) -> None:
            _setup(m)

            async def hold(p: bytes | None) -> bytes:
                await release.wait()
                return b"done"

            m.register_single(HOLD, hold)

        async with TestGrid(2, setup=setup, max_running_handlers=1) as g:
            conn = g.conn(0, 1)
            futs = [conn.request(HOLD, b"", timeout=10) for _ in range(3)]
            # A sync request behind them: once it is answered, all three have arrived.
            assert await conn.request(SYNC, b"x") == b"x"
            st = g.managers[1].stats()
            cs = st.connections[0]
            assert (cs.running_handlers, cs.queued_requests) == (1, 2)
            assert (st.running_handlers, st.queued_requests) == (1, 2)
            assert g.managers[0].stats().outstanding_requests == 3
            release.set()
            assert await asyncio.gather(*futs) == [b"done"] * 3
            cs = g.managers[1].stats().connections[0]
            assert (cs.running_handlers, cs.queued_requests) == (0, 0)

    run(loop_kind, main, timeout=30)


# ------------------------------------------------------------------ prometheus


def _samples(text: str) -> dict[str, list[Any]]:
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, list[Any]] = {}
    for fam in text_string_to_metric_families(text):
        out.setdefault(fam.name, []).extend(fam.samples)
    return out


def _value(samples: list[Any], name: str, **labels: str) -> float:
    hits = [s.value for s in samples if s.name == name
            and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(hits) == 1, (name, labels, hits)
    return float(hits[0])


def test_prometheus_exposition(loop_kind: str) -> None:
    prometheus_client = pytest.importorskip(
        "prometheus_client", reason="prometheus_client not installed (extra gridmux[prometheus])")
    import grid.prometheus as gp

    async def main() -> None:
        async with TestGrid(2, setup=_setup) as g:
            registry = prometheus_client.CollectorRegistry()
            collector = gp.register(*g.managers, registry=registry)
            a, b = g.hosts
            conn = g.conn(0, 1)
            for _ in range(3):
                assert await conn.request(SYNC, b"hello") == b"hello"
            with pytest.raises(grid.RemoteError):
                await conn.request(FAIL_SYNC, b"")
            st = await conn.new_stream(STREAM, b"", timeout=10)
            await st.send(b"abc")
            assert await st.__anext__() == b"abc!"
            await st.close_send()
            assert [x async for x in st] == []

            fams = _samples(prometheus_client.generate_latest(registry).decode())
            for name in ("grid_connection_up", "grid_connection_state",
                         "grid_connection_received_bytes", "grid_connection_sent_bytes",
                         "grid_connection_received_messages", "grid_connection_sent_messages",
                         "grid_connection_reconnects", "grid_connection_outstanding_requests",
                         "grid_connection_outstanding_streams",
                         "grid_connection_running_handlers", "grid_connection_queued_requests",
                         "grid_calls", "grid_call_errors", "grid_call_duration_seconds",
                         "grid_call_request_bytes", "grid_call_response_bytes"):
                assert name in fams, (name, sorted(fams))
            up = fams["grid_connection_up"]
            assert _value(up, "grid_connection_up", local=a, remote=b) == 1.0
            assert _value(up, "grid_connection_up", local=b, remote=a) == 1.0
            state = fams["grid_connection_state"]
            assert _value(state, "grid_connection_state", local=a, remote=b,
                          state="CONNECTED") == 1.0
            assert _value(state, "grid_connection_state", local=a, remote=b,
                          state="CONNECTION_ERROR") == 0.0
            sent = _value(fams["grid_connection_sent_bytes"], "grid_connection_sent_bytes_total",
                          local=a, remote=b)
            cs = g.managers[0].connection(b).stats()
            assert 0 < sent <= cs.bytes_out
            msgs = _value(fams["grid_connection_sent_messages"],
                          "grid_connection_sent_messages_total", local=a, remote=b)
            assert msgs >= 4
            lab = dict(local=a, remote=b, handler="LockLock", subroute="", side="caller",
                       kind="single")
            assert _value(fams["grid_calls"], "grid_calls_total", **lab) == 3
            assert _value(fams["grid_call_errors"], "grid_call_errors_total", **lab) == 0
            assert _value(fams["grid_call_request_bytes"], "grid_call_request_bytes_total",
                          **lab) == 15
            hist = fams["grid_call_duration_seconds"]
            assert _value(hist, "grid_call_duration_seconds_count", **lab) == 3
            assert _value(hist, "grid_call_duration_seconds_bucket", le="+Inf", **lab) == 3
            assert 0 < _value(hist, "grid_call_duration_seconds_sum", **lab) < 5
            lab_err = dict(lab, handler="LockUnlock")
            assert _value(fams["grid_call_errors"], "grid_call_errors_total", **lab_err) == 1
            srv = dict(local=b, remote=a, handler="LockLock", subroute="", side="callee",
                       kind="single")
            assert _value(fams["grid_calls"], "grid_calls_total", **srv) == 3
            stream_lab = dict(local=a, remote=b, handler=handler_name(STREAM), subroute="",
                              side="caller", kind="stream")
            assert _value(fams["grid_calls"], "grid_calls_total", **stream_lab) == 1
            assert _value(fams["grid_call_response_bytes"], "grid_call_response_bytes_total",
                          **stream_lab) == 4

            # /metrics over HTTP from the loop.
            server = await gp.start_metrics_server(0, registry=registry)
            port = server.sockets[0].getsockname()[1]
            try:
                async def get(path: str) -> tuple[bytes, bytes]:
                    r, w = await asyncio.open_connection("127.0.0.1", port)
                    w.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                    data = await asyncio.wait_for(r.read(), 5)
                    w.close()
                    head, _, body = data.partition(b"\r\n\r\n")
                    return head, body

                head, body = await get("/metrics")
                assert head.startswith(b"HTTP/1.1 200") and b"text/plain" in head
                assert b"grid_calls_total{" in body
                head, _ = await get("/other")
                assert head.startswith(b"HTTP/1.1 404")
            finally:
                server.close()
                await server.wait_closed()

            registry.unregister(collector)
            collector.close()
            assert all(m.tracers == () for m in g.managers)

    run(loop_kind, main, timeout=30)


# ------------------------------------------------------------------ opentelemetry


def test_otel_spans(loop_kind: str) -> None:
    pytest.importorskip("opentelemetry.sdk",
                        reason="opentelemetry-sdk not installed (extra gridmux[otel] + sdk)")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind, StatusCode

    import grid.otel

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    async def main() -> None:
        async with TestGrid(2, setup=_setup) as g:
            a, b = g.hosts
            rec = Recorder()
            g.managers[0].add_tracer(rec)
            spans = [grid.otel.instrument(m, provider) for m in g.managers]
            conn = g.conn(0, 1)
            outer_tracer = provider.get_tracer("test")
            with outer_tracer.start_as_current_span("outer") as outer:
                assert await conn.subroute("disk", "1").request(SUB, b"xy") == b"sub:xy"
            with pytest.raises(grid.RemoteError):
                await conn.request(FAIL_SYNC, b"e")
            await rec.wait(lambda rs: len(rs) == 2)
            for m, s in zip(g.managers, spans):
                m.remove_tracer(s)
            assert await conn.request(SYNC, b"not traced") == b"not traced"

            SUB_SPAN = f"grid/{handler_name(SUB)}/disk/1"
            got = {(s.name, s.kind): s for s in exporter.get_finished_spans() if s.name != "outer"}
            assert set(got) == {(SUB_SPAN, SpanKind.CLIENT),
                                (SUB_SPAN, SpanKind.SERVER),
                                ("grid/LockUnlock", SpanKind.CLIENT),
                                ("grid/LockUnlock", SpanKind.SERVER)}, set(got)
            client = got[(SUB_SPAN, SpanKind.CLIENT)]
            r = rec.find("caller", SUB)[0]
            assert client.start_time == int(r.start * 1e9)
            assert client.end_time == int(r.start * 1e9) + int(r.duration * 1e9)
            attrs = dict(client.attributes or {})
            assert attrs["rpc.system"] == "grid" and attrs["grid.handler_id"] == SUB
            assert attrs["grid.subroute"] == "disk/1" and attrs["grid.peer"] == b
            assert attrs["grid.request_bytes"] == 2 and attrs["grid.response_bytes"] == 6
            assert client.status.status_code is StatusCode.UNSET
            assert client.parent is not None
            assert client.parent.span_id == outer.get_span_context().span_id
            server = got[(SUB_SPAN, SpanKind.SERVER)]
            assert dict(server.attributes or {})["grid.peer"] == a
            failed = got[("grid/LockUnlock", SpanKind.CLIENT)]
            assert failed.status.status_code is StatusCode.ERROR
            assert failed.status.description == "sync failed"

    run(loop_kind, main, timeout=30)


# ------------------------------------------------------------------ logging


class _Counter(logging.Handler):
    """Counts records matching a text; resolves a future at a given count."""

    def __init__(self, text: str, want: int) -> None:
        super().__init__(logging.DEBUG)
        self.text = text
        self.want = want
        self.records: list[logging.LogRecord] = []
        self.reached: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.records.append(record)
            if len(self.records) >= self.want and not self.reached.done():
                self.reached.set_result(None)

    def warnings(self) -> list[logging.LogRecord]:
        return [r for r in self.records if r.levelno >= logging.WARNING]


async def _counting(texts: list[tuple[str, int]]) -> list[_Counter]:
    logger = logging.getLogger("grid")
    counters = [_Counter(t, n) for t, n in texts]
    for c in counters:
        logger.addHandler(c)
    return counters


def _uncount(counters: list[_Counter]) -> None:
    for c in counters:
        logging.getLogger("grid").removeHandler(c)


def test_dead_peer_does_not_flood_the_log(loop_kind: str) -> None:
    async def main() -> None:
        a, b = hosts_where_first_dials()  # nothing listens on b
        old = logging.getLogger("grid").level
        logging.getLogger("grid").setLevel(logging.DEBUG)
        [failed] = counters = await _counting([("connect failed", 30)])
        mgr = grid.Manager(a, [a, b], lambda: "t", retry_base=0.01)
        try:
            await mgr.start()
            await asyncio.wait_for(failed.reached, 10)
        finally:
            await mgr.close()
            _uncount(counters)
            logging.getLogger("grid").setLevel(old)
        assert len(failed.warnings()) == 1, [r.getMessage() for r in failed.warnings()]
        assert "retrying in" in failed.warnings()[0].getMessage()

    run(loop_kind, main, timeout=30)


def test_rejected_peer_logged_rate_limited_on_both_sides(loop_kind: str) -> None:
    async def main() -> None:
        a, b = hosts_where_first_dials()
        old = logging.getLogger("grid").level
        logging.getLogger("grid").setLevel(logging.DEBUG)
        dialer_log, acceptor_log = counters = await _counting(
            [("connect failed", 15), ("refused upgrade from", 15)])

        def check(token: str) -> None:
            if token != "good":
                raise PermissionError("invalid token")

        acceptor = grid.Manager(b, [a, b], lambda: "good", check)
        dialer = grid.Manager(a, [a, b], lambda: "bad", check, retry_base=0.01)
        try:
            await acceptor.start()
            await dialer.start()
            await asyncio.wait_for(asyncio.gather(dialer_log.reached, acceptor_log.reached), 15)
            conn = dialer.connection(b)
            assert "HTTP 403" in (conn.last_error or "")
        finally:
            await dialer.close()
            await acceptor.close()
            _uncount(counters)
            logging.getLogger("grid").setLevel(old)
        # A refusal is a configuration error: the first attempt already warns.
        assert dialer_log.records[0].levelno == logging.WARNING
        assert len(dialer_log.warnings()) == 1
        [warn] = acceptor_log.warnings()
        assert "HTTP 403" in warn.getMessage() and "invalid token" in warn.getMessage()

    run(loop_kind, main, timeout=40)


def test_missed_pongs_drop_is_a_warning(loop_kind: str) -> None:
    async def main() -> None:
        old = logging.getLogger("grid").level
        logging.getLogger("grid").setLevel(logging.DEBUG)
        [dropped] = counters = await _counting([("no pong for", 1)])
        try:
            async with TestGrid(2, ping_interval=0.1, retry_base=30.0) as g:
                silent = g.conn(1, 0)
                # The peer goes quiet: no pongs, no pings of its own.
                silent._keepalive.on_ping = lambda m: None
                silent._keepalive._tick = lambda: None
                await asyncio.wait_for(dropped.reached, 10)
        finally:
            _uncount(counters)
            logging.getLogger("grid").setLevel(old)
        assert dropped.records[0].levelno == logging.WARNING
        assert dropped.records[0].name == "grid.connection"

    run(loop_kind, main, timeout=30)
