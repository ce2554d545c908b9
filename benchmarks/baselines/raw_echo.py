"""Raw baseline: the practical ceiling for request/response messaging in Python.

A minimal ``asyncio.Protocol`` echo server and client (run them on uvloop).
Framing, both directions::

    4 bytes  big-endian length of what follows (8 + len(payload))
    8 bytes  big-endian request id
    payload

The client keeps a dict of pending futures keyed by request id; every request
is an awaited future resolved from the parsed response frame.  Both sides
coalesce their writes: frames are appended to a list and flushed once per loop
iteration by a single ``loop.call_soon`` (one ``transport.write`` of the joined
bytes).  Nothing else: no timeouts, no auth, no checksums, no handler lookup
beyond one function call -- which is exactly why it is the ceiling.

The server can optionally *hold* its replies until ``hold`` requests have
arrived (used by the in-flight memory check): then every reply is released at
once.

Standalone smoke test::

    python benchmarks/baselines/raw_echo.py [--requests N] [--concurrency C]
"""

from __future__ import annotations

import asyncio
import os
import struct
import sys
from typing import Any, Callable, Optional

try:
    from ._common import echo_smoke, echo_smoke_main
except ImportError:  # run as a script / imported without the package
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _common import echo_smoke, echo_smoke_main  # type: ignore[no-redef]

_HDR = struct.Struct(">IQ")  # length (of id + payload), request id
_HDR_SIZE = _HDR.size  # 12
_ID_SIZE = 8
#: Refuse frames bigger than this (a corrupt length would otherwise buffer forever).
MAX_FRAME = 64 * 1024 * 1024


class _FrameBuffer:
    """Incoming-bytes accumulator shared by both sides.

    ``feed(data)`` returns the complete ``(request_id, payload)`` frames.  When
    nothing is buffered the frames are sliced straight out of ``data`` and only
    a trailing partial frame is copied into the buffer.
    """

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list:
        buf = self._buf
        if buf:
            buf += data
            src = buf
        else:
            src = data
        n = len(src)
        pos = 0
        out = []
        append = out.append
        unpack_from = _HDR.unpack_from
        while n - pos >= _HDR_SIZE:
            length, rid = unpack_from(src, pos)
            if length < _ID_SIZE or length > MAX_FRAME:
                raise ValueError(f"bad frame length {length}")
            end = pos + 4 + length
            if end > n:
                break
            append((rid, bytes(src[pos + _HDR_SIZE : end])))
            pos = end
        if src is buf:
            if pos:
                del buf[:pos]
        elif pos < n:
            buf += src[pos:]
        return out


class _Writer:
    """Write coalescing: queue frames, flush once per loop iteration."""

    __slots__ = ("_transport", "_loop", "_out", "_scheduled")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._out: list = []
        self._scheduled = False

    def send(self, rid: int, payload: bytes) -> None:
        out = self._out
        out.append(_HDR.pack(_ID_SIZE + len(payload), rid))
        out.append(payload)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        out = self._out
        if not out:
            return
        self._out = []
        if not self._transport.is_closing():
            self._transport.write(b"".join(out))


# --------------------------------------------------------------------------- server


class EchoServerProtocol(asyncio.Protocol):
    """Parses frames, calls ``handler(payload) -> bytes`` and replies with the same id."""

    def __init__(self, handler: Callable[[bytes], bytes] = bytes, hold: int = 0) -> None:
        self._handler = handler
        self._hold = hold
        self._held: list = []
        self._frames = _FrameBuffer()
        self._writer: Optional[_Writer] = None
        self._transport: Optional[asyncio.Transport] = None

    def connection_made(self, transport):  # type: ignore[override]
        self._transport = transport
        self._writer = _Writer(transport, asyncio.get_running_loop())

    def data_received(self, data: bytes) -> None:
        try:
            frames = self._frames.feed(data)
        except ValueError:
            self._transport.close()  # type: ignore[union-attr]
            return
        handler = self._handler
        send = self._writer.send  # type: ignore[union-attr]
        if self._hold:
            held = self._held
            for rid, payload in frames:
                held.append((rid, handler(payload)))
            if len(held) >= self._hold:
                self._held = []
                for rid, reply in held:
                    send(rid, reply)
            return
        for rid, payload in frames:
            send(rid, handler(payload))

    def connection_lost(self, exc):  # type: ignore[override]
        self._held = []


def _identity(payload: bytes) -> bytes:
    return payload


async def serve(
    host: str = "127.0.0.1",
    port: int = 0,
    handler: Callable[[bytes], bytes] = _identity,
    hold: int = 0,
) -> asyncio.AbstractServer:
    """Start the echo server; the bound port is ``server.sockets[0].getsockname()[1]``."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: EchoServerProtocol(handler, hold), host, port)


# --------------------------------------------------------------------------- client


class RawClient(asyncio.Protocol):
    """One connection; ``await client.request(payload)`` returns the reply payload."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._pending: dict = {}
        self._next_id = 1
        self._frames = _FrameBuffer()
        self._writer: Optional[_Writer] = None
        self._transport: Optional[asyncio.Transport] = None
        self._closed: Optional[BaseException] = None

    @classmethod
    async def connect(cls, host: str, port: int) -> "RawClient":
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_connection(cls, host, port)
        return proto

    def connection_made(self, transport):  # type: ignore[override]
        self._transport = transport
        self._writer = _Writer(transport, self._loop)

    def data_received(self, data: bytes) -> None:
        pop = self._pending.pop
        for rid, payload in self._frames.feed(data):
            fut = pop(rid, None)
            if fut is not None and not fut.done():
                fut.set_result(payload)

    def connection_lost(self, exc):  # type: ignore[override]
        self._closed = exc or ConnectionResetError("raw echo connection closed")
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(self._closed)

    def request(self, payload: bytes) -> "asyncio.Future[bytes]":
        """Send one request; the returned future resolves to the reply payload."""
        if self._closed is not None:
            raise ConnectionResetError("raw echo connection closed")
        rid = self._next_id
        self._next_id = rid + 1
        fut = self._loop.create_future()
        self._pending[rid] = fut
        self._writer.send(rid, payload)  # type: ignore[union-attr]
        return fut

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


# --------------------------------------------------------------------------- smoke test


async def _smoke(requests: int, concurrency: int, size: int) -> None:
    server = await serve()
    port = server.sockets[0].getsockname()[1]
    client = await RawClient.connect("127.0.0.1", port)
    await echo_smoke("raw echo", client.request, requests, concurrency, size)
    client.close()
    server.close()
    await server.wait_closed()


def main(argv: Any = None) -> None:
    echo_smoke_main(__doc__, _smoke, 200_000, 128, argv)


if __name__ == "__main__":
    main()
