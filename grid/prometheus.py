"""Prometheus metrics for grid managers (the ``gridmux[prometheus]`` extra).

::

    import prometheus_client
    import grid.prometheus

    collector = grid.prometheus.register(manager)         # on prometheus_client.REGISTRY
    server = await grid.prometheus.start_metrics_server(9100, "0.0.0.0")
    ...
    server.close()
    collector.close()                                  # stop observing calls

Connection metrics are read from :meth:`grid.Manager.stats` at each scrape,
so they cost nothing between scrapes.  Per-handler metrics (call counts,
errors, latency histograms, bytes) are fed by a tracer the collector
installs on each manager (:meth:`grid.Manager.add_tracer`), which costs one
record per call while the collector is attached; pass ``calls=False`` to
export connection metrics only and keep the untraced fast path.

Every metric is labelled ``local`` (this node's host string) and ``remote``
(the peer's); per-handler metrics also carry ``handler`` (the Go name,
e.g. ``LockLock`` or ``HandlerID(200)``), ``subroute`` (``""`` for none),
``side`` (``caller`` for calls this node made, ``callee`` for calls it
served) and ``kind`` (``single`` or ``stream``).

Exported families (``grid_`` prefix by default):

==========================================  =======  ==========================================
name                                        type     meaning
==========================================  =======  ==========================================
``grid_connection_up``                      gauge    1 while connected
``grid_connection_state``                   gauge    1 for the current ``state`` label, else 0
``grid_connection_received_bytes_total``    counter  bytes read from the peer
``grid_connection_sent_bytes_total``        counter  bytes written to the peer
``grid_connection_received_messages_total`` counter  grid messages received
``grid_connection_sent_messages_total``     counter  grid messages sent
``grid_connection_reconnects_total``        counter  reconnects after the first connect
``grid_connection_ping_rtt_seconds``        gauge    last connection ping round trip
``grid_connection_outstanding_requests``    gauge    requests awaiting a reply
``grid_connection_outstanding_streams``     gauge    open streams, both directions
``grid_connection_send_queue_depth``        gauge    messages queued for the socket
``grid_connection_running_handlers``        gauge    async handlers running for the peer
``grid_connection_queued_requests``         gauge    requests waiting for a handler slot
``grid_calls_total``                        counter  finished calls
``grid_call_errors_total``                  counter  finished calls that failed
``grid_call_duration_seconds``              histo    call durations
``grid_call_request_bytes_total``           counter  payload bytes caller -> callee
``grid_call_response_bytes_total``          counter  payload bytes callee -> caller
==========================================  =======  ==========================================

:func:`start_metrics_server` serves ``/metrics`` from the event loop itself
(no thread, no web framework).  ``prometheus_client.start_http_server``
works too; it scrapes from its own thread.
"""

from __future__ import annotations

import asyncio
import math
from bisect import bisect_left
from collections.abc import Iterable, Sequence

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from grid.connection import State
from grid.manager import Manager
from grid.trace import CallTrace

__all__ = ["GridCollector", "register", "start_metrics_server", "DEFAULT_BUCKETS"]

#: Latency buckets (seconds) of ``grid_call_duration_seconds``: grid calls
#: take tens of microseconds on loopback and up to the 60 s default deadline.
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)

_CONN_LABELS = ["local", "remote"]
_CALL_LABELS = ["local", "remote", "handler", "subroute", "side", "kind"]
_CallKey = tuple[str, str, str, str, str, str]


class _CallStats:
    """Counters of one label set of the per-handler metrics."""

    __slots__ = ("calls", "errors", "seconds", "buckets", "request_bytes", "response_bytes")

    def __init__(self, n_buckets: int) -> None:
        self.calls = 0
        self.errors = 0
        self.seconds = 0.0
        self.buckets = [0] * (n_buckets + 1)  # per bucket, not cumulative; last is +Inf
        self.request_bytes = 0
        self.response_bytes = 0


