# Declarations of the compiled mux bookkeeping and connection core
# (grid/_mux.pyx).  The Python surface is the pure twin's (grid/_mux_py.py);
# the cdef methods are the same operations for compiled callers, without
# Python-level argument handling.

cimport cython
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t

from grid._codec cimport FrameParser, Message, _Tuple


@cython.final
cdef class MuxIdAllocator:
    cdef uint64_t _last             # id handed out most recently (start before the first)

    cdef uint64_t _next(self) except? 0


@cython.final
cdef class MuxState:
    # Fixed-width counters (§3.4, §8.3, §8.4).  Readable and writable from
    # Python; assigning a value outside the C type raises OverflowError.
    cdef public uint64_t mux_id
    cdef public uint32_t send_seq   # Seq of the next counted outgoing message (wraps at 2**32)
    cdef public uint32_t recv_seq   # Seq the next checked incoming message must carry
    cdef public int64_t credits     # data messages this side may still send
    cdef public object waiter       # future of a sender waiting for credit, or None
    # A stream's receiving end, for ConnCore's fast paths (set up by
    # grid/_stream_flow.py's stream_state; see MuxState's docstring).
    cdef public object items        # received items not yet taken (a deque), or None
    cdef public object item_waiter  # future of the reader waiting for an item, or None
    cdef public Py_ssize_t capacity # items `items` may hold; 0 once no more may arrive
    cdef public Py_ssize_t received # items received so far
    cdef public Py_ssize_t owed         # credits earned (items taken) and not yet queued
    cdef public Py_ssize_t flush_every  # queue and write the owed credits once this many
    cdef public int credit_op       # op that returns one credit (UnblockSrvMux / UnblockClMux)
    cdef public int item_op         # op that carries one item (MuxClientMsg / MuxServerMsg)
    cdef public bint fast           # open and untraced: ConnCore may move items and credits

    cdef uint32_t _next_send_seq(self) except? 0xFFFFFFFF
    cdef int _check_recv(self, uint32_t seq) except -1
    cdef bint _take_credit(self) except -1


cdef struct _Inner:
    # One message of a received payload, decoded and checked, not yet dispatched.
    Py_ssize_t base      # its offset in the payload
    _Tuple t             # its 7-tuple (offsets relative to base)
    Py_ssize_t sub       # its subroute id's offset (relative to base), or -1


cdef struct _Deadline:
    double at                         # monotonic deadline
    uint64_t mux_id


# The owner interface of ConnCore (grid._mux_owner.CoreOwner is the same as a
# typing.Protocol).  The owner is the wire until the handshake attaches the
# core to its connection (ConnCore.attach), and the wire again after
# ConnCore.detach.  The core calls, as Python methods:
#   _on_message(m)                 a message the core does not handle itself
#   _on_control(opcode, payload)   a WebSocket control frame
#   _schedule_flush()              the first message of a batch is queued (and not
#                                  written at once through `direct`)
#   _flush()                       write what is queued now (returned credits), and
#                                  fail the wire past its write buffer limit
#   _flush_early()                 a full write's worth is queued
#   _handler_failed(m, exc) -> str an inline handler raised: log, give the text
#   _send_large(mux_id, seq, deadline_ms, handler, op, flags, payload, subroute)
#                                  a payload of LARGE_MESSAGE bytes or more
#   _call(handler_id, payload, timeout, subroute) -> future
#                                  a call call() does not start itself
#   _failed(exc) -> future         a future failed with exc
#   _schedule_sweep(delay)         run the deadline sweep within delay seconds
# and, on its reader (the wire that made it, which owns the socket):
#   input_failed(exc)              socket_read failed on the peer's input
#   _input_waiting()               received input waits for a later loop turn:
#                                  stop reading, call drain() from the next turn


