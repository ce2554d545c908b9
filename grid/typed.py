"""Typed handlers: msgpack-serialised requests and responses over the
byte-level API (see :mod:`grid.types` for how types map to msgp)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar, Union

from grid.errors import ProtocolError, RemoteError
from grid.stream import Stream, StreamContext, StreamHandler, StreamOut
from grid.types import NoPayload, converter, decode_payload, encode_payload

if TYPE_CHECKING:
    from grid.connection import Connection, Subroute
    from grid.manager import Manager

__all__ = ["SingleHandler", "StreamTypeHandler", "TypedStream", "TypedStreamOut"]

Req = TypeVar("Req")
Resp = TypeVar("Resp")
P = TypeVar("P")


class SingleHandler(Generic[Req, Resp]):
    """A single-request handler id with typed request and response.

    ``ECHO = grid.SingleHandler(1, Point, Point)``; the server registers a
    function with ``ECHO.register(mgr, fn)``, the client calls
    ``await ECHO.call(conn, Point(1, 2))``.  A request that fails to decode
    on the callee reaches the caller as a RemoteError with the decoder's text.
    """

    def __init__(self, handler_id: int, request_type: Any, response_type: Any) -> None:
        self.handler_id = handler_id
        self.request_type = request_type
        self.response_type = response_type
        # Resolve the converters now so a bad type fails at definition time.
        for tp in (request_type, response_type):
            if tp is not NoPayload:
                converter(tp)

    def register(self, mgr: Manager,
                 fn: Callable[[Req], Union[Resp, Awaitable[Resp]]], *subroute: str) -> None:
        """Register ``fn(request) -> response`` (sync or async) on ``mgr``."""
        req_t, resp_t = self.request_type, self.response_type
        if asyncio.iscoroutinefunction(fn):
            async def async_handler(payload: bytes | None) -> bytes | None:
                req = _decode_request(req_t, payload)
                return encode_payload(resp_t, await fn(req))

            mgr.register_single(self.handler_id, async_handler, *subroute)
        else:
            def handler(payload: bytes | None) -> bytes | None:
                return encode_payload(resp_t, fn(_decode_request(req_t, payload)))

            mgr.register_single(self.handler_id, handler, *subroute)

    async def call(self, conn: Connection | Subroute, request: Req,
                   timeout: float | None = None) -> Resp:
        """Send ``request`` and return the decoded response."""
        reply = await conn.request(self.handler_id, encode_payload(self.request_type, request),
                                   timeout)
        return decode_payload(self.response_type, reply)  # type: ignore[no-any-return]


def _decode_request(tp: Any, payload: bytes | None) -> Any:
    try:
        return decode_payload(tp, payload)
    except ProtocolError as exc:
        raise RemoteError(str(exc)) from None


class TypedStreamOut(Generic[Resp]):
    """Where a typed stream handler sends its typed replies."""

    __slots__ = ("_out", "_enc")

    def __init__(self, out: StreamOut, response_type: Any) -> None:
        self._out = out
        self._enc = response_type

    async def send(self, item: Resp) -> None:
        """Serialise and send one reply; waits for credit."""
        await self._out.send(encode_payload(self._enc, item) or b"")


class _TypedInbound(Generic[Req]):
    def __init__(self, inbound: AsyncIterator[bytes], request_type: Any) -> None:
        self._in = inbound
        self._t = request_type

    def __aiter__(self) -> _TypedInbound[Req]:
        return self

    async def __anext__(self) -> Req:
        item = await self._in.__anext__()
        return _decode_request(self._t, item)  # type: ignore[no-any-return]


class TypedStream(Generic[Req, Resp]):
    """The caller's end of a typed stream: like :class:`grid.Stream`, with
    typed items."""

    def __init__(self, stream: Stream, request_type: Any, response_type: Any) -> None:
        self.stream = stream
        self._req = request_type
        self._resp = response_type

    async def send(self, item: Req) -> None:
        """Serialise and send one request item; waits for credit."""
        await self.stream.send(encode_payload(self._req, item) or b"")

    async def close_send(self) -> None:
        """No more request items (EOF)."""
        await self.stream.close_send()

    def cancel(self) -> None:
        """Cancel the stream and the remote handler."""
        self.stream.cancel()

    def __aiter__(self) -> TypedStream[Req, Resp]:
        return self

    async def __anext__(self) -> Resp:
        return decode_payload(self._resp, await self.stream.__anext__())  # type: ignore[no-any-return]

    async def results(self, callback: Callable[[Resp], Any]) -> None:
        """Call ``callback`` with every decoded reply; return at EOF."""
        async for item in self:
            r = callback(item)
            if asyncio.iscoroutine(r):
                await r


class StreamTypeHandler(Generic[P, Req, Resp]):
    """A stream handler id with typed initial payload, request items and
    response items, and the capacities both ends use.

    The registered function is ``async def fn(ctx, payload, inbound, out)``
    where ``inbound`` yields typed requests (None when ``in_capacity=0``) and
    ``out`` is a :class:`TypedStreamOut`.
    """

    def __init__(self, handler_id: int, *, payload_type: Any = NoPayload,
                 request_type: Any = NoPayload, response_type: Any = NoPayload,
                 in_capacity: int = 0, out_capacity: int = 1) -> None:
        self.handler_id = handler_id
        self.payload_type = payload_type
        self.request_type = request_type
        self.response_type = response_type
        self.in_capacity = in_capacity
        self.out_capacity = out_capacity

    def register(self, mgr: Manager, fn: Callable[..., Awaitable[None]], *subroute: str) -> None:
        """Register ``fn`` on ``mgr`` under this id and optional subroute."""
        pay_t, req_t, resp_t = self.payload_type, self.request_type, self.response_type

        async def handle(ctx: StreamContext, payload: bytes | None,
                         inbound: AsyncIterator[bytes] | None, out: StreamOut) -> None:
            typed_in: _TypedInbound[Any] | None = (
                None if inbound is None else _TypedInbound(inbound, req_t))
            await fn(ctx, _decode_request(pay_t, payload), typed_in, TypedStreamOut(out, resp_t))

        mgr.register_stream(self.handler_id, StreamHandler(
            handle, "/".join(subroute), self.in_capacity, self.out_capacity))

    async def call(self, conn: Connection | Subroute, payload: P = None,  # type: ignore[assignment]
                   timeout: float | None = None) -> TypedStream[Req, Resp]:
        """Open the stream with a typed initial payload."""
        raw = None if payload is None else encode_payload(self.payload_type, payload)
        s = await conn.new_stream(self.handler_id, raw, timeout, in_capacity=self.in_capacity,
                                  out_capacity=self.out_capacity)
        return TypedStream(s, self.request_type, self.response_type)