class GridCollector(Collector):
    """A prometheus_client collector for one or more :class:`grid.Manager`.

    :param managers: the managers to export (more with :meth:`add_manager`).
    :param calls: also export per-handler metrics, fed by a tracer installed
        on every manager (see :mod:`grid.trace`).
    :param buckets: upper bounds (seconds) of the latency histogram.
    :param prefix: metric name prefix.

    Register it on a registry yourself (``registry.register(collector)``) or
    use :func:`register`.  :meth:`close` removes its tracers.
    """

    def __init__(self, *managers: Manager, calls: bool = True,
                 buckets: Sequence[float] = DEFAULT_BUCKETS, prefix: str = "grid") -> None:
        bounds = sorted(float(b) for b in buckets if not math.isinf(b))
        if not bounds:
            raise ValueError("buckets needs at least one finite bound")
        self._bounds = bounds
        self._prefix = prefix
        self._calls_enabled = calls
        self._managers: list[Manager] = []
        self._calls: dict[_CallKey, _CallStats] = {}
        for m in managers:
            self.add_manager(m)

    # -- managers

    def add_manager(self, manager: Manager) -> None:
        """Export ``manager`` too (and observe its calls when ``calls`` is on)."""
        if any(m is manager for m in self._managers):
            return
        self._managers.append(manager)
        if self._calls_enabled:
            manager.add_tracer(self.observe)

    def remove_manager(self, manager: Manager) -> None:
        """Stop exporting ``manager`` (its per-handler counters stay)."""
        for i, m in enumerate(self._managers):
            if m is manager:
                del self._managers[i]
                if self._calls_enabled and self.observe in manager.tracers:
                    manager.remove_tracer(self.observe)
                return

    def close(self) -> None:
        """Remove this collector's tracers from every manager."""
        for m in list(self._managers):
            self.remove_manager(m)

    # -- the tracer

    def observe(self, rec: CallTrace) -> None:
        """Count one finished call (the tracer installed on each manager)."""
        key = (rec.local, rec.peer, rec.handler_name, rec.subroute or "", rec.side, rec.kind)
        st = self._calls.get(key)
        if st is None:
            st = self._calls[key] = _CallStats(len(self._bounds))
        st.calls += 1
        if rec.error is not None:
            st.errors += 1
        st.seconds += rec.duration
        st.buckets[bisect_left(self._bounds, rec.duration)] += 1
        st.request_bytes += rec.request_bytes
        st.response_bytes += rec.response_bytes

    # -- prometheus_client

    def describe(self) -> Iterable[Metric]:
        """The metric families without samples (for the registry's name checks)."""
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        """Build every metric family from the managers' current statistics."""
        fams = self._families()
        by_name = {f.name: f for f in fams}
        p = self._prefix

        def g(name: str) -> GaugeMetricFamily:
            f = by_name[p + "_" + name]
            assert isinstance(f, GaugeMetricFamily)
            return f

        def c(name: str) -> CounterMetricFamily:
            f = by_name[p + "_" + name]
            assert isinstance(f, CounterMetricFamily)
            return f

        for manager in list(self._managers):
            stats = manager.stats()
            for cs in stats.connections:
                lv = [stats.local, cs.remote]
                g("connection_up").add_metric(lv, 1.0 if cs.state is State.CONNECTED else 0.0)
                for s in State:
                    g("connection_state").add_metric(lv + [s.name],
                                                     1.0 if cs.state is s else 0.0)
                c("connection_received_bytes").add_metric(lv, cs.bytes_in)
                c("connection_sent_bytes").add_metric(lv, cs.bytes_out)
                c("connection_received_messages").add_metric(lv, cs.messages_in)
                c("connection_sent_messages").add_metric(lv, cs.messages_out)
                c("connection_reconnects").add_metric(lv, cs.reconnects)
                if cs.last_ping_rtt is not None:
                    g("connection_ping_rtt_seconds").add_metric(lv, cs.last_ping_rtt)
                g("connection_outstanding_requests").add_metric(lv, cs.outstanding_requests)
                g("connection_outstanding_streams").add_metric(lv, cs.outstanding_streams)
                g("connection_send_queue_depth").add_metric(lv, cs.send_queue_depth)
                g("connection_running_handlers").add_metric(lv, cs.running_handlers)
                g("connection_queued_requests").add_metric(lv, cs.queued_requests)
        if self._calls_enabled:
            hist = by_name[p + "_call_duration_seconds"]
            assert isinstance(hist, HistogramMetricFamily)
            # A copy: a scrape from another thread must not see the dict change size.
            for key, st in list(self._calls.items()):
                lv = list(key)
                c("calls").add_metric(lv, st.calls)
                c("call_errors").add_metric(lv, st.errors)
                c("call_request_bytes").add_metric(lv, st.request_bytes)
                c("call_response_bytes").add_metric(lv, st.response_bytes)
                cumulative: list[tuple[str, float]] = []
                total = 0
                for bound, n in zip(self._bounds, st.buckets):
                    total += n
                    cumulative.append((repr(bound), float(total)))
                total += st.buckets[-1]
                cumulative.append(("+Inf", float(total)))
                hist.add_metric(lv, cumulative, st.seconds)
        return fams

    def _families(self) -> list[Metric]:
        p = self._prefix
        fams: list[Metric] = [
            GaugeMetricFamily(p + "_connection_up", "1 while the connection is up",
                              labels=_CONN_LABELS),
            GaugeMetricFamily(p + "_connection_state",
                              "1 for the connection's current state, 0 for the others",
                              labels=_CONN_LABELS + ["state"]),
            CounterMetricFamily(p + "_connection_received_bytes", "Bytes read from the peer",
                                labels=_CONN_LABELS),
            CounterMetricFamily(p + "_connection_sent_bytes", "Bytes written to the peer",
                                labels=_CONN_LABELS),
            CounterMetricFamily(p + "_connection_received_messages",
                                "Grid messages received from the peer", labels=_CONN_LABELS),
            CounterMetricFamily(p + "_connection_sent_messages",
                                "Grid messages sent to the peer", labels=_CONN_LABELS),
            CounterMetricFamily(p + "_connection_reconnects",
                                "Reconnects after the first connect", labels=_CONN_LABELS),
            GaugeMetricFamily(p + "_connection_ping_rtt_seconds",
                              "Round trip of the last connection ping", labels=_CONN_LABELS),
            GaugeMetricFamily(p + "_connection_outstanding_requests",
                              "Requests to the peer awaiting a reply", labels=_CONN_LABELS),
            GaugeMetricFamily(p + "_connection_outstanding_streams",
                              "Open streams with the peer, both directions",
                              labels=_CONN_LABELS),
            GaugeMetricFamily(p + "_connection_send_queue_depth",
                              "Messages queued towards the peer", labels=_CONN_LABELS),
            GaugeMetricFamily(p + "_connection_running_handlers",
                              "Async single-request handlers running for the peer",
                              labels=_CONN_LABELS),
            GaugeMetricFamily(p + "_connection_queued_requests",
                              "Requests from the peer waiting for a handler slot",
                              labels=_CONN_LABELS),
        ]
        if self._calls_enabled:
            fams += [
                CounterMetricFamily(p + "_calls", "Finished calls", labels=_CALL_LABELS),
                CounterMetricFamily(p + "_call_errors", "Finished calls that failed",
                                    labels=_CALL_LABELS),
                HistogramMetricFamily(p + "_call_duration_seconds", "Call duration",
                                      labels=_CALL_LABELS),
                CounterMetricFamily(p + "_call_request_bytes",
                                    "Payload bytes sent from caller to callee",
                                    labels=_CALL_LABELS),
                CounterMetricFamily(p + "_call_response_bytes",
                                    "Payload bytes sent from callee to caller",
                                    labels=_CALL_LABELS),
            ]
        return fams


