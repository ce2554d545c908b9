"""picows baseline: request/response over one WebSocket with a small request-id mux,
written the way a user of picows would write it.

Every message is one binary WebSocket frame::

    8 bytes  big-endian request id
    payload

The client keeps a dict of pending futures keyed by request id and sends each
request at once (``WSTransport.send``: picows frames and writes every message
as it is sent, no coalescing); the server parses the id, calls
``handler(payload)`` and sends the reply with the same id.  No timeouts, no
auth, no checksums: a user's thin mux on the fastest Python WebSocket library.

The same framing carries a one-way stream with a credit window (used by
``benchmarks/streams.py``): the client sends a *start* frame (``_START``:
kind 1, item size, window); the server sends items (each frame is one item's
bytes) while it holds credit; the client's ``async for`` returns one credit
frame (``_CREDIT``: kind 2, count 1) per item it takes, the same flow control
as a grid stream.

Needs picows (the ``bench`` extra).  Standalone smoke test::

    python benchmarks/baselines/picows_echo.py [--requests N] [--concurrency C]
"""

from __future__ import annotations

import asyncio
import os
import struct
import sys
from collections import deque
from typing import Any, Callable, Optional

from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect, ws_create_server

try:
    from ._common import ParkingConsumer, echo_smoke, echo_smoke_main
except ImportError:  # run as a script / imported without the package
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _common import ParkingConsumer, echo_smoke, echo_smoke_main  # type: ignore[no-redef]

_ID = struct.Struct(">Q")
_ID_SIZE = _ID.size
_START = struct.Struct(">BII")  # 1, item size, window
_CREDIT = struct.Struct(">BI")  # 2, count
_BINARY = WSMsgType.BINARY
_CLOSE = WSMsgType.CLOSE
#: Frames larger than this close the connection (picows's own limit).
MAX_FRAME = 64 * 1024 * 1024


def _identity(payload: bytes) -> bytes:
    return payload


# --------------------------------------------------------------------------- server


class EchoServerListener(WSListener):  # type: ignore[misc]
    """Requests (id + payload) answered with ``handler(payload)``; or, after a
    start frame, a one-way stream of items paced by the client's credits."""

    def __init__(self, handler: Callable[[bytes], bytes] = _identity) -> None:
        super().__init__()
        self._handler = handler
        self._transport: Optional[WSTransport] = None
        self._item = b""
        self._credits = 0
        self._streaming = False
        self._paused = False

    def on_ws_connected(self, transport: WSTransport) -> None:
        self._transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type != _BINARY:
            if frame.msg_type == _CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()
            return
        if self._streaming:
            self._credits += _CREDIT.unpack_from(frame.get_payload_as_memoryview())[1]
            self._produce()
            return
        mv = frame.get_payload_as_memoryview()
        rid = _ID.unpack_from(mv)[0]
        if rid == 0:  # stream start
            _, size, window = _START.unpack_from(mv, _ID_SIZE)
            self._item = os.urandom(size)
            self._credits = window
            self._streaming = True
            self._produce()
            return
        reply = self._handler(bytes(mv[_ID_SIZE:]))
        transport.send(_BINARY, _ID.pack(rid) + reply)

    def _produce(self) -> None:
        t = self._transport
        if t is None or self._paused:
            return
        send, item = t.send, self._item
        n = self._credits
        self._credits = 0
        for _ in range(n):
            send(_BINARY, item)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._streaming:
            self._produce()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self._transport = None


async def serve(host: str = "127.0.0.1", port: int = 0,
                handler: Callable[[bytes], bytes] = _identity) -> asyncio.AbstractServer:
    """Start the server; the bound port is ``server.sockets[0].getsockname()[1]``."""
    return await ws_create_server(lambda _req: EchoServerListener(handler), host, port,
                                  max_frame_size=MAX_FRAME)


# --------------------------------------------------------------------------- client


