"""Typed handlers: msgpack-serialised requests and responses over the
byte-level API (see :mod:`grid.types` for how types map to msgp)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar, Union

from grid._impl import TypedHandler
from grid._loglimit import LogLimit
from grid.errors import ProtocolError, RemoteError
from grid.stream import Stream, StreamContext, StreamHandler, StreamOut
from grid.types import NoPayload, payload_codec

if TYPE_CHECKING:
    from grid.connection import Connection, Subroute
    from grid.manager import Manager

__all__ = ["SingleHandler", "StreamTypeHandler", "TypedStream", "TypedStreamOut"]

Req = TypeVar("Req")
Resp = TypeVar("Resp")
P = TypeVar("P")

log = logging.getLogger("grid.connection")
# Payloads that do not decode are the sender's fault: logged, but a few per interval.
_decode_log = LogLimit(burst=3)


class SingleHandler(Generic[Req, Resp]):
    """A single-request handler id with typed request and response.

    ``ECHO = grid.SingleHandler(1, Point, Point)``; the server registers a
    function with ``ECHO.register(manager, handler)``, the client calls
    ``await ECHO.call(conn, Point(1, 2))``.  A request that fails to decode
    on the callee reaches the caller as a RemoteError with the decoder's text.
    """

    def __init__(self, handler_id: int, request_type: Any, response_type: Any) -> None:
        self.handler_id = handler_id
        self.request_type = request_type
        self.response_type = response_type

    def __setattr__(self, name: str, value: Any) -> None:
        # The codecs are resolved once per type, here: a bad type fails at
        # definition time, and a call is one encode and one decode call.
        object.__setattr__(self, name, value)
        if name == "request_type":
            self._enc_req, self._dec_req = payload_codec(value)
        elif name == "response_type":
            self._enc_resp, self._dec_resp = payload_codec(value)

    def register(self, manager: Manager,
                 handler: Callable[[Req], Union[Resp, Awaitable[Resp]]], *,
                 subroute: str = "") -> None:
        """Register ``handler(request) -> response`` (sync or async) on
        ``manager``, optionally under a static ``subroute`` such as ``"disk/1"``."""
        dec, enc = self._dec_req, self._enc_resp
        fn = handler
        if asyncio.iscoroutinefunction(fn):
            async def async_handler(payload: bytes | None) -> bytes | None:
                return enc(await fn(_decode_request(dec, payload)))

            manager.register_single(self.handler_id, async_handler, subroute=subroute)
        else:
            # A plain function stays a plain function that the manager runs
            # inline, like a byte-level handler; with the compiled core the
            # decode, call and encode happen in one C call.
            manager.register_single(self.handler_id, TypedHandler(fn, dec, enc, _decode_failed),
                                    subroute=subroute)

    async def call(self, conn: Connection | Subroute, request: Req,
                   timeout: float | None = None) -> Resp:
        """Send ``request`` and return the decoded response."""
        return self._dec_resp(  # type: ignore[no-any-return]
            await conn.request(self.handler_id, self._enc_req(request), timeout))


def _decode_failed(exc: ProtocolError) -> RemoteError:
    """Log a payload that did not decode (a few per interval); the error the
    caller receives for it."""
    _decode_log.log(logging.WARNING, "grid: a typed payload did not decode: %s", exc, logger=log)
    return RemoteError(str(exc))


def _decode_request(decode: Callable[[bytes | None], Any], payload: bytes | None) -> Any:
    try:
        return decode(payload)
    except ProtocolError as exc:
        raise _decode_failed(exc) from None


class TypedStreamOut(Generic[Resp]):
    """Where a typed stream handler sends its typed replies."""

    __slots__ = ("_out", "_enc")

    def __init__(self, out: StreamOut, response_type: Any) -> None:
        self._out = out
        self._enc = payload_codec(response_type)[0]

    async def send(self, item: Resp) -> None:
        """Serialise and send one reply; waits for credit."""
        await self._out.send(self._enc(item) or b"")


class _TypedInbound(Generic[Req]):
    def __init__(self, inbound: AsyncIterator[bytes], request_type: Any) -> None:
        self._next = inbound.__anext__
        self._dec = payload_codec(request_type)[1]

    def __aiter__(self) -> _TypedInbound[Req]:
        return self

    async def __anext__(self) -> Req:
        return _decode_request(self._dec, await self._next())  # type: ignore[no-any-return]


class TypedStream(Generic[Req, Resp]):
    """The caller's end of a typed stream: like :class:`grid.Stream`, with
    typed items."""

    def __init__(self, stream: Stream, request_type: Any, response_type: Any) -> None:
        self.stream = stream
        self._enc = payload_codec(request_type)[0]
        self._dec = payload_codec(response_type)[1]

    async def send(self, item: Req) -> None:
        """Serialise and send one request item; waits for credit."""
        await self.stream.send(self._enc(item) or b"")

    async def close_send(self) -> None:
        """No more request items (EOF)."""
        await self.stream.close_send()

    def cancel(self) -> None:
        """Cancel the stream and the remote handler."""
        self.stream.cancel()

    def __aiter__(self) -> TypedStream[Req, Resp]:
        return self

    async def __anext__(self) -> Resp:
        return self._dec(await self.stream.__anext__())  # type: ignore[no-any-return]

    async def results(self, callback: Callable[[Resp], Any]) -> None:
        """Call ``callback`` with every decoded reply; return at EOF."""
        async for item in self:
            r = callback(item)
            if asyncio.iscoroutine(r):
                await r


class StreamTypeHandler(Generic[P, Req, Resp]):
    """A stream handler id with typed initial payload, request items and
    response items, and the capacities both ends use.

    The registered function is ``async def handler(ctx, payload, inbound, out)``
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

    def register(self, manager: Manager, handler: Callable[..., Awaitable[None]], *,
                 subroute: str = "") -> None:
        """Register ``handler`` on ``manager`` under this id and an optional
        static ``subroute`` such as ``"disk/1"``."""
        fn = handler
        pay_t, req_t, resp_t = self.payload_type, self.request_type, self.response_type
        dec_pay = payload_codec(pay_t)[1]
        payload_codec(req_t)  # a bad type fails here, not in the first stream
        payload_codec(resp_t)

        async def handle(ctx: StreamContext, payload: bytes | None,
                         inbound: AsyncIterator[bytes] | None, out: StreamOut) -> None:
            typed_in: _TypedInbound[Any] | None = (
                None if inbound is None else _TypedInbound(inbound, req_t))
            await fn(ctx, _decode_request(dec_pay, payload), typed_in, TypedStreamOut(out, resp_t))

        manager.register_stream(self.handler_id, StreamHandler(
            handle, subroute=subroute, in_capacity=self.in_capacity,
            out_capacity=self.out_capacity))

    async def call(self, conn: Connection | Subroute, payload: P = None,  # type: ignore[assignment]
                   timeout: float | None = None) -> TypedStream[Req, Resp]:
        """Open the stream with a typed initial payload."""
        raw = None if payload is None else payload_codec(self.payload_type)[0](payload)
        s = await conn.new_stream(self.handler_id, raw, timeout, in_capacity=self.in_capacity,
                                  out_capacity=self.out_capacity)
        return TypedStream(s, self.request_type, self.response_type)
