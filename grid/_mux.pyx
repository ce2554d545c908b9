# cython: language_level=3, annotation_typing=False
"""Compiled twin of :mod:`grid._mux_py`: the per-mux bookkeeping a connection
needs on its hot path (docs/protocol.md §3.4, §8.3, §8.4), and
:class:`ConnCore`, the connection's core between the socket and the asyncio
layer.

Same names, signatures, results and exception texts as the pure twin; the
counters are C integers that wrap exactly where the wire fields do.
ConnCore drives the compiled codec through its C entry points (cimported from
grid._codec): parser input straight into frames, frames into Messages.
"""

cimport cython
from cpython.bytes cimport (
    PyBytes_AS_STRING,
    PyBytes_CheckExact,
    PyBytes_FromStringAndSize,
    PyBytes_GET_SIZE,
)
from cpython.contextvars cimport PyContextVar_Reset, PyContextVar_Set
from cpython.contextvars cimport get_value as _context_value
from cpython.list cimport PyList_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.long cimport PyLong_AsLongLongAndOverflow, PyLong_Check
from cpython.number cimport PyNumber_Index
from libc.stdint cimport INT64_MAX, int64_t, uint8_t, uint32_t, uint64_t

cdef extern from "Python.h":
    const Py_ssize_t PY_SSIZE_T_MAX

from grid._codec cimport (
    FrameParser,
    Message,
    _Tuple,
    _build,
    _decode_tuple,
    _payload_of,
    _read_bin,
    _trailers,
    encode_message_c,
    frame_message_c,
    encode_split_c,
)
from grid.includes.clock cimport grid_monotonic

import heapq
from asyncio import InvalidStateError as _InvalidStateError
import inspect as _inspect
from contextvars import ContextVar as _ContextVar
import time as _time

from grid._codec import decode_messages, encode_batches, encode_frames, encode_message
from grid._codec import mask_key as _codec_mask_key
from grid._consts import SLOW_HANDLER
from grid.errors import (
    OUT_OF_SEQUENCE_TEXT,
    REQUEST_TIMEOUT_TEXT,
    GridError,
    IncorrectSequence,
    ProtocolError,
    RemoteError,
    bad_reply_text,
    checked_len,
    payload_limit,
    too_large_text,
)

__all__ = ["MuxIdAllocator", "MuxState", "ConnCore"]

cdef object _U32_MASK = 0xFFFFFFFF
cdef object _U64_MASK = 0xFFFFFFFFFFFFFFFF


# MuxIdAllocator and MuxState.
include "_mux_state.pxi"


# ---------------------------------------------------------------- the per-connection core

# C values, generated from grid/_consts.py by tools/gen_consts.py.
include "_consts.pxi"

cdef object _monotonic = _time.monotonic  # the clock request deadlines are kept on


cdef inline double _now() except? -1.0:
    """time.monotonic(), in C where the platform allows."""
    cdef double t = grid_monotonic()
    return t if t >= 0.0 else <double>_monotonic()

cdef double _SLOW_HANDLER = SLOW_HANDLER
cdef object _heappush = heapq.heappush
cdef object _heappop = heapq.heappop
cdef object _heapify = heapq.heapify
cdef object _decode_messages = decode_messages
cdef object _encode_message = encode_message
cdef object _encode_frames = encode_frames
cdef object _encode_batches = encode_batches
cdef object _pool_mask_key = _codec_mask_key  # the codec's key pool, drawn from in C


# The stream fast paths (module functions on ConnCore and MuxState).
include "_mux_stream.pxi"

# The direct write of a quiet connection (module functions on ConnCore).
include "_mux_write.pxi"

# Sync handlers run inline (a module function on ConnCore).
include "_mux_inline.pxi"

# Request deadlines: a C ring in arrival order, a heap for the rest.
include "_mux_deadlines.pxi"