class PicowsClient(WSListener):  # type: ignore[misc]
    """One connection; ``await client.request(payload)`` returns the reply payload."""

    def __init__(self) -> None:
        super().__init__()
        self._loop = asyncio.get_running_loop()
        self._pending: dict[int, asyncio.Future[bytes]] = {}
        self._next_id = 1
        self._transport: Optional[WSTransport] = None
        self._closed: Optional[BaseException] = None

    @classmethod
    async def connect(cls, host: str, port: int) -> "PicowsClient":
        _, client = await ws_connect(cls, f"ws://{host}:{port}/", max_frame_size=MAX_FRAME)
        return client  # type: ignore[no-any-return]

    def on_ws_connected(self, transport: WSTransport) -> None:
        self._transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type != _BINARY:
            return
        mv = frame.get_payload_as_memoryview()
        fut = self._pending.pop(_ID.unpack_from(mv)[0], None)
        if fut is not None and not fut.done():
            fut.set_result(bytes(mv[_ID_SIZE:]))

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self._closed = ConnectionResetError("picows connection closed")
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(self._closed)

    def request(self, payload: bytes) -> "asyncio.Future[bytes]":
        """Send one request; the returned future resolves to the reply payload."""
        if self._closed is not None or self._transport is None:
            raise ConnectionResetError("picows connection closed")
        rid = self._next_id
        self._next_id = rid + 1
        fut = self._loop.create_future()
        self._pending[rid] = fut
        self._transport.send(_BINARY, _ID.pack(rid) + payload)
        return fut

    def close(self) -> None:
        if self._transport is not None:
            self._transport.disconnect()


class PicowsStream(WSListener, ParkingConsumer):  # type: ignore[misc]
    """One connection = one one-way stream; ``async for item in stream`` takes
    the items and returns one credit per item taken."""

    def __init__(self) -> None:
        super().__init__()
        self._loop = asyncio.get_running_loop()
        self._items: deque[bytes] = deque()
        self._waiter = None
        self._transport: Optional[WSTransport] = None
        self._closed = False
        self._credit = _CREDIT.pack(2, 1)

    @classmethod
    async def open(cls, host: str, port: int, size: int, window: int) -> "PicowsStream":
        _, stream = await ws_connect(cls, f"ws://{host}:{port}/", max_frame_size=MAX_FRAME)
        stream._transport.send(_BINARY, _ID.pack(0) + _START.pack(1, size, window))
        return stream  # type: ignore[no-any-return]

    def on_ws_connected(self, transport: WSTransport) -> None:
        self._transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type != _BINARY:
            return
        self._items.append(frame.get_payload_as_bytes())
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self._closed = True
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def __aiter__(self) -> "PicowsStream":
        return self

    async def __anext__(self) -> bytes:
        while True:
            if self._items:
                item = self._items.popleft()
                t = self._transport
                if t is not None and not self._closed:
                    t.send(_BINARY, self._credit)
                return item
            if self._closed:
                raise StopAsyncIteration
            await self._park()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.disconnect()


# --------------------------------------------------------------------------- smoke test


async def _smoke(requests: int, concurrency: int, size: int) -> None:
    import time

    server = await serve()
    port = server.sockets[0].getsockname()[1]
    client = await PicowsClient.connect("127.0.0.1", port)
    await echo_smoke("picows echo", client.request, requests, concurrency, size)
    client.close()
    stream = await PicowsStream.open("127.0.0.1", port, 64, 64)
    n = 0
    t0 = time.perf_counter()
    async for _ in stream:
        n += 1
        if n == requests:
            break
    dt = time.perf_counter() - t0
    print(f"picows stream (same process): {n} x 64 B: {n / dt:,.0f} msg/s")
    stream.close()
    server.close()


def main(argv: Any = None) -> None:
    echo_smoke_main(__doc__, _smoke, 100_000, 16, argv)


if __name__ == "__main__":
    main()
