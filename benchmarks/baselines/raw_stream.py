"""Raw baseline for streams: the practical ceiling for streaming in Python.

Same framing as ``raw_echo.py``, both directions::

    4 bytes  big-endian length of what follows (8 + len(payload))
    8 bytes  big-endian id
    payload

The client opens the stream with one *control* frame (id 0) whose payload is
``struct.pack(">BIQI", mode, size, count, window)``:

``MODE_PRODUCE``
    one-way: the server streams ``count`` messages (0 = until the connection
    closes) of ``size`` random bytes, ids 1, 2, 3 ... as fast as it can.  Once
    per loop iteration it packs up to ``BATCH_BYTES`` of frames (a Python loop,
    one header per message, as a real per-message producer would) and writes
    them with one ``transport.write``; it stops while the transport is paused
    and resumes from ``resume_writing``.

    With ``window`` > 0 the producer also keeps a credit window, the way a
    hand-written stream with grid's flow control would: it starts with
    ``window`` credits, each message costs one, and it stops at none.  The
    client returns credits in id-0 frames (``struct.pack(">I", n)``) as grid's
    consumer does: a quarter window's worth once that many items are taken (for
    items under ``EARLY_ITEM_MAX`` bytes an eighth, once it has taken at least
    as many items as it still holds), and whatever is owed when it is about to
    wait.

``MODE_ECHO``
    two-way: every later frame is echoed with the same id, replies coalesced
    per loop iteration (``raw_echo._Writer``).

With ``window`` 0 there is **no application-level credit window**: the one-way
stream is held back only by TCP flow control (the server pauses when its transport buffer is
above the high-water mark; the client pauses reading while more than
``HIGH_WATER`` unread items are queued).  That makes it the ceiling for a
one-way stream -- grid additionally returns one credit message per item, and
its sender may hold at most a window of items unacknowledged.  (For
the pipelined two-way echo, the *benchmark* keeps at most N items in flight,
like grid's credits; that limit lives in the client's sender, not here.)

The client side is an async iterator over the received payloads (``async for
item in client``) so consuming it costs what consuming a grid stream costs:
one ``__anext__`` per item.

Standalone smoke test::

    python benchmarks/baselines/raw_stream.py [--size 64] [--count 1000000]
"""

from __future__ import annotations

import asyncio
import os
import struct
import sys
from collections import deque
from typing import Any, Optional

try:
    from ._common import ParkingConsumer
    from .raw_echo import _HDR, _ID_SIZE, _FrameBuffer, _Writer
except ImportError:  # run as a script / imported without the package
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _common import ParkingConsumer  # type: ignore[no-redef]
    from raw_echo import _HDR, _ID_SIZE, _FrameBuffer, _Writer  # type: ignore[no-redef]

MODE_PRODUCE = 1
MODE_ECHO = 2
_CTRL = struct.Struct(">BIQI")  # mode, size, count, window (0 = none)
_CREDIT = struct.Struct(">I")
#: Bytes of frames the producer packs per loop iteration.
BATCH_BYTES = 64 * 1024
#: The client pauses reading above this many unread items and resumes below LOW_WATER.
HIGH_WATER = 4096
LOW_WATER = 1024
#: Items under this many bytes return their credits early, as grid's do
#: (grid._consts.EARLY_CREDIT_ITEM_MAX; the baseline does not import grid).
EARLY_ITEM_MAX = 2048


# --------------------------------------------------------------------------- server


