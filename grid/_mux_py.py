"""Pure-Python twin of :mod:`grid._mux`: the per-mux bookkeeping a connection
needs on its hot path (docs/protocol.md §3.4, §8.3, §8.4), and
:class:`ConnCore`, the connection's core between the socket and the asyncio
layer.

No sockets and no asyncio calls of its own: ids, sequence counters and
credit counts; the core parses, resolves request futures, runs inline
handlers and moves stream items, and calls upward only through its owner's
declared interface, :class:`CoreOwner`.

ConnCore's steps for one concern live in module functions it calls:
received input within a turn's budget, dispatch and inline handlers in
grid/_mux_recv_py.py, a stream's credits owed in grid/_mux_stream_py.py,
request deadlines in grid/_mux_deadlines_py.py.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from operator import index as _index
from typing import Any

from grid import _codec_py
from grid._mux_deadlines_py import compact_deadlines, expire_deadlines, track_deadline
from grid._mux_owner import CoreOwner
from grid._mux_recv_py import dispatch_message, run_events, wait_events, work_slice
from grid._mux_stream_py import stream_owe, stream_queue
from grid._consts import (
    EARLY_FLUSH_BYTES,
    EARLY_FLUSH_MESSAGES,
    FLAG_EOF,
    FLAG_PAYLOAD_IS_ERR,
    FLAG_PAYLOAD_IS_ZERO,
    FLAG_SUBROUTE,
    LARGE_MESSAGE,
    MAX_DEADLINE_MS,
    MAX_UINT32,
    MAX_UINT64,
    READ_MIN,
    READ_WINDOW,
    TURN_BUDGET_PURE,
    WS_BINARY,
    Op,
)
from grid.errors import (
    IncorrectSequence,
    bad_reply_text,
    checked_len,
    payload_limit,
    too_large_text,
)

__all__ = ["MuxIdAllocator", "MuxState", "ConnCore"]

_U32_MASK = MAX_UINT32
_U64_MASK = MAX_UINT64


class MuxIdAllocator:
    """Hands out caller-side mux ids: pre-incremented from ``start``, wrapping
    at 2**64 and skipping 0, which is reserved for connection pings (§3.4).
    One allocator lives as long as its connection object, across reconnects."""

    __slots__ = ("_last",)

    def __init__(self, start: int = 0) -> None:
        # operator.index, like the compiled twin's conversion to uint64_t.
        start = _index(start)
        if not 0 <= start <= _U64_MASK:
            raise ValueError(f"start {start} is outside 0..2**64-1")
        self._last = start

    @property
    def last(self) -> int:
        """The id handed out most recently (``start`` before the first)."""
        return self._last

    def next(self) -> int:
        """Return the next mux id (never 0)."""
        v = (self._last + 1) & _U64_MASK
        if v == 0:
            v = 1
        self._last = v
        return v


class MuxState:
    """Sequence numbers and credits of one mux, seen from one side (§8.3, §8.4).

    ``send_seq`` is the Seq the next counted message takes; ``recv_seq`` the
    Seq the next checked message must carry.  ``credits`` counts the data
    messages this side may still send before it must wait for an unblock;
    ``waiter`` is the future a sender out of credit waits on (None if none
    waits), resolved when credit arrives.

    The stream layer also keeps a stream's receiving end here, so that the
    compiled core reads it without attribute lookups: ``items`` (a deque of
    received items, with room for ``capacity``; capacity 0 once no more may
    arrive), ``item_waiter`` (the reader's future), ``received`` (a count for
    the liveness check), ``owed``/``flush_every`` (credits earned by items
    taken and not yet queued; queued and written once ``flush_every`` are
    owed, or when the reader is about to wait), ``credit_op``/``item_op`` (the ops of
    this side) and ``fast``: True while the stream is open and untraced, so
    that :meth:`ConnCore.take_item`, :meth:`ConnCore.send_item` and the core's
    dispatch may handle its steady traffic without the stream's own code.
    """

    __slots__ = ("mux_id", "send_seq", "recv_seq", "credits", "waiter", "items", "item_waiter",
                 "capacity", "received", "owed", "flush_every", "credit_op", "item_op", "fast")

    def __init__(self, mux_id: int, send_seq: int = 0, recv_seq: int = 0, credits: int = 0) -> None:
        # operator.index, like the compiled twin's conversions to fixed-width ints.
        mux_id, send_seq, recv_seq = _index(mux_id), _index(send_seq), _index(recv_seq)
        credits = _index(credits)
        if not 0 <= mux_id <= _U64_MASK:
            raise ValueError(f"mux_id {mux_id} is outside 0..2**64-1")
        if not (0 <= send_seq <= _U32_MASK and 0 <= recv_seq <= _U32_MASK):
            raise ValueError("sequence numbers are 32-bit unsigned")
        if credits < 0:
            raise ValueError("credits must be >= 0")
        self.mux_id = mux_id
        self.send_seq = send_seq
        self.recv_seq = recv_seq
        self.credits = credits
        self.waiter: Any = None
        self.items: Any = None
        self.item_waiter: Any = None
        self.capacity = 0
        self.received = 0
        self.owed = 0
        self.flush_every = 1
        self.credit_op = 0
        self.item_op = 0
        self.fast = False

    def next_send_seq(self) -> int:
        """Take the Seq for the next counted outgoing message."""
        s = self.send_seq
        self.send_seq = (s + 1) & _U32_MASK
        return s

    def check_recv(self, seq: int) -> None:
        """Accept ``seq`` if it is the one due, else raise IncorrectSequence
        (and leave the counter where it was)."""
        expected = self.recv_seq
        if seq != expected:
            raise IncorrectSequence(expected, seq)
        self.recv_seq = (expected + 1) & _U32_MASK

    def add_credits(self, n: int = 1) -> int:
        """Return ``n`` credits (an ack or unblock arrived); give the new total."""
        n = _index(n)
        if n < 0:
            raise ValueError("n must be >= 0")
        self.credits += n
        return self.credits

    def take_credit(self) -> bool:
        """Spend one credit if there is one; False means the sender must wait."""
        if self.credits > 0:
            self.credits -= 1
            return True
        return False

    def __repr__(self) -> str:
        return (f"MuxState(mux_id={self.mux_id}, send_seq={self.send_seq}, "
                f"recv_seq={self.recv_seq}, credits={self.credits})")


# ---------------------------------------------------------------- the per-connection core


_REQUEST = int(Op.REQUEST)
_RESPONSE = int(Op.RESPONSE)
_FLAG_EOF = FLAG_EOF
_FLAG_ERR = FLAG_PAYLOAD_IS_ERR
_FLAG_ZERO = FLAG_PAYLOAD_IS_ZERO
_FLAG_SUBROUTE = FLAG_SUBROUTE
_WS_BINARY = WS_BINARY


class ConnCore:
    """The core of one live connection, below the asyncio layer.

    Incoming bytes (``get_buffer``/``buffer_updated``, or ``feed``) are
    parsed into frames and grid messages and dispatched at once: a Response
    resolves its pending request future, a Request for a registered *sync*
    single handler runs that handler inline and queues the reply; everything
    else goes to ``owner._on_message(msg)``, and WebSocket control frames to
    ``owner._on_control(opcode, payload)``.  Outgoing messages are queued
    with :meth:`send` (the first one in a batch calls
    ``owner._schedule_flush()``) and leave through :meth:`take_frames` as
    one WebSocket frame or OpMerged containers (§4); while ``direct`` holds
    the owner's transport, the first one is written to it at once.

    A core is made by its wire when the WebSocket starts, owned by the wire
    until the handshake attaches it to its connection with one
    :meth:`attach` call, and handed back to the wire by :meth:`detach` when
    the connection lets go of it.  ``singles`` / ``singles_sub`` are the
    manager's live registration dicts (handler id -> entry, subroute id ->
    entry); an entry has ``fn``, ``is_async``, ``route`` and ``ran_slow(seconds)``,
    called when the handler ran inline for SLOW_HANDLER seconds or more.
    ``context_var`` receives a ``(caller, handler_id, route, mux_id,
    deadline)`` tuple while an inline handler runs.  Request deadlines are
    tracked on ``time.monotonic()``.
    """

    __slots__ = (
        "owner", "parser", "ids", "pending", "queue", "queued_bytes", "base_flags", "caller",
        "singles", "singles_sub", "context_var", "clock", "msgs_in", "msgs_out", "bytes_out", "bytes_in",
        "callers", "callees", "open_calls", "direct", "ready", "mask_key", "write_limit", "_turn_end", "_quiet_pending", "loop", "default_timeout", "queue_limit", "sweep_at",
        "max_payload", "_fifo", "_deadlines", "reader", "turn_budget", "_spent", "_read_max",
        "_held", "_waiting", "_waiting_pos", "_slice", "_slice_pos", "_slice_start", "_slice_end",
        "_slice_count", "_slice_done", "_slice_checked",
    )

    def __init__(self, owner: CoreOwner, server: bool, max_message_size: int,
                 context_var: Any) -> None:
        self.owner = owner
        self.parser = _codec_py.FrameParser(server, max_message_size, split_large=True)
        self.context_var = context_var
        #: The largest payload a message sent here may carry (payload_limit).
        self.max_payload = payload_limit(max_message_size)
        self.pending: dict = {}
        self.queue: list = []
        self.queued_bytes = 0
        self.msgs_in = 0
        self.msgs_out = 0
        self.bytes_out = 0
        self.bytes_in = 0  # bytes socket_read was handed (the reader's socket)
        # Set by attach(): until then nothing runs inline, no stream traffic
        # is moved and every call() goes to owner._call().
        self.ids: MuxIdAllocator | None = None
        self.base_flags = 0
        self.caller = ""
        self.singles: dict = {}
        self.singles_sub: dict = {}
        self.clock: Any = None  # the event loop's time(), for handler deadlines
        # The owner's stream tables (mux id -> stream): stream traffic goes
        # straight to the stream's on-message method.
        self.callers: dict | None = None
        self.callees: dict | None = None
        # True while call() may start requests itself (the owner decides).
        self.open_calls = False
        # The owner's transport while the connection is idle: the next
        # message queued is written to it at once (and ``direct`` cleared),
        # framed and masked with ``mask_key()`` when that is set (a client).
        # ``ready`` is what the owner lets ``direct`` become again once a
        # later turn shows that nothing else was queued in that one: the next
        # input (``_quiet_pending`` until then; any frames taken clear it),
        # or, when the write left the transport holding more than
        # ``write_limit`` bytes, ``after_direct`` at the turn's end (which
        # has ``owner._flush()`` enforce the limit).
        self.direct: Any = None
        self.ready: Any = None
        self.mask_key: Any = None
        self.write_limit = sys.maxsize
        self._turn_end: Any = None
        self._quiet_pending = False
        self.loop: Any = None             # the event loop futures are made on
        self.default_timeout = 60.0
        self.queue_limit = 65535          # queued messages past which call() defers
        self.sweep_at = float("inf")      # monotonic time of the owner's next deadline sweep
        # Request deadlines: in order of arrival while they only grow (the
        # usual case: one timeout for all), on a heap for the others.
        self._fifo: deque = deque()
        self._deadlines: list = []
        # Fair share of the loop (see drain()): the wire that made the core
        # owns the socket and is told when input waits for a later turn.
        self.reader: Any = owner
        self.turn_budget = TURN_BUDGET_PURE
        self._spent = 0
        self._read_max = 0  # bytes a read may bring (0: the parser's whole window)
        self._held = False
        self._waiting: list | None = None
        self._waiting_pos = 0
        self._slice: bytes | None = None  # a large merged container being worked through
        self._slice_pos = self._slice_start = self._slice_end = 0
        self._slice_count = self._slice_done = 0
        self._slice_checked = False

    def attach(self, owner: CoreOwner, *, caller: str, base_flags: int, ids: MuxIdAllocator,
               loop: Any, singles: dict, singles_sub: dict, callers: dict, callees: dict,
               default_timeout: float, queue_limit: int, sweep_at: float) -> None:
        """Serve the connection ``owner``: its peer's name (``caller``, for
        handler contexts), its base flags (§1.6), its mux ids, its event
        loop, the handlers to run inline, its stream tables and its request
        settings.  ``open_calls`` stays the owner's to switch."""
        self.owner = owner
        self.caller = caller
        self.base_flags = base_flags
        self.ids = ids
        self.loop = loop
        self.clock = loop.time
        self.singles = singles
        self.singles_sub = singles_sub
        self.callers = callers
        self.callees = callees
        self.default_timeout = default_timeout
        self.queue_limit = queue_limit
        self.sweep_at = sweep_at

    def detach(self, owner: CoreOwner) -> None:
        """The connection lets go: hand the core back to ``owner`` (its
        wire); what the socket still delivers is not dispatched to
        streams, nothing queued is sent, and no call starts here."""
        self.owner = owner
        self.callers = self.callees = None
        self.open_calls = False
        self.direct = self.ready = None
        self._quiet_pending = False
        self.queue = []
        self.queued_bytes = 0
        self._waiting = None  # what the old connection's peer sent is not served
        self._slice = None

    # -- receiving

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """``asyncio.BufferedProtocol.get_buffer``: the parser's buffer, cut
        to fewer bytes while reads bring more frames than a turn's budget."""
        view = self.parser.get_buffer(sizehint)
        if self._read_max and len(view) > self._read_max:
            return view[:self._read_max]
        return view

    def buffer_updated(self, nbytes: int) -> None:
        """``asyncio.BufferedProtocol.buffer_updated``: parse and dispatch."""
        events = self.parser.buffer_updated(nbytes)
        if len(events) > self.turn_budget:
            self._read_max = max(READ_MIN, nbytes // 2)
        elif self._read_max and len(events) < self.turn_budget >> 2:
            self._read_max = 0 if self._read_max >= READ_WINDOW else 2 * self._read_max
        self._on_events(events)

    def socket_read(self, nbytes: int) -> None:
        """:meth:`buffer_updated` for the reader's transport to call itself:
        counts the bytes in ``bytes_in``, and hands an error in the peer's
        input to ``reader.input_failed(exc)`` instead of raising."""
        self.bytes_in += nbytes
        try:
            self.buffer_updated(nbytes)
        except Exception as exc:
            self.reader.input_failed(exc)

    def feed(self, data: Any) -> None:
        """Parse and dispatch bytes received some other way."""
        self._on_events(self.parser.feed(data))

    def feed_message(self, payload: Any) -> None:
        """Dispatch one whole binary WebSocket message that a server which
        does the framing itself received: one grid message or an OpMerged
        container (§4), within the turn's budget as a received frame is."""
        self._on_events([(_WS_BINARY, payload)])

    @property
    def input_waiting(self) -> bool:
        """True while received input waits for a later loop turn."""
        return self._held

    def drain(self) -> bool:
        """Go on with the input that waited, within a fresh turn's budget;
        True once nothing waits.

        Every message dispatched, control frame passed on and 4 KiB received
        costs one unit of ``turn_budget``; once the units since the last
        drain reach it, what is left of the input waits and the core tells
        its ``reader`` (``_input_waiting()``), which stops reading and calls
        drain() from a later loop turn -- so other connections have their
        turn first, and the peer's further bytes wait in the kernel.  A
        merged container of more than SLICE_CONTAINER messages is checked,
        then dispatched, in slices across turns; nothing of it is dispatched
        before all of it has been checked."""
        events = self._waiting
        self._spent = 0
        self._held = False
        self._waiting = None
        if self._slice is not None:
            work_slice(self)
            if self._slice is not None:
                wait_events(self, events, self._waiting_pos)
                return False
        if events is not None:
            run_events(self, events, self._waiting_pos)
        return not self._held

    def _on_events(self, events: list) -> None:
        if self._quiet_pending:
            self._input_after_direct()
        if self._held:  # input already waits: this goes behind it, in order
            if self._waiting is None:
                self._waiting, self._waiting_pos = events, 0
            else:
                self._waiting.extend(events)
            return
        run_events(self, events, 0)

    def _input_after_direct(self) -> None:
        # Input arrives in a later turn than the direct write before it, and
        # no frames were taken since: nothing else was queued in that turn,
        # so the next message may be written at once too.
        self._quiet_pending = False
        if not self.queue and self._turn_end is None:
            self.direct = self.ready

    def dispatch(self, m: Any) -> None:
        """Handle one decoded message."""
        dispatch_message(self, m)

    # -- sending

    def take_item(self, state: MuxState) -> bytes | None:
        """For a stream's reader (``async for`` over a caller's stream, or a
        handler's input): take the next buffered item of the stream whose
        :class:`MuxState` is ``state``, its credit owed to the sender (see
        :meth:`return_credit`); None, having done nothing, when the stream's
        own code must run (nothing buffered, the end marker, a stream ended or
        traced)."""
        if type(state) is not MuxState:
            raise TypeError(f"take_item() needs a MuxState, not {type(state).__name__}")
        items = state.items
        if not state.fast or not items or type(items[0]) is not bytes:
            return None
        item = items.popleft()
        stream_owe(self, state, len(item))
        return item  # type: ignore[no-any-return]

    def return_credit(self, state: MuxState, size: int) -> None:
        """One item of ``size`` bytes left the buffer of the stream whose
        :class:`MuxState` is ``state`` (taken by the stream's own code): its
        credit is owed to the sender (§8.4).  Owed credits are queued and
        written once ``flush_every`` are owed (for items smaller than
        ``EARLY_CREDIT_ITEM_MAX``, half that once they are as many as the
        items still buffered), so that the sender gets a batch back at once
        rather than one item's at a time; :meth:`release_credits` queues the
        rest (the reader calls it before it waits)."""
        if type(state) is not MuxState:
            raise TypeError(f"return_credit() needs a MuxState, not {type(state).__name__}")
        stream_owe(self, state, size)

    def release_credits(self, state: MuxState) -> None:
        """Queue every credit the stream whose :class:`MuxState` is ``state``
        owes its sender, one unblock each (written with the next flush).  A
        reader calls this before it waits for an item, so the sender is never
        left without credit while the reader waits."""
        if type(state) is not MuxState:
            raise TypeError(f"release_credits() needs a MuxState, not {type(state).__name__}")
        if state.owed <= 0:
            return
        q = self.queue
        first = not q
        stream_queue(self, state)  # queued together: the flush is asked for once, below
        if first:
            self.owner._schedule_flush()
        elif len(q) >= EARLY_FLUSH_MESSAGES or self.queued_bytes >= EARLY_FLUSH_BYTES:
            self.owner._flush_early()

    def send_item(self, state: MuxState, item: Any) -> bool:
        """For a stream's sender (``StreamOut.send``, ``Stream.send``): queue
        ``item`` on the stream whose :class:`MuxState` is ``state`` if it can
        leave at once -- stream open and untraced, a credit in hand, ``bytes``
        below LARGE_MESSAGE; False, having done nothing, otherwise."""
        if type(state) is not MuxState:
            raise TypeError(f"send_item() needs a MuxState, not {type(state).__name__}")
        if not state.fast or state.credits <= 0:
            return False
        if type(item) is not bytes or len(item) >= LARGE_MESSAGE or len(item) > self.max_payload:
            return False
        state.credits -= 1
        flags = self.base_flags | _FLAG_ZERO if len(item) == 0 else self.base_flags
        self.send_message(state.mux_id, state.next_send_seq(), 0, 0, state.item_op, flags, item)
        return True

    def send_message(self, mux_id: int, seq: int, deadline_ms: int, handler: int, op: int,
                     flags: int, payload: Any = None, subroute: bytes | None = None) -> None:
        """Encode one message and queue it (:meth:`send` of ``encode_message(...)``)."""
        self.send(_codec_py.encode_message(mux_id, seq, deadline_ms, handler, op, flags, payload,
                                           subroute))

    def send(self, msg: bytes) -> None:
        """Queue one encoded message; the first of a batch schedules a flush."""
        q = self.queue
        q.append(msg)
        self.queued_bytes += len(msg)
        if len(q) == 1:
            transport = self.direct
            if transport is not None and self.loop is not None:
                self.direct = None
                transport.write(self.take_frames(self.mask_key() if self.mask_key is not None
                                                 else None))
                if transport.get_write_buffer_size() <= self.write_limit:
                    self._quiet_pending = True  # settled by the next input
                elif self._turn_end is None:
                    self._turn_end = self.loop.call_soon(self.after_direct)
            else:
                self.owner._schedule_flush()
        elif len(q) >= EARLY_FLUSH_MESSAGES or self.queued_bytes >= EARLY_FLUSH_BYTES:
            # A full write's worth: let it leave now, so the peer works on it
            # while this side goes on producing the rest of the batch.
            self.owner._flush_early()

    def after_direct(self) -> None:
        """End of a turn that wrote a message at once: if nothing else was
        queued in it (a later message's end-of-turn flush decides
        otherwise), the next message may be written at once too."""
        self._turn_end = None
        self._quiet_pending = False
        if self.queue:
            return
        transport = self.ready
        if transport is None:
            return
        if transport.get_write_buffer_size() > self.write_limit:
            self.owner._flush()
        else:
            self.direct = transport

    def respond(self, mux_id: int, seq: int, result: Any, err: str | None) -> None:
        """Queue the OpResponse for a single request (§7 step 4)."""
        flags = self.base_flags | _FLAG_EOF
        if err is None and result is not None:
            if not isinstance(result, (bytes, bytearray, memoryview)):
                err = bad_reply_text(result)
            elif len(result) == 0:
                flags |= _FLAG_ZERO
            elif len(result) > self.max_payload:
                err = too_large_text("reply", len(result), self.max_payload)
        if err is not None:
            flags |= _FLAG_ERR
            result = err.encode("utf-8", "replace")
        elif type(result) is bytes and len(result) >= LARGE_MESSAGE:
            self.owner._send_large(mux_id, seq, 0, 0, _RESPONSE, flags, result, None)
            return
        self.send(_codec_py.encode_message(mux_id, seq, 0, 0, _RESPONSE, flags, result))

    def call(self, handler_id: int, payload: Any, timeout: float | None,
             subroute: bytes | None) -> Any:
        """Start a single request as ``Connection.request`` does and return
        the future of its reply.  The common case runs here in one step;
        anything else (calls not open, a handler id or timeout to check, an
        inherited deadline, a full send queue) is ``owner._call(...)``'s."""
        if (not self.open_calls or type(handler_id) is not int or not 0 < handler_id < 256
                or len(self.queue) >= self.queue_limit or self.context_var.get() is not None):
            return self.owner._call(handler_id, payload, timeout, subroute)
        if timeout is None:
            timeout = self.default_timeout
        elif type(timeout) is not float or not timeout >= 0.001:
            return self.owner._call(handler_id, payload, timeout, subroute)
        fut = self.loop.create_future()
        try:
            self.request(fut, handler_id, payload, timeout, subroute)
        except Exception as exc:
            return self.owner._failed(exc)
        if self.sweep_at > time.monotonic() + timeout:
            self.owner._schedule_sweep(timeout)
        return fut

    def request(self, fut: Any, handler_id: int, payload: Any, timeout: float,
                subroute: bytes | None) -> int:
        """Send an OpRequest whose response resolves ``fut``; it fails with
        TimeoutError once ``timeout`` seconds pass (see :meth:`expire`).
        Returns the new mux id."""
        deadline_ms = int(timeout * 1000)
        if deadline_ms > MAX_DEADLINE_MS:
            deadline_ms = MAX_DEADLINE_MS
        flags = self.base_flags | _FLAG_EOF
        if payload is not None and checked_len(payload, self.max_payload) == 0:
            flags |= _FLAG_ZERO
        if subroute is not None:
            flags |= _FLAG_SUBROUTE
        ids = self.ids
        if ids is None:  # not attached: as the compiled twin says it
            raise AttributeError("'NoneType' object has no attribute 'next'")
        mux_id = ids.next()
        large = (type(payload) is bytes and len(payload) >= LARGE_MESSAGE
                 and type(handler_id) is int and 0 <= handler_id <= 255)
        if not large:
            msg = _codec_py.encode_message(mux_id, 0, deadline_ms, handler_id, _REQUEST, flags,
                                           payload, subroute)
        self.pending[mux_id] = fut
        self._track(time.monotonic() + timeout, mux_id)
        if large:  # framed off the event loop by the owner (a Connection)
            self.owner._send_large(mux_id, 0, deadline_ms, handler_id, _REQUEST, flags, payload,
                                   subroute)
        else:
            self.send(msg)
        return mux_id

    def _track(self, at: float, mux_id: int) -> None:
        track_deadline(self, at, mux_id)

    def _compact(self) -> None:
        compact_deadlines(self)

    def expire(self) -> float | None:
        """Fail every pending request whose deadline has passed with
        TimeoutError; return the next deadline (monotonic) or None."""
        return expire_deadlines(self)

    def fail_all(self, exc_type: Any) -> None:
        """Fail every pending request with ``exc_type()`` and forget them."""
        pending, self.pending = self.pending, {}
        self._fifo = deque()
        self._deadlines = []
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(exc_type())

    def take_frames(self, mask_key: bytes | None) -> bytes | None:
        """Everything queued, as WebSocket frames ready to write: one plain
        frame for a single message, OpMerged containers otherwise (§4).
        ``mask_key`` (4 bytes) masks every frame, as a client must."""
        q = self.queue
        if not q:
            return None
        self.queue = []
        self.queued_bytes = 0
        self._quiet_pending = False  # frames queued after a direct write: a busy turn
        self.msgs_out += len(q)
        data = _codec_py.encode_frames(q, mask_key)
        self.bytes_out += len(data)
        return data

    def take_messages(self) -> list | None:
        """Everything queued, as WebSocket message payloads for a server that
        does the framing itself: batched exactly as :meth:`take_frames`
        batches (one plain message, or OpMerged containers), without frame
        headers.  ``bytes_out`` counts the payloads."""
        q = self.queue
        if not q:
            return None
        self.queue = []
        self.queued_bytes = 0
        self._quiet_pending = False  # frames queued after a direct write: a busy turn
        self.msgs_out += len(q)
        out = _codec_py.encode_batches(q)
        self.bytes_out += sum(len(body) for body in out)
        return out