@cython.final
cdef class ConnCore:
    # The pure twin's slots, readable and writable from Python; everything
    # from `ids` to `sweep_at` is set by attach().
    cdef public object owner          # a CoreOwner (above)
    cdef public FrameParser parser    # this connection's compiled frame parser
    cdef public MuxIdAllocator ids    # caller-side mux ids (outlives reconnects)
    cdef public dict pending          # mux id -> future of an outstanding request
    cdef public list queue            # encoded messages waiting for take_frames()
    cdef public Py_ssize_t queued_bytes
    cdef public object base_flags     # flags OR-ed into every queued message (§1.6)
    cdef public object caller         # the remote's identity string, for handler context
    cdef public dict singles          # handler id -> single-handler entry
    cdef public dict singles_sub      # subroute id -> single-handler entry
    cdef public object context_var    # contextvars.ContextVar set around inline handlers
    cdef public object clock          # the event loop's time()
    cdef public Py_ssize_t msgs_in
    cdef public Py_ssize_t msgs_out
    cdef public Py_ssize_t bytes_out
    cdef public Py_ssize_t bytes_in   # bytes socket_read was handed (the reader's socket)
    cdef public object callers        # the owner's streams it opened (mux id -> stream), or None
    cdef public object callees        # the owner's streams it serves, or None
    cdef public bint open_calls       # call() may start requests itself (else owner._call)
    cdef public object direct         # transport the next message is written to at once, or None
    cdef public object ready          # what `direct` becomes after a quiet turn (the owner sets it)
    cdef public object mask_key       # callable giving a client's mask keys, or None (server)
    cdef public Py_ssize_t write_limit  # bytes the transport may buffer (else owner._flush())
    cdef object _turn_end             # handle of the check after a direct write, or None
    cdef bint _quiet_pending          # a direct write waits for the next input to re-arm `direct`
    cdef object _call_soon
    cdef object _after_direct         # the bound after_direct, while `loop` is set
    cdef object _loop                 # `loop` (a property that also caches create_future)
    cdef object _create_future
    cdef public double default_timeout
    cdef public Py_ssize_t queue_limit
    cdef public double sweep_at       # monotonic time of the owner's next deadline sweep
    cdef readonly Py_ssize_t max_payload  # largest payload a message sent here may carry
    cdef double _last_at              # deadline of the request _request() sent last
    # Fair share of the loop (see ConnCore.drain): work units done since the
    # last drain, and what waits for a later turn.
    cdef public object reader         # the wire that made the core (told when input waits)
    cdef public Py_ssize_t turn_budget  # work units a turn may take (TURN_BUDGET)
    cdef Py_ssize_t _spent
    cdef Py_ssize_t _read_max         # bytes a read may bring (0: the parser's whole window)
    cdef bint _held                   # input waits, and the reader has been told
    cdef Py_ssize_t _sunk             # frames _frame_sink took during the current read
    cdef object _sink_error           # what a frame _frame_sink took raised, else None
    cdef list _waiting                # received events not yet processed, or None
    cdef Py_ssize_t _waiting_pos      # the first of them still to process
    cdef bytes _slice                 # a large merged container being worked through, or None
    cdef Py_ssize_t _slice_pos        # its next bin (to check, then to dispatch)
    cdef Py_ssize_t _slice_start      # its first bin
    cdef Py_ssize_t _slice_end        # the end of its bins
    cdef uint64_t _slice_count        # bins it announces
    cdef uint64_t _slice_done         # bins checked (phase 1) or dispatched (phase 2)
    cdef bint _slice_checked          # every bin checked: dispatching
    cdef _Deadline* _fifo             # ring of deadlines in arrival order (non-decreasing)
    cdef Py_ssize_t _fifo_head
    cdef Py_ssize_t _fifo_len
    cdef Py_ssize_t _fifo_cap
    cdef list _deadlines              # heap of (monotonic deadline, mux id): the out-of-order ones

    cdef int _buffer_updated(self, Py_ssize_t nbytes) except -1
    cdef int _on_events(self, list events) except -1
    cdef int _run(self, list events, Py_ssize_t i) except -1
    cdef int _wait(self, list events, Py_ssize_t i) except -1
    cdef int _work_slice(self) except -1
    cdef int _on_binary(self, object payload) except -1
    cdef int _on_bytes(self, const uint8_t* p, Py_ssize_t n, bytes owner) except -1
    cdef int _dispatch_at(self, const uint8_t* p, _Inner* e) except -1
    cdef int _dispatch(self, Message m) except -1
    cdef int _send(self, object msg) except -1
    cdef object _take_frames(self, object mask_key)
    cdef int _respond(self, object mux_id, object seq, object result, object err) except -1
    cdef object _request(self, object fut, object handler_id, object payload, object timeout,
                         object subroute)
    cdef int _track(self, double at, uint64_t mux_id) except -1
    cdef bint _serving_call(self) except -1
    cdef int _send_message(self, object mux_id, object seq, object deadline_ms, object handler,
                           object op, object flags, object payload, object subroute) except -1
