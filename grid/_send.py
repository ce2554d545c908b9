"""The write side of one connection: batching, large-message order and
back-pressure.

Messages are queued in the core.  On a quiet connection (the last iteration
that sent anything sent at most one message) the core writes the first
message at once, itself (``core.direct``), so a lone call does not wait for
the end of the loop iteration; otherwise, and for whatever follows it in the
same iteration, one flush at the end of the iteration writes everything as
one frame or OpMerged containers (docs/protocol.md §4).  A message of LARGE_MESSAGE bytes or more is framed
on the manager's encoder thread; whatever is queued after it waits for it,
so the wire keeps the order of the sends.  A socket that stops reading
pauses callers (``pause_writing``), and is dropped past ``write_timeout``
seconds paused or ``max_write_buffer`` bytes buffered.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from grid._consts import Op
from grid._impl import ACCELERATED, encode_frames, encode_message, encode_message_frame
from grid._wire import Wire, mask_key
from grid.errors import Disconnected

__all__ = ["Sender"]

log = logging.getLogger("grid.connection")

_REQUEST = int(Op.REQUEST)


class Limits(Protocol):
    """The node settings the write side reads (a Manager's)."""

    max_write_buffer: int
    write_timeout: float
    send_queue_size: int

    def _encoder(self) -> Any: ...


class Sender:
    """Writes of one connection to its live wire.

    :param limits: the node's write limits and encoder thread.
    :param name: ``"local -> remote"``, for logs.
    :param paused_changed: called whenever writes pause or resume.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, limits: Limits, name: str,
                 paused_changed: Callable[[], None]) -> None:
        self._loop = loop
        self._limits = limits
        self._name = name
        self._paused_changed = paused_changed
        self.wire: Wire | None = None
        self.core: Any = None
        #: True while the socket asks for no more writes.
        self.paused = False
        self._generation = 0
        self._flush_handle: asyncio.Handle | None = None
        # Writes held in order behind a large message being framed on the
        # encoder thread: (future of the frame bytes, its request's mux id,
        # 0 for another large message, -1 for frames take_frames counted).
        self._large: deque[tuple[asyncio.Future[bytes], int]] = deque()
        self._space_waiters: list[asyncio.Future[None]] = []
        self._write_stall: asyncio.TimerHandle | None = None

    def attach(self, wire: Wire, core: Any) -> None:
        """Write to ``wire`` (whose core queues the messages) from now on."""
        self.wire = wire
        self.core = core
        self.paused = False
        core.mask_key = mask_key if wire.mask else None
        core.write_limit = self._limits.max_write_buffer
        self._set_ready()

    def reset(self) -> None:
        """The wire is gone: forget it and whatever waits to be written."""
        self._generation += 1
        if self.core is not None:
            self.core.direct = self.core.ready = None
        self.wire = None
        self.core = None
        for timer in (self._write_stall, self._flush_handle):
            if timer is not None:
                timer.cancel()
        self._write_stall = self._flush_handle = None
        self._large.clear()  # frames still on the encoder thread are dropped when done
        self.wake_senders()

    def jobs(self) -> list[asyncio.Future[bytes]]:
        """Large frames still being built (a graceful close waits for them)."""
        return [job for job, _ in self._large if not job.done()]

    # -- flushing

    def schedule_flush(self) -> None:
        """The core queued the first message since the last flush: flush
        what follows at the end of this loop iteration (once, however often
        called)."""
        if self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self._end_of_iteration)

    def _end_of_iteration(self) -> None:
        # At most one message written in this iteration: the connection is
        # lightly used, and its next message need not wait (``core.ready``).
        # More than one: batching pays, and the next iteration's messages
        # wait for its end.
        self._flush_handle = None
        core = self.core
        if core is None:
            return
        batch = len(core.queue)
        self.flush()
        if batch <= 1:
            core.direct = core.ready

    def _set_ready(self) -> None:
        """Let the core write a lone message at once (``core.ready``), if
        nothing needs writes to wait: a framed wire, not paused, no large
        frame held."""
        wire, core = self.wire, self.core
        if core is None:
            return
        if (wire is not None and wire.framed and not self.paused and not self._large
                and wire.transport is not None):
            core.ready = core.direct = wire.transport
        else:
            core.ready = core.direct = None

    def flush(self) -> bool:
        """Write everything queued now; True if anything was written."""
        self._flush_handle = None
        wire, core = self.wire, self.core
        if wire is None or core is None or wire.transport is None:
            return False
        if not wire.framed:  # grid.integrations: the server frames the messages
            wire.flush_messages(core)  # type: ignore[attr-defined]
            return True
        if self._large:
            return True  # held behind a large frame; _large_done flushes
        data = core.take_frames(mask_key() if wire.mask else None)
        if data is None:
            self._check_buffer(wire)  # the core may have written a message itself
        else:
            self._write(wire, data)
        if self._space_waiters and not self.paused:
            self.wake_senders()  # the queue has room again (taken here or by the core)
        return data is not None

    def flush_early(self) -> None:
        """Write what is queued now (the core: a full write's worth); the
        flush already scheduled for this iteration takes what follows."""
        handle = self._flush_handle
        self.flush()
        self._flush_handle = handle

    def _write(self, wire: Wire, data: bytes) -> None:
        wire.transport.write(data)
        self._check_buffer(wire)

    def _check_buffer(self, wire: Wire) -> None:
        """Drop the wire once its socket buffers more than max_write_buffer."""
        limit = self._limits.max_write_buffer
        if wire.transport.get_write_buffer_size() > limit:
            wire.fail(f"send buffer over {limit} bytes: peer is not reading")

    def send_keepalive(self, msg: bytes) -> None:
        """Queue a connection ping or pong.  These need no order with other
        messages, so they do not wait behind a large message being framed:
        the keepalive holds while the frame is built."""
        wire, core = self.wire, self.core
        if core is None:
            return
        if not self._large or wire is None or wire.transport is None:
            core.send(msg)
            return
        data = encode_frames([msg], mask_key() if wire.mask else None)
        core.msgs_out += 1
        core.bytes_out += len(data)
        self._write(wire, data)

    # -- large messages

    def send_large(self, mux_id: int, seq: int, deadline_ms: int, handler: int, op: int,
                   flags: int, payload: bytes, subroute: bytes | None) -> None:
        """Send a message with a payload of LARGE_MESSAGE bytes or more (the
        core hands these over instead of encoding them).  It is encoded and
        framed on the encoder thread, whose copies, CRC and mask run without
        the GIL, so the event loop never waits for it.  Order on the wire is
        kept: everything queued before it leaves before it, everything
        queued after it waits for it."""
        wire, core = self.wire, self.core
        if wire is None or core is None or wire.transport is None:
            return  # down: the reset has failed (or will fail) whatever waits on it
        if not wire.framed or not ACCELERATED:
            # grid.integrations frame whole messages themselves; and the pure
            # codec holds the GIL throughout, so a thread would only contend
            # with the loop for it: both encode here, in order, as any message,
            # written apart from what precedes it, so that no container
            # makes it larger than the receiver's max_message_size.
            self.flush()
            core.send(encode_message(mux_id, seq, deadline_ms, handler, op, flags, payload,
                                     subroute))
            return
        core.ready = core.direct = None  # what follows waits for the large frame
        mask = mask_key() if wire.mask else None
        if self._large:
            # Queued since the previous large message: they go between the two.
            before = core.take_frames(mask)
            if before is not None:
                done = self._loop.create_future()
                done.set_result(before)
                self._large.append((done, -1))  # counted by take_frames
        else:
            self.flush()
        job = self._loop.run_in_executor(self._limits._encoder(), encode_message_frame, mux_id,
                                         seq, deadline_ms, handler, op, flags, payload, subroute,
                                         mask)
        gen = self._generation
        self._large.append((job, mux_id if op == _REQUEST else 0))
        job.add_done_callback(lambda _job: self._large_done(gen))

    def _large_done(self, gen: int) -> None:
        """Write the held frames that are ready, in order; once none is held,
        let the ordinary flush run again."""
        if gen != self._generation:
            return  # the connection these frames were for is gone
        wire, core = self.wire, self.core
        large = self._large
        while large and large[0][0].done():
            job, mux_id = large.popleft()
            if job.cancelled():
                continue
            exc = job.exception()
            if exc is not None:
                fut = core.pending.pop(mux_id, None) if (core is not None and mux_id > 0) else None
                if fut is not None and not fut.done():
                    fut.set_exception(exc)
                else:
                    log.error("grid: %s: could not encode a large message: %r", self._name, exc)
                continue
            data = job.result()
            if wire is not None and core is not None and wire.transport is not None:
                if mux_id >= 0:
                    core.msgs_out += 1
                    core.bytes_out += len(data)
                self._write(wire, data)
        if not large and core is not None:
            if core.queue:
                self.flush()
            self._set_ready()

    # -- back-pressure

    async def wait_for_space(self) -> Any:
        """Wait while the send queue is full or the socket is paused; return
        the live core, or raise Disconnected if the connection dropped."""
        while self.paused or (self.core is not None
                              and len(self.core.queue) >= self._limits.send_queue_size):
            fut = self._loop.create_future()
            self._space_waiters.append(fut)
            await fut
            if self.core is None:
                raise Disconnected()
        if self.core is None:
            raise Disconnected()
        return self.core

    def wake_senders(self) -> None:
        """Let every sender waiting for room look again."""
        waiters, self._space_waiters = self._space_waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    def pause(self) -> None:
        """The socket's buffer is full: hold callers, bounded by write_timeout."""
        self.paused = True
        self._set_ready()
        self._paused_changed()
        if self._write_stall is None:
            self._write_stall = self._loop.call_later(self._limits.write_timeout, self._stalled)

    def resume(self) -> None:
        """The socket's buffer has drained."""
        self.paused = False
        self._set_ready()
        self._paused_changed()
        if self._write_stall is not None:
            self._write_stall.cancel()
            self._write_stall = None
        self.wake_senders()

    def _stalled(self) -> None:
        self._write_stall = None
        if self.wire is not None and self.paused:
            self.wire.fail(f"writes stalled for {self._limits.write_timeout} s: "
                           "peer is not reading")