class StreamServerProtocol(asyncio.Protocol):
    """One stream per connection: produce or echo, chosen by the control frame."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._frames = _FrameBuffer()
        self._transport: Optional[asyncio.Transport] = None
        self._writer: Optional[_Writer] = None
        self._mode = 0
        self._paused = False
        self._scheduled = False
        self._payload = b""
        self._remaining = 0  # messages left to produce; -1 = unbounded
        self._next_id = 1
        self._credits = -1  # messages the client allows now; -1 = no window

    def connection_made(self, transport):  # type: ignore[override]
        self._transport = transport
        self._writer = _Writer(transport, self._loop)

    def data_received(self, data: bytes) -> None:
        try:
            frames = self._frames.feed(data)
        except ValueError:
            self._transport.close()  # type: ignore[union-attr]
            return
        if self._mode == MODE_ECHO:
            send = self._writer.send  # type: ignore[union-attr]
            for rid, payload in frames:
                send(rid, payload)
            return
        if self._mode == MODE_PRODUCE:
            self._add_credits(frames)
            return
        for i, (rid, payload) in enumerate(frames):
            if rid != 0 or len(payload) != _CTRL.size:
                self._transport.close()  # type: ignore[union-attr]
                return
            mode, size, count, window = _CTRL.unpack(payload)
            if mode == MODE_PRODUCE:
                self._mode = MODE_PRODUCE
                self._payload = os.urandom(size)
                self._remaining = count if count else -1
                self._credits = window if window else -1
                self._add_credits(frames[i + 1:])
            elif mode == MODE_ECHO:
                self._mode = MODE_ECHO
                send = self._writer.send  # type: ignore[union-attr]
                for rid2, p2 in frames[i + 1:]:
                    send(rid2, p2)
            else:
                self._transport.close()  # type: ignore[union-attr]
            return

    def _add_credits(self, frames: list) -> None:
        """Credit frames from the client; anything else closes the connection."""
        for rid, payload in frames:
            if rid != 0 or len(payload) != _CREDIT.size or self._credits < 0:
                self._transport.close()  # type: ignore[union-attr]
                return
            self._credits += _CREDIT.unpack(payload)[0]
        self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled and not self._paused:
            self._scheduled = True
            self._loop.call_soon(self._produce)

    def _produce(self) -> None:
        self._scheduled = False
        t = self._transport
        if self._paused or t is None or t.is_closing() or self._remaining == 0 or self._credits == 0:
            return
        payload = self._payload
        size = len(payload)
        n = max(1, BATCH_BYTES // (_HDR.size + size))
        if 0 < self._remaining < n:
            n = self._remaining
        if 0 < self._credits < n:
            n = self._credits
        if self._credits > 0:
            self._credits -= n
        pack = _HDR.pack
        length = _ID_SIZE + size
        rid = self._next_id
        out: list = []
        append = out.append
        for rid in range(rid, rid + n):
            append(pack(length, rid))
            append(payload)
        self._next_id = rid + 1
        if self._remaining > 0:
            self._remaining -= n
        t.write(b"".join(out))
        self._schedule()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._mode == MODE_PRODUCE:
            self._schedule()

    def connection_lost(self, exc):  # type: ignore[override]
        self._remaining = 0
        self._transport = None


async def serve(host: str = "127.0.0.1", port: int = 0) -> asyncio.AbstractServer:
    """Start the stream server; the bound port is ``server.sockets[0].getsockname()[1]``."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(StreamServerProtocol, host, port)


# --------------------------------------------------------------------------- client