cdef int _settle_call(object fut, bint out_of_sequence, bint is_error, object body) except -1:
    """Resolve a pending call's future with its response; a future already
    done (cancelled by its caller) drops it (§3.4)."""
    if not out_of_sequence and not is_error:
        try:  # one call instead of done() first: a done future refuses
            fut.set_result(body)
        except _InvalidStateError:
            pass
        return 0
    if fut.done():
        return 0
    if out_of_sequence:
        fut.set_exception(GridError(OUT_OF_SEQUENCE_TEXT))
    else:
        fut.set_exception(RemoteError(body.decode("utf-8", "replace") if body else ""))
    return 0


@cython.annotation_typing(False)
def _core_signature(owner: CoreOwner, server: bool, max_message_size: int,
                    context_var: Any) -> None:
    pass


@cython.final
cdef class ConnCore:
    """The core of one live connection, below the asyncio layer: the pure
    twin's :class:`grid._mux_py.ConnCore`, driving the compiled codec through
    its C entry points; its owner interface is declared in grid/_mux.pxd."""

    # The pure twin's slots, as public attributes; `parser` and `ids` are the
    # compiled FrameParser / MuxIdAllocator (called through C), the counters
    # C integers.  Otherwise it is the pure twin's code, statement by
    # statement, so that callbacks, futures and errors behave the same.
    __signature__ = _inspect.signature(_core_signature)

    def __init__(self, owner: CoreOwner, server: bool, max_message_size: int,
                 context_var: Any) -> None:
        self.owner = owner
        self.parser = FrameParser(server, max_message_size, split_large=True)
        self.context_var = context_var
        self.max_payload = payload_limit(max_message_size)
        self.pending = {}
        self.queue = []
        self.queued_bytes = 0
        self.msgs_in = 0
        self.msgs_out = 0
        self.bytes_out = 0
        self.bytes_in = 0
        self.ids = None
        self.base_flags = 0
        self.caller = ""
        self.singles = {}
        self.singles_sub = {}
        self.clock = None
        self.callers = None
        self.callees = None
        self.open_calls = False
        self.direct = None
        self.ready = None
        self.mask_key = None
        self.write_limit = PY_SSIZE_T_MAX
        self.loop = None
        self.default_timeout = 60.0
        self.queue_limit = 65535
        self.sweep_at = float("inf")
        self._deadlines = []
        self.reader = owner
        self.turn_budget = TURN_BUDGET

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

    def __dealloc__(self):
        PyMem_Free(self._fifo)

    @property
    def loop(self):
        """The event loop the futures of :meth:`call` are made on."""
        return self._loop

    @loop.setter
    def loop(self, value):
        self._loop = value
        self._create_future = value.create_future if value is not None else None
        self._call_soon = value.call_soon if value is not None else None
        self._after_direct = self.after_direct if value is not None else None

    # -- receiving

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """``asyncio.BufferedProtocol.get_buffer``."""
        if self.parser is None:  # the C call below does not check for None
            raise AttributeError("'NoneType' object has no attribute 'get_buffer'")
        view = self.parser._get_buffer()
        if self._read_max and len(view) > self._read_max:
            return view[:self._read_max]
        return view

    def buffer_updated(self, nbytes: int) -> None:
        """``asyncio.BufferedProtocol.buffer_updated``: parse and dispatch."""
        self._buffer_updated(nbytes)

    def socket_read(self, Py_ssize_t nbytes) -> None:
        """:meth:`buffer_updated` for the reader's transport (see the pure twin)."""
        self.bytes_in += nbytes
        try:
            self._buffer_updated(nbytes)
        except Exception as exc:
            self.reader.input_failed(exc)

    cdef int _buffer_updated(self, Py_ssize_t nbytes) except -1:
        # Binary frames are dispatched where they lie in the read window
        # (_frame_sink) while nothing waits and the turn's budget lasts; the
        # rest come back as events, copied out of the window, in order.
        cdef list events
        cdef Py_ssize_t got
        if self.parser is None:  # C calls below do not check for None
            raise AttributeError("'NoneType' object has no attribute 'buffer_updated'")
        self._sunk = 0
        events = self.parser._updated_sink(nbytes, _frame_sink, self)
        if self._sink_error is not None:
            exc, self._sink_error = self._sink_error, None
            raise exc  # what follows the frame that failed is dropped, as in _run
        got = PyList_GET_SIZE(events) + self._sunk
        if got > self.turn_budget:
            self._read_max = max(READ_MIN, <Py_ssize_t>nbytes // 2)
        elif self._read_max and got < self.turn_budget >> 2:
            self._read_max = 0 if self._read_max >= READ_WINDOW else 2 * self._read_max
        if self._slice is not None and not self._held:
            return self._wait(events, 0)  # a container being worked through goes first
        self._on_events(events)
        return 0

    def feed(self, data: Any) -> None:
        """Parse and dispatch bytes received some other way."""
        if self.parser is None:
            raise AttributeError("'NoneType' object has no attribute 'feed'")
        self._on_events(self.parser._feed(data))

    def feed_message(self, payload: Any) -> None:
        """Dispatch one whole binary WebSocket message (see the pure twin)."""
        self._on_events([(WS_BINARY, payload)])

    @property
    def input_waiting(self) -> bool:
        """True while received input waits for a later loop turn."""
        return self._held

    def drain(self) -> bool:
        """Go on with the input that waited, within a fresh turn's budget;
        True once nothing waits (see the pure twin)."""
        cdef list events = self._waiting
        self._spent = 0
        self._held = False
        self._waiting = None
        if self._slice is not None:
            self._work_slice()
            if self._slice is not None:
                self._wait(events, self._waiting_pos)
                return False
        if events is not None:
            self._run(events, self._waiting_pos)
        return not self._held

    cdef int _on_events(self, list events) except -1:
        if self._quiet_pending:
            _input_after_direct(self)
        if self._held:  # input already waits: this goes behind it, in order
            if self._waiting is None:
                self._waiting = events
                self._waiting_pos = 0
            else:
                self._waiting.extend(events)
            return 0
        return self._run(events, 0)

    cdef int _run(self, list events, Py_ssize_t i) except -1:
        # The budget check is one compare per WebSocket message; a small
        # merged container counts whole, a large one is worked in slices.
        cdef Py_ssize_t n = PyList_GET_SIZE(events)
        while i < n:
            if self._spent >= self.turn_budget:
                return self._wait(events, i)
            opcode, payload = events[i]
            i += 1
            if opcode == WS_BINARY:
                self._on_binary(payload)
                if self._slice is not None:
                    return self._wait(events, i)
            else:
                self._spent += TURN_SLOW_COST
                self.owner._on_control(opcode, payload)
        return 0

    cdef int _wait(self, list events, Py_ssize_t i) except -1:
        # Keep events[i:] for drain() and have the reader stop reading and
        # call drain() from a later turn: other connections go first, and the
        # unread bytes stay in the kernel (TCP flow control slows the peer).
        if events is not None and i < PyList_GET_SIZE(events):
            if self._waiting is None:
                self._waiting = events
                self._waiting_pos = i
            else:  # drain() left a slice unfinished and had events behind it
                self._waiting.extend(events[i:])
        if not self._held:
            self._held = True
            self.reader._input_waiting()
        return 0

    cdef int _on_binary(self, object payload) except -1:
        """Decode one binary message (a grid message or a container) and
        dispatch what it holds."""
        cdef list msgs
        cdef Py_ssize_t i
        if isinstance(payload, (bytearray, memoryview)):
            payload = bytes(payload)  # a caller's buffer: sliced as received frames are
        if not PyBytes_CheckExact(payload):  # a SplitFrame (one large message)
            msgs = _decode_messages(payload)
            self.msgs_in += len(msgs)
            self._spent += len(msgs) + (len(payload) >> TURN_BYTE_SHIFT)
            for i in range(len(msgs)):
                self._dispatch(msgs[i])
            return 0
        return self._on_bytes(<const uint8_t*>PyBytes_AS_STRING(payload), PyBytes_GET_SIZE(payload),
                              <bytes>payload)

    cdef int _on_bytes(self, const uint8_t* p, Py_ssize_t n, bytes owner) except -1:
        # decode_messages() and dispatch() fused, without a Message object
        # for a response (the bulk of a caller's traffic): every message in
        # p[0:n] is decoded and checked first, exactly as decode_messages()
        # checks it, and only then dispatched, so a bad container dispatches
        # nothing.  p[0:n] is `owner`'s, or (owner None) the read window's,
        # valid during this call only: a large container kept for later
        # turns is copied first.
        cdef _Tuple t
        cdef _Inner one
        cdef _Inner* inner
        cdef Py_ssize_t sub, end, pos, start, stop, i, got = 0
        cdef uint64_t count
        _decode_tuple(p, n, &t)
        end = _trailers(p, n, t.f[5], t.stop, &sub)
        self._spent += n >> TURN_BYTE_SHIFT
        if t.f[4] != OP_MERGED:
            self.msgs_in += 1
            self._spent += 1
            one.base = 0
            one.t = t
            one.sub = sub
            return self._dispatch_at(p, &one)
        count = t.f[1]
        pos = t.stop
        if count > SLICE_CONTAINER:
            # Checked, then dispatched, a budget's worth per turn.
            if owner is None:
                owner = PyBytes_FromStringAndSize(<const char*>p, n)
            self._slice = owner
            self._slice_start = self._slice_pos = pos
            self._slice_end = end
            self._slice_count = count
            self._slice_done = 0
            self._slice_checked = False
            return self._work_slice()
        # Each bin takes at least 2 bytes: no more entries than that can exist.
        inner = <_Inner*>PyMem_Malloc(<size_t>(min(count, <uint64_t>((end - pos) // 2 + 1)))
                                      * sizeof(_Inner))
        if inner == NULL:
            raise MemoryError()
        try:
            while <uint64_t>got < count:
                if pos >= end:
                    raise ProtocolError(f"merged container announces {count} messages, holds {got}")
                stop = _read_bin(p, pos, end, "merged message", &start)
                _decode_tuple(p + start, stop - start, &inner[got].t)
                _trailers(p + start, stop - start, inner[got].t.f[5], inner[got].t.stop,
                          &inner[got].sub)
                inner[got].base = start
                got += 1
                pos = stop
            self.msgs_in += got
            self._spent += got
            for i in range(got):
                self._dispatch_at(p, &inner[i])
        finally:
            PyMem_Free(inner)
        return 0

    cdef int _work_slice(self) except -1:
        # A large container, within what is left of the turn's budget: first
        # every bin is checked (as _on_bytes checks a small one: a bad
        # container dispatches nothing), then the bins are dispatched.  Each
        # bin is decoded again for dispatch instead of being kept: an _Inner
        # per bin of a container of millions would be a large allocation.
        cdef bytes payload = self._slice
        cdef const uint8_t* p = <const uint8_t*>PyBytes_AS_STRING(payload)
        cdef Py_ssize_t pos = self._slice_pos, end = self._slice_end, start, stop
        cdef _Inner one
        while not self._slice_checked:
            if self._spent >= self.turn_budget:
                self._slice_pos = pos
                return 0
            if self._slice_done == self._slice_count:
                self._slice_checked = True
                self._slice_done = 0
                pos = self._slice_start
                break
            if pos >= end:
                self._slice = None
                raise ProtocolError(f"merged container announces {self._slice_count} messages, "
                                    f"holds {self._slice_done}")
            stop = _read_bin(p, pos, end, "merged message", &start)
            _decode_tuple(p + start, stop - start, &one.t)
            _trailers(p + start, stop - start, one.t.f[5], one.t.stop, &one.sub)
            self._slice_done += 1
            if self._slice_done % TURN_CHECKS_PER_UNIT == 0:
                self._spent += 1
            pos = stop
        while self._slice_done < self._slice_count:
            if self._spent >= self.turn_budget or self._slice is not payload:
                self._slice_pos = pos
                return 0
            stop = _read_bin(p, pos, end, "merged message", &start)
            _decode_tuple(p + start, stop - start, &one.t)
            _trailers(p + start, stop - start, one.t.f[5], one.t.stop, &one.sub)
            one.base = start
            pos = stop
            self._slice_done += 1
            self.msgs_in += 1
            self._spent += 1
            self._dispatch_at(p, &one)
        if self._slice is payload:
            self._slice = None
        return 0

    cdef int _dispatch_at(self, const uint8_t* p, _Inner* e) except -1:
        """dispatch() of the message decoded at p + e.base."""
        cdef const uint8_t* m = p + e.base
        cdef uint64_t flags = e.t.f[5]
        cdef uint64_t op = e.t.f[4]
        if op != OP_RESPONSE:
            # A stream's steady traffic -- credits both ways, items to the
            # caller -- straight into the stream when nothing about it needs
            # the stream's own code (which gets every other case, errors too).
            if op == OP_UNBLOCK_SRV_MUX and self.callees is not None:
                srv = self.callees.get(e.t.f[0])
                if srv is not None and _stream_credit(self, srv.state, e.t.f[1]):
                    return 0
            elif op == OP_UNBLOCK_CL_MUX and self.callers is not None:
                st = self.callers.get(e.t.f[0])
                if st is not None and _stream_credit(self, st._state, e.t.f[1]):
                    return 0
            elif ((op == OP_MUX_SERVER_MSG or op == OP_MUX_CLIENT_MSG)
                    and not flags & (FLAG_PAYLOAD_IS_ERR | FLAG_EOF)
                    and (e.t.stop > e.t.start or flags & FLAG_PAYLOAD_IS_ZERO)):
                if op == OP_MUX_SERVER_MSG:
                    if self.callers is not None:
                        st = self.callers.get(e.t.f[0])
                        if st is not None and _stream_item(self, st._state, m, e):
                            return 0
                elif self.callees is not None:
                    srv = self.callees.get(e.t.f[0])
                    if srv is not None and _stream_item(self, srv.state, m, e):
                        return 0
            elif op == OP_REQUEST and e.sub < 0:  # a sync handler's call, without a Message
                entry = self.singles.get(e.t.f[3])
                if entry is not None and not entry.is_async:
                    return _run_inline(self, entry, e.t.f[3], e.t.f[0], e.t.f[1], e.t.f[2],
                                       _payload_of(m, &e.t), None, p, e)
            return self._dispatch(_build(m, &e.t, e.sub))
        fut = self.pending.pop(e.t.f[0], None)
        if fut is None:
            return 0  # unknown: dropped (§3.4)
        return _settle_call(fut, e.t.f[1] != 0, flags & FLAG_PAYLOAD_IS_ERR, _payload_of(m, &e.t))

    def dispatch(self, m: Any) -> None:
        """Handle one decoded message."""
        # The compiled core reads the compiled Message's fields directly, so
        # it takes nothing else (the pure core duck-types; grid only ever
        # hands a core messages decoded by its own twin).
        if type(m) is not Message:
            raise TypeError(f"ConnCore.dispatch() needs a grid._codec.Message, not {type(m).__name__}")
        self._dispatch(<Message>m)

    cdef int _dispatch(self, Message m) except -1:
        op = m.op
        if op == OP_RESPONSE:
            fut = self.pending.pop(m.mux_id, None)
            if fut is None or fut.done():
                return 0  # late or unknown: dropped (§3.4)
            return _settle_call(fut, m.seq != 0, m.flags & FLAG_PAYLOAD_IS_ERR, m.payload)
        if op == OP_REQUEST:
            sub = m.subroute
            entry = self.singles.get(m.handler) if sub is None else self.singles_sub.get(sub)
            if entry is not None and not entry.is_async:
                return _run_inline(self, entry, m.handler, m.mux_id, m.seq, m.deadline_ms,
                                   m.payload, m, NULL, NULL)
        self._spent += TURN_SLOW_COST - 1  # Python code of the stream or the connection
        if op == OP_MUX_SERVER_MSG or op == OP_UNBLOCK_CL_MUX:
            if self.callers is not None:
                st = self.callers.get(m.mux_id)
                if st is not None:
                    st._on_message(m)
                    return 0
        elif op == OP_UNBLOCK_SRV_MUX or op == OP_MUX_CLIENT_MSG:
            if self.callees is not None:
                srv = self.callees.get(m.mux_id)
                if srv is not None:
                    srv.on_message(m)
                    return 0
        self.owner._on_message(m)
        return 0

    # -- sending

    def send(self, msg: bytes) -> None:
        """Queue one encoded message; the first of a batch schedules a flush."""
        self._send(msg)

    def take_item(self, state: MuxState) -> bytes | None:
        """Take a stream's next item, its credit owed (see the pure twin)."""
        if type(state) is not MuxState:
            raise TypeError(f"take_item() needs a MuxState, not {type(state).__name__}")
        return _stream_take(self, <MuxState>state)

    def return_credit(self, state: MuxState, size: int) -> None:
        """One credit of a stream owed to its sender, for an item of ``size``
        bytes (see the pure twin)."""
        if type(state) is not MuxState:
            raise TypeError(f"return_credit() needs a MuxState, not {type(state).__name__}")
        _stream_owe(self, <MuxState>state, size)

    def release_credits(self, state: MuxState) -> None:
        """Queue the credits a stream owes its sender (see the pure twin)."""
        if type(state) is not MuxState:
            raise TypeError(f"release_credits() needs a MuxState, not {type(state).__name__}")
        _stream_release(self, <MuxState>state)

    def send_item(self, state: MuxState, item: Any) -> bool:
        """Queue a stream item at once if it can leave now (see the pure twin)."""
        if type(state) is not MuxState:
            raise TypeError(f"send_item() needs a MuxState, not {type(state).__name__}")
        return _stream_send(self, <MuxState>state, item)

    def send_message(self, mux_id: int, seq: int, deadline_ms: int, handler: int, op: int,
                     flags: int, payload: Any = None, subroute: bytes | None = None) -> None:
        """Encode one message and queue it (:meth:`send` of ``encode_message(...)``)."""
        self._send_message(mux_id, seq, deadline_ms, handler, op, flags, payload, subroute)

    cdef int _send_message(self, object mux_id, object seq, object deadline_ms, object handler,
                           object op, object flags, object payload, object subroute) except -1:
        cdef int o1 = 0, o2 = 0, o3 = 0, o4 = 0, o5 = 0
        cdef long long s = -1, d = -1, h = -1, o = -1, f = -1
        if (type(mux_id) is int and type(seq) is int and type(deadline_ms) is int
                and type(handler) is int and type(op) is int and type(flags) is int
                and 0 <= mux_id <= _U64_MASK):
            s = PyLong_AsLongLongAndOverflow(seq, &o1)
            d = PyLong_AsLongLongAndOverflow(deadline_ms, &o2)
            h = PyLong_AsLongLongAndOverflow(handler, &o3)
            o = PyLong_AsLongLongAndOverflow(op, &o4)
            f = PyLong_AsLongLongAndOverflow(flags, &o5)
        if (not (o1 or o2 or o3 or o4 or o5) and 0 <= s <= 0xFFFFFFFF and 0 <= d <= 0xFFFFFFFF
                and 0 <= h <= 0xFF and 0 <= o <= 0xFF and 0 <= f <= 0xFF):
            # In range: the C entry point, without the Python call's argument handling.
            self._send(encode_message_c(mux_id, <uint64_t>s, <uint64_t>d, <uint64_t>h,
                                        <uint64_t>o, <uint64_t>f, payload, subroute))
        else:  # let the Python-level encoder raise the pure twin's error
            self._send(_encode_message(mux_id, seq, deadline_ms, handler, op, flags, payload,
                                       subroute))
        return 0

    cdef int _send(self, object msg) except -1:
        cdef list q = self.queue
        q.append(msg)
        self.queued_bytes += len(msg)
        if PyList_GET_SIZE(q) == 1:
            if self.direct is not None and self._call_soon is not None:
                _write_direct(self)
            else:
                self.owner._schedule_flush()
        elif PyList_GET_SIZE(q) >= EARLY_FLUSH_MESSAGES or self.queued_bytes >= EARLY_FLUSH_BYTES:
            # A full write's worth: let it leave now, so the peer works on it
            # while this side goes on producing the rest of the batch.
            self.owner._flush_early()
        return 0

    def after_direct(self) -> None:
        """End of a turn that wrote a message at once (see the pure twin)."""
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
        self._respond(mux_id, seq, result, err)

    cdef int _respond(self, object mux_id, object seq, object result, object err) except -1:
        flags = self.base_flags | FLAG_EOF
        if err is None and result is not None:
            if not isinstance(result, (bytes, bytearray, memoryview)):
                err = bad_reply_text(result)
            elif len(result) == 0:
                flags |= FLAG_PAYLOAD_IS_ZERO
            elif len(result) > self.max_payload:
                err = too_large_text("reply", len(result), self.max_payload)
        if err is not None:
            flags |= FLAG_PAYLOAD_IS_ERR
            result = err.encode("utf-8", "replace")
        elif PyBytes_CheckExact(result) and PyBytes_GET_SIZE(result) >= LARGE_MESSAGE:
            self.owner._send_large(mux_id, seq, 0, 0, OP_RESPONSE, flags, result, None)
            return 0
        self._send_message(mux_id, seq, 0, 0, OP_RESPONSE, flags, result, None)
        return 0

    def call(self, handler_id: int, payload: Any, timeout: float | None,
             subroute: bytes | None) -> Any:
        """Start a single request as ``Connection.request`` does (see the pure twin)."""
        cdef int overflow = 0
        cdef long long hid = 0
        cdef double t
        if self.open_calls and type(handler_id) is int:
            hid = PyLong_AsLongLongAndOverflow(handler_id, &overflow)
        if (not self.open_calls or overflow or not 0 < hid < 256
                or PyList_GET_SIZE(self.queue) >= self.queue_limit
                or self._serving_call()):
            return self.owner._call(handler_id, payload, timeout, subroute)
        if timeout is None:
            t = self.default_timeout
        elif type(timeout) is float and <double>timeout >= 0.001:
            t = <double>timeout
        else:
            return self.owner._call(handler_id, payload, timeout, subroute)
        fut = self._create_future()
        try:
            self._request(fut, handler_id, payload, t, subroute)
        except Exception as exc:
            return self.owner._failed(exc)
        if self.sweep_at > self._last_at:
            self.owner._schedule_sweep(t)
        return fut

    cdef bint _serving_call(self) except -1:
        # True while a handler runs in this context (its deadline bounds calls).
        var = self.context_var
        if type(var) is _ContextVar:
            return _context_value(var) is not None
        return var.get() is not None

    def request(self, fut: Any, handler_id: int, payload: Any, timeout: float,
                subroute: bytes | None) -> int:
        """Send an OpRequest whose response resolves ``fut``; it fails with
        TimeoutError once ``timeout`` seconds pass (see :meth:`expire`).
        Returns the new mux id."""
        return self._request(fut, handler_id, payload, timeout, subroute)

    cdef object _request(self, object fut, object handler_id, object payload, object timeout,
                         object subroute):
        cdef double t
        cdef int overflow = 0
        cdef long long h = -1, bf = -1
        cdef uint64_t flags_c, mid
        if (type(timeout) is float and 0.0 <= <double>timeout < 4294967.0
                and type(handler_id) is int and type(self.base_flags) is int
                and PyBytes_CheckExact(payload) and PyBytes_GET_SIZE(payload) < LARGE_MESSAGE
                and PyBytes_GET_SIZE(payload) <= self.max_payload
                and (subroute is None or PyBytes_CheckExact(subroute)) and self.ids is not None):
            h = PyLong_AsLongLongAndOverflow(handler_id, &overflow)
            if not overflow:
                bf = PyLong_AsLongLongAndOverflow(self.base_flags, &overflow)
        if not overflow and 0 <= h <= 255 and 0 <= bf <= 0xFF:
            # The usual request, all in C: a bytes payload, fields in range.
            t = <double>timeout
            flags_c = <uint64_t>bf | FLAG_EOF
            if PyBytes_GET_SIZE(payload) == 0:
                flags_c |= FLAG_PAYLOAD_IS_ZERO
            if subroute is not None:
                flags_c |= FLAG_SUBROUTE
            mid = self.ids._next()
            msg = encode_message_c(mid, 0, <uint64_t>(t * 1000), <uint64_t>h, OP_REQUEST, flags_c,
                                   payload, subroute)
            mux_id = mid
            self.pending[mux_id] = fut
            self._track(_now() + t, mid)
            self._send(msg)
            return mux_id
        deadline_ms = int(timeout * 1000)
        if deadline_ms > 0xFFFFFFFF:
            deadline_ms = 0xFFFFFFFF
        flags = self.base_flags | FLAG_EOF
        if payload is not None and checked_len(payload, self.max_payload) == 0:
            flags |= FLAG_PAYLOAD_IS_ZERO
        if subroute is not None:
            flags |= FLAG_SUBROUTE
        if self.ids is None:  # the C call below does not check for None
            raise AttributeError("'NoneType' object has no attribute 'next'")
        mux_id = self.ids._next()
        if (PyBytes_CheckExact(payload) and PyBytes_GET_SIZE(payload) >= LARGE_MESSAGE
                and type(handler_id) is int and 0 <= handler_id <= 255 and deadline_ms >= 0):
            # Framed off the event loop by the owner (a Connection).
            self.pending[mux_id] = fut
            self._track(_now() + timeout, mux_id)
            self.owner._send_large(mux_id, 0, deadline_ms, handler_id, OP_REQUEST, flags, payload,
                                   subroute)
            return mux_id
        if type(handler_id) is int and 0 <= handler_id <= 255 and deadline_ms >= 0:
            # In range: the C entry point, without the Python call's argument handling.
            msg = encode_message_c(mux_id, 0, deadline_ms, handler_id, OP_REQUEST, flags,
                                   payload, subroute)
        else:  # let the Python-level encoder raise the pure twin's error
            msg = _encode_message(mux_id, 0, deadline_ms, handler_id, OP_REQUEST, flags,
                                  payload, subroute)
        self.pending[mux_id] = fut
        self._track(_now() + timeout, mux_id)
        self._send(msg)
        return mux_id

    cdef int _track(self, double at, uint64_t mux_id) except -1:
        return _track_deadline(self, at, mux_id)

    def _compact(self) -> None:
        _compact_deadlines(self)

    def expire(self) -> float | None:
        """Fail every pending request whose deadline has passed with
        TimeoutError; return the next deadline (monotonic) or None."""
        return _expire_deadlines(self)

    def fail_all(self, exc_type: Any) -> None:
        """Fail every pending request with ``exc_type()`` and forget them."""
        pending, self.pending = self.pending, {}
        self._fifo_len = 0
        self._fifo_head = 0
        self._deadlines = []
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(exc_type())

    def take_frames(self, mask_key: bytes | None) -> bytes | None:
        """Everything queued, as WebSocket frames ready to write: one plain
        frame for a single message, OpMerged containers otherwise (§4).
        ``mask_key`` (4 bytes) masks every frame, as a client must."""
        return self._take_frames(mask_key)

    cdef object _take_frames(self, object mask_key):
        cdef list q = self.queue
        if not q:
            return None
        self.queue = []
        self.queued_bytes = 0
        self._quiet_pending = False  # frames queued after a direct write: a busy turn
        self.msgs_out += PyList_GET_SIZE(q)
        data = _encode_frames(q, mask_key)
        self.bytes_out += len(data)
        return data

    def take_messages(self) -> list | None:
        """Everything queued, as message payloads (see the pure twin)."""
        cdef list q = self.queue
        cdef list out
        cdef Py_ssize_t total = 0
        if not q:
            return None
        self.queue = []
        self.queued_bytes = 0
        self._quiet_pending = False
        self.msgs_out += len(q)
        out = _encode_batches(q)
        for body in out:
            total += len(body)
        self.bytes_out += total
        return out


del _allocator_signature, _state_signature, _core_signature