def register(*managers: Manager, registry: CollectorRegistry | None = None,
             calls: bool = True, buckets: Sequence[float] = DEFAULT_BUCKETS,
             prefix: str = "grid") -> GridCollector:
    """Create a :class:`GridCollector` for ``managers`` and register it on
    ``registry`` (default: ``prometheus_client.REGISTRY``).  Undo with
    ``registry.unregister(collector)`` and ``collector.close()``."""
    collector = GridCollector(*managers, calls=calls, buckets=buckets, prefix=prefix)
    (REGISTRY if registry is None else registry).register(collector)
    return collector


async def start_metrics_server(port: int, host: str = "127.0.0.1", *,
                               registry: CollectorRegistry | None = None,
                               path: str = "/metrics") -> asyncio.AbstractServer:
    """Serve ``registry`` (default: ``prometheus_client.REGISTRY``) over
    HTTP at ``http://host:port/metrics`` from the running event loop.

    A deliberately small server: one request per connection, ``GET`` and
    ``HEAD`` of ``path`` only (404 otherwise), the exposition format chosen
    from the ``Accept`` header (text or OpenMetrics).  Scrapes run on the
    loop, so they see consistent statistics.  ``port=0`` picks a free port
    (read it from ``server.sockets[0].getsockname()``).  Close the returned
    server to stop.
    """
    reg = REGISTRY if registry is None else registry

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10.0)
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ConnectionError):
            writer.close()
            return
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        method = parts[0] if parts else ""
        target = parts[1].split("?", 1)[0] if len(parts) > 1 else ""
        accept = ""
        for ln in lines[1:]:
            name, _, value = ln.partition(":")
            if name.strip().lower() == "accept":
                accept = value.strip()
        if method in ("GET", "HEAD") and target == path:
            encoder, content_type = choose_encoder(accept)
            body = encoder(reg)
            status = "200 OK"
        else:
            body, content_type, status = b"not found\n", "text/plain; charset=utf-8", "404 Not Found"
        writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
                     f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode())
        if method != "HEAD":
            writer.write(body)
        try:
            await writer.drain()
        except ConnectionError:
            pass
        writer.close()

    return await asyncio.start_server(handle, host, port)

