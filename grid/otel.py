"""OpenTelemetry spans for grid calls (the ``gridmux[otel]`` extra).

::

    from opentelemetry import trace
    import grid.otel

    spans = grid.otel.instrument(manager)     # uses the global tracer provider
    ...
    manager.remove_tracer(spans)               # stop

Every :class:`grid.CallTrace` becomes one span, created when the call ends
with the start and end times of the record: kind ``CLIENT`` for the caller's
record, ``SERVER`` for the callee's, named ``grid/<handler name>`` (plus
``/<subroute>`` when there is one), status ``ERROR`` with the error text for
a failed call.  On the caller, a single request's span is a child of the
span that was current when the request was made; a stream's span and every
callee span have the span current where the call ended as parent (usually
none: the grid protocol carries no trace context between nodes).

Attributes: ``rpc.system`` = ``"grid"``, ``rpc.method`` (the handler
name), ``grid.handler_id``, ``grid.subroute`` (when set), ``grid.kind``
(``single``/``stream``), ``grid.side``, ``grid.caller``, ``grid.callee``,
``grid.peer`` (the other end's host string), ``grid.mux_id``,
``grid.request_bytes``, ``grid.response_bytes`` and ``grid.error`` (when
failed).

Only ``opentelemetry-api`` is needed at run time; configure an SDK
(``opentelemetry-sdk``) or any other implementation to export the spans.
``import grid`` never imports this module.
"""

from __future__ import annotations

from opentelemetry import trace as _ot
from opentelemetry.util.types import AttributeValue

from grid.manager import Manager
from grid.trace import CallTrace

__all__ = ["SpanTracer", "instrument"]

_SCOPE = "grid"


class SpanTracer:
    """A grid tracer (see :meth:`grid.Manager.add_tracer`) that turns each
    :class:`grid.CallTrace` into an OpenTelemetry span.

    :param tracer_provider: where spans go; default: the global provider.
    :param sides: which records become spans: ``("caller", "callee")``
        (default), or only one side (e.g. ``("caller",)`` when every node of
        the grid is instrumented and one span per call is enough).
    """

    def __init__(self, tracer_provider: _ot.TracerProvider | None = None, *,
                 sides: tuple[str, ...] = ("caller", "callee")) -> None:
        from grid import __version__

        self._tracer = _ot.get_tracer(_SCOPE, __version__, tracer_provider)
        self._sides = frozenset(sides)

    def __call__(self, rec: CallTrace) -> None:
        """Record ``rec`` as a span (called by the manager for every call)."""
        if rec.side not in self._sides:
            return
        name = f"grid/{rec.handler_name}"
        if rec.subroute:
            name += "/" + rec.subroute
        attrs: dict[str, AttributeValue] = {
            "rpc.system": "grid",
            "rpc.method": rec.handler_name,
            "grid.handler_id": rec.handler_id,
            "grid.kind": rec.kind,
            "grid.side": rec.side,
            "grid.caller": rec.caller,
            "grid.callee": rec.callee,
            "grid.peer": rec.peer,
            "grid.mux_id": rec.mux_id,
            "grid.request_bytes": rec.request_bytes,
            "grid.response_bytes": rec.response_bytes,
        }
        if rec.subroute is not None:
            attrs["grid.subroute"] = rec.subroute
        if rec.error is not None:
            attrs["grid.error"] = rec.error
        start_ns = int(rec.start * 1e9)
        span = self._tracer.start_span(
            name,
            kind=_ot.SpanKind.CLIENT if rec.side == "caller" else _ot.SpanKind.SERVER,
            attributes=attrs,
            start_time=start_ns,
        )
        if rec.error is not None:
            span.set_status(_ot.Status(_ot.StatusCode.ERROR, rec.error))
        span.end(end_time=start_ns + int(rec.duration * 1e9))


def instrument(manager: Manager, tracer_provider: _ot.TracerProvider | None = None, *,
               sides: tuple[str, ...] = ("caller", "callee")) -> SpanTracer:
    """Install a :class:`SpanTracer` on ``manager`` and return it; remove it
    with ``manager.remove_tracer(returned)``."""
    t = SpanTracer(tracer_provider, sides=sides)
    manager.add_tracer(t)
    return t