class RawStreamClient(asyncio.Protocol, ParkingConsumer):
    """One connection = one stream.  ``async for item in client`` yields payloads."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._frames = _FrameBuffer()
        self._items: deque = deque()
        self._waiter = None
        self._writer: Optional[_Writer] = None
        self._transport: Optional[asyncio.Transport] = None
        self._reading_paused = False
        self._closed: Optional[BaseException] = None
        self._next_id = 1

    @classmethod
    async def connect(cls, host: str, port: int) -> "RawStreamClient":
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_connection(cls, host, port)
        return proto

    # -- protocol

    def connection_made(self, transport):  # type: ignore[override]
        self._transport = transport
        self._writer = _Writer(transport, self._loop)

    def data_received(self, data: bytes) -> None:
        items = self._items
        for _rid, payload in self._frames.feed(data):
            items.append(payload)
        if len(items) > HIGH_WATER and not self._reading_paused:
            self._reading_paused = True
            self._transport.pause_reading()  # type: ignore[union-attr]
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def connection_lost(self, exc):  # type: ignore[override]
        self._closed = exc or ConnectionResetError("raw stream connection closed")
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    # -- stream API

    def start_produce(self, size: int, count: int = 0) -> None:
        """Ask the server for ``count`` messages of ``size`` bytes (0 = unbounded)."""
        self._writer.send(0, _CTRL.pack(MODE_PRODUCE, size, count, 0))  # type: ignore[union-attr]

    def start_echo(self) -> None:
        """Switch the server to echo mode; then :meth:`send` items."""
        self._writer.send(0, _CTRL.pack(MODE_ECHO, 0, 0, 0))  # type: ignore[union-attr]

    def send(self, payload: bytes) -> None:
        rid = self._next_id
        self._next_id = rid + 1
        self._writer.send(rid, payload)  # type: ignore[union-attr]

    def __aiter__(self) -> "RawStreamClient":
        return self

    async def __anext__(self) -> bytes:
        while True:
            items = self._items
            if items:
                item = items.popleft()
                if self._reading_paused and len(items) < LOW_WATER:
                    self._reading_paused = False
                    if self._transport is not None and not self._transport.is_closing():
                        self._transport.resume_reading()
                return item  # type: ignore[no-any-return]
            if self._closed is not None:
                raise StopAsyncIteration
            await self._park()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class RawWindowStreamClient(RawStreamClient):
    """A one-way stream with a credit window of ``window`` items, returned as
    grid's consumer returns them: a quarter window's worth at once as items
    are taken (written straight away; for items under ``EARLY_ITEM_MAX``
    bytes an eighth once at least as many are taken as are still held), and
    whatever is owed before waiting."""

    def __init__(self, window: int) -> None:
        super().__init__()
        self._window = window
        self._every = max(1, window // 4)
        self._owed = 0

    @classmethod
    async def connect_window(cls, host: str, port: int, window: int) -> "RawWindowStreamClient":
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_connection(lambda: cls(window), host, port)
        return proto

    def start_produce(self, size: int, count: int = 0) -> None:
        """Ask for ``count`` messages of ``size`` bytes within this client's window."""
        self._writer.send(0, _CTRL.pack(MODE_PRODUCE, size, count, self._window))  # type: ignore[union-attr]

    def _return_credits(self) -> None:
        t = self._transport
        if t is not None and not t.is_closing():
            t.write(_HDR.pack(_ID_SIZE + _CREDIT.size, 0) + _CREDIT.pack(self._owed))
        self._owed = 0

    async def __anext__(self) -> bytes:
        while True:
            items = self._items
            if items:
                item = items.popleft()
                self._owed += 1
                owed = self._owed
                if owed >= self._every or (len(item) < EARLY_ITEM_MAX and 2 * owed >= self._every
                                           and owed >= len(items)):
                    self._return_credits()
                return item  # type: ignore[no-any-return]
            if self._closed is not None:
                raise StopAsyncIteration
            if self._owed:
                self._return_credits()
            await self._park()


# --------------------------------------------------------------------------- smoke test


async def _smoke(size: int, count: int) -> None:
    import time

    server = await serve()
    port = server.sockets[0].getsockname()[1]
    client = await RawStreamClient.connect("127.0.0.1", port)
    t0 = time.perf_counter()
    client.start_produce(size, count)
    n = 0
    async for item in client:
        n += 1
        if n == count:
            break
    dt = time.perf_counter() - t0
    print(f"raw stream (same process): {n} x {size} B in {dt:.2f} s: {n / dt:,.0f} msg/s, "
          f"{n * size / dt / 1e6:,.1f} MB/s")
    client.close()
    echo = await RawStreamClient.connect("127.0.0.1", port)
    echo.start_echo()
    payload = os.urandom(size)
    t0 = time.perf_counter()
    rounds = max(1, count // 50)
    for _ in range(rounds):
        echo.send(payload)
        if await echo.__anext__() != payload:
            raise AssertionError("echo mismatch")
    dt = time.perf_counter() - t0
    print(f"raw stream echo (same process): {rounds} round trips: {rounds / dt:,.0f} /s")
    echo.close()
    server.close()
    await server.wait_closed()


def main(argv: Any = None) -> None:
    import argparse

    import uvloop

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--count", type=int, default=1_000_000)
    args = ap.parse_args(argv)
    uvloop.run(_smoke(args.size, args.count))


if __name__ == "__main__":
    main()
