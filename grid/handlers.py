"""Handler registration and the per-call context handlers can read.

A handler is registered under an id (1..255) and optionally a static
subroute; the callee finds it by the id, or by the 32-byte subroute id of
docs/protocol.md §6.2 when the request carries one.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Union

from grid._consts import HANDLER_NAMES
from grid._loglimit import LogLimit
from grid._impl import subroute_id
from grid.errors import HandlerAlreadyExists, RemoteError, RemoteUnknownHandler, UnknownHandler

__all__ = [
    "CallContext",
    "current_call",
    "SingleHandlerFn",
    "HandlerRegistry",
    "join_route",
    "handler_name",
    "check_handler_id",
    "inherit_deadline",
    "unknown_handler_text",
    "remember_route",
    "route_name",
    "remote_unknown_handler",
    "no_local_stream_text",
    "no_input_text",
]

log = logging.getLogger("grid.handlers")

#: A single-request handler: takes the payload (None when absent) and returns
#: the reply (None for an absent reply); may be a plain or an async function.
SingleHandlerFn = Callable[[Union[bytes, None]], Union[bytes, None, Awaitable[Union[bytes, None]]]]


class CallContext:
    """What a handler may want to know about the call it is serving.

    Read it with :func:`current_call` from inside the handler (sync or async).
    Attributes: ``caller`` (the caller's host string, as listed in
    ``hosts``), ``handler_id``, ``subroute`` (``"disk/1"`` or None),
    ``mux_id`` (the caller's id for this call) and ``deadline`` (absolute,
    in ``loop.time()`` seconds, or None when unbounded).
    """

    # A plain slotted class: one is built per call on the hot path.
    __slots__ = ("caller", "handler_id", "subroute", "mux_id", "deadline")

    def __init__(self, caller: str, handler_id: int, subroute: str | None, mux_id: int,
                 deadline: float | None) -> None:
        self.caller = caller
        self.handler_id = handler_id
        self.subroute = subroute
        self.mux_id = mux_id
        self.deadline = deadline

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(caller={self.caller!r}, handler_id={self.handler_id}, "
                f"subroute={self.subroute!r}, mux_id={self.mux_id}, deadline={self.deadline})")


_current: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "grid_current_call", default=None
)


def current_call() -> CallContext | None:
    """The :class:`CallContext` of the call being served, or None outside a handler."""
    ctx = _current.get()
    if type(ctx) is tuple:  # set by the core for an inline handler: built on demand
        return CallContext(*ctx)
    return ctx  # type: ignore[no-any-return]


def inherit_deadline(ctx: Any, timeout: float | None,
                     loop: asyncio.AbstractEventLoop) -> float | None:
    """The timeout for a call made while serving the call ``ctx``: the given
    one, or the served call's remaining time if that is shorter (or if no
    timeout was given)."""
    deadline: float | None = ctx[4] if type(ctx) is tuple else ctx.deadline
    if deadline is None:
        return timeout
    remaining = deadline - loop.time()
    if timeout is None or remaining < timeout:
        if remaining < 0.001:
            raise TimeoutError("grid: the deadline of the call being served has passed")
        return remaining
    return timeout


def join_route(segments: tuple[str, ...]) -> str:
    """Join subroute segments with ``/`` as Go does before hashing."""
    return "/".join(segments)


def handler_name(handler_id: int) -> str:
    """The name Go prints for a handler id (``HandlerID(N)`` when unnamed)."""
    return HANDLER_NAMES.get(handler_id, f"HandlerID({handler_id})")


def check_handler_id(handler_id: int) -> None:
    """Raise UnknownHandler unless ``handler_id`` is an int in 1..255."""
    if not isinstance(handler_id, int) or not 1 <= handler_id <= 255:
        raise UnknownHandler(f"handler id {handler_id!r} is outside 1..255")


class SingleEntry:
    """A registered single-request handler."""

    __slots__ = ("fn", "is_async", "handler_id", "route", "_slow_log")

    def __init__(self, fn: SingleHandlerFn, handler_id: int, route: str | None) -> None:
        self.fn = fn
        self.is_async = inspect.iscoroutinefunction(fn)
        self.handler_id = handler_id
        self.route = route
        self._slow_log: LogLimit | None = None

    def ran_slow(self, seconds: float) -> None:
        """The sync handler ran inline for ``seconds`` (SLOW_HANDLER or more),
        holding up the event loop: warn, at most once per LOG_INTERVAL."""
        if self._slow_log is None:
            self._slow_log = LogLimit()
        sub = f" (subroute {self.route!r})" if self.route is not None else ""
        self._slow_log.log(
            logging.WARNING, "grid: sync handler id %d%s ran %.3f s on the event loop, holding "
            "up every connection of this node; make it an `async def` (it then runs as a "
            "task) or move the blocking work to a thread (asyncio.to_thread)",
            self.handler_id, sub, seconds, logger=log)


class HandlerRegistry:
    """All handlers of one manager, looked up on every incoming call."""

    def __init__(self) -> None:
        self._single: dict[int, SingleEntry] = {}
        self._single_sub: dict[bytes, SingleEntry] = {}
        self._streams: dict[int, Any] = {}
        self._streams_sub: dict[bytes, Any] = {}

    def _add(self, by_id: dict[int, Any], by_sub: dict[bytes, Any], handler_id: int,
             entry: Any, route: str | None) -> None:
        """Register ``entry`` in one kind's tables; an id (or id + subroute)
        holds one handler of either kind."""
        check_handler_id(handler_id)
        if route is None:
            taken = handler_id in self._single or handler_id in self._streams
        else:
            sid = subroute_id(route, handler_id)
            taken = sid in self._single_sub or sid in self._streams_sub
        if taken:
            where = f" (subroute {route!r})" if route is not None else ""
            go = f", subroute:{route}" if route is not None else ""
            raise HandlerAlreadyExists(
                f"handler id {handler_id}{where} is already registered",
                f"handler {handler_name(handler_id)}{go}: mux handler already exists")
        if route is None:
            by_id[handler_id] = entry
        else:
            by_sub[sid] = entry
            # Go also answers on the all-zero subroute of the id (§6.2 quirk).
            by_sub[_zero_subroute(handler_id)] = entry

    def add_single(self, handler_id: int, fn: SingleHandlerFn, route: str | None) -> None:
        check_handler_id(handler_id)  # an id error comes before a callable error
        if not callable(fn):
            raise TypeError("handler must be callable")
        self._add(self._single, self._single_sub, handler_id,
                  SingleEntry(fn, handler_id, route), route)

    def single(self, handler_id: int, sub: bytes | None) -> SingleEntry | None:
        if sub is None:
            return self._single.get(handler_id)
        return self._single_sub.get(sub)

    def add_stream(self, handler_id: int, handler: Any, route: str | None) -> None:
        self._add(self._streams, self._streams_sub, handler_id, handler, route)

    def stream(self, handler_id: int, sub: bytes | None) -> Any:
        if sub is None:
            return self._streams.get(handler_id)
        return self._streams_sub.get(sub)

    def stream_for_caller(self, handler_id: int, route: str | None) -> Any:
        """The local registration a caller reads stream capacities from (§8.1)."""
        h = self._streams.get(handler_id)
        if h is None and route is not None:
            h = self._streams_sub.get(subroute_id(route, handler_id))
        if h is None:
            h = self._streams_sub.get(_zero_subroute(handler_id))
        return h


def _zero_subroute(handler_id: int) -> bytes:
    """The subroute id Go registers beside every subrouted handler (§6.2)."""
    return bytes((handler_id,)) + bytes(31)


def unknown_handler_text(handler_id: int, sub: bytes | None) -> str:
    """The MuxConnectError text Go sends for an unregistered handler (§7)."""
    if sub is not None:
        return "Invalid Handler for type: [" + " ".join(str(b) for b in sub) + "]"
    if handler_id == 0:
        return "Invalid Handler"
    return f"Invalid Handler for type: {handler_name(handler_id)}"


# Subroute names by the 31 route bytes of their subroute id, filled as
# callers address subroutes (bounded, since routes are static in practice):
# traces and unknown-handler errors name the route as the caller spelled it.
_ROUTE_NAMES: dict[bytes, str] = {}
_ROUTE_NAMES_MAX = 4096
_GO_SUB_PREFIX = "Invalid Handler for type: ["


def remember_route(sub: bytes, route: str) -> None:
    """Note that the subroute id ``sub`` (any handler id) names ``route``."""
    if len(_ROUTE_NAMES) < _ROUTE_NAMES_MAX:
        _ROUTE_NAMES[bytes(sub[1:])] = route


def route_name(sub: bytes) -> str:
    """The route of the subroute id ``sub``, or its hex if never addressed here."""
    return _ROUTE_NAMES.get(bytes(sub[1:]), bytes(sub).hex())


def remote_unknown_handler(text: str, handler_id: int, remote: str) -> RemoteError:
    """The caller's error for a MuxConnectError ``text`` from ``remote``: a
    :class:`RemoteUnknownHandler` naming the id and subroute when the text is
    Go's unknown-handler text, else a plain :class:`RemoteError` (a refusal
    such as ``too many open streams``)."""
    if not text.startswith("Invalid Handler"):
        return RemoteError(text)
    route = None
    if text.startswith(_GO_SUB_PREFIX) and text.endswith("]"):
        try:
            sub = bytes(int(b) for b in text[len(_GO_SUB_PREFIX):-1].split())
        except ValueError:
            sub = b""
        if len(sub) == 32:  # Go names the subroute id: [handler, 31 route bytes]
            handler_id, route = sub[0], route_name(sub)
    return RemoteUnknownHandler(text, handler_id, route, remote)


def no_local_stream_text(handler_id: int, route: str | None) -> str:
    """Why a caller cannot open a stream without capacities: it reads them
    from its own registration (as Go does), and there is none."""
    sub = f" (subroute {route!r})" if route else ""
    return (f"unknown mux handler: no stream handler id {handler_id}{sub} is registered on "
            "this node to read the stream's capacities from; register the StreamHandler on "
            "this node too, or pass in_capacity=/out_capacity= to new_stream")


def no_input_text(handler_id: int, handler: Any) -> str:
    """The refusal of a stream whose caller will send no input (its
    ConnectMux carries FlagEOF) to a handler that reads input."""
    sub = f" (subroute {handler.subroute!r})" if handler.subroute else ""
    return (f"grid: stream handler id {handler_id}{sub} reads input "
            f"(in_capacity={handler.in_capacity}) but the caller opened the stream with "
            f"in_capacity=0: register the same StreamHandler on the calling node, or pass "
            f"in_capacity={handler.in_capacity} to new_stream")
