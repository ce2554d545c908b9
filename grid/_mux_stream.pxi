# A stream's steady traffic in the compiled core: items and credits moved
# between the wire and a stream's MuxState without the stream's own code
# (grid/_stream_flow.py's stream_state sets up the MuxState fields these
# read, for both ends of a stream; see the pure twin's
# ConnCore.take_item, return_credit, release_credits and send_item, and
# grid/_mux_stream_py.py).
# Included by grid/_mux.pyx; ConnCore's fields come from grid/_mux.pxd.


cdef enum:
    # Items of this many bytes or more are queued as a SplitFrame (see
    # _stream_send); below it, joining head and payload costs less than the
    # SplitFrame's own objects and its CRC over three parts.
    ITEM_SPLIT = 1024


cdef bint _stream_credit(ConnCore core, object state, uint64_t seq) except -1:
    """An unblock for a stream whose sequence is in order: one credit more,
    its waiting sender woken.  False leaves it to the stream."""
    cdef MuxState s
    if type(state) is not MuxState:
        return False
    s = <MuxState>state
    if s.recv_seq != seq or s.credits == INT64_MAX:
        return False
    s.recv_seq += 1  # wraps at 2**32
    s.credits += 1
    w = s.waiter
    if w is not None:
        s.waiter = None  # woken once: the credits after it need not ask again
        if not w.done():
            w.set_result(None)
    return True


cdef bint _stream_item(ConnCore core, object state, const uint8_t* m, _Inner* e) except -1:
    """An item for an open, untraced stream (``state`` is its MuxState), in
    sequence and with room in its buffer: appended, its reader woken.  False
    leaves it to the stream (which also ends the stream on a violation)."""
    cdef MuxState s
    if type(state) is not MuxState:
        return False
    s = <MuxState>state
    if not s.fast or s.recv_seq != e.t.f[1]:
        return False
    items = s.items
    if items is None or len(items) >= s.capacity:
        return False
    s.recv_seq += 1  # wraps at 2**32
    items.append(PyBytes_FromStringAndSize(<const char*>m + e.t.start, e.t.stop - e.t.start))
    s.received += 1  # "heard" for the stream's liveness check
    w = s.item_waiter
    if w is not None:
        s.item_waiter = None  # woken once: the items after it need not ask again
        if not w.done():
            w.set_result(None)
    return True


cdef object _stream_take(ConnCore core, MuxState s):
    """The next buffered item with its credit owed, or None (nothing taken)."""
    items = s.items
    if not s.fast or not items:
        return None
    item = items[0]
    if not PyBytes_CheckExact(item):
        return None
    items.popleft()
    _stream_owe(core, s, PyBytes_GET_SIZE(item))
    return item


cdef int _stream_owe(ConnCore core, MuxState s, Py_ssize_t size) except -1:
    """One more credit owed, for an item of ``size`` bytes; every
    ``flush_every`` owed are queued and written at once, or half that many
    for items under EARLY_CREDIT_ITEM_MAX once they are at least the items
    the reader still holds and nothing else is queued (see the pure twin's
    stream_owe)."""
    s.owed += 1
    items = s.items
    if s.owed >= s.flush_every or (size < EARLY_CREDIT_ITEM_MAX and 2 * s.owed >= s.flush_every
                                   and PyList_GET_SIZE(core.queue) == 0
                                   and (items is None or s.owed >= len(items))):
        transport = core.ready
        if transport is None:
            _stream_release(core, s)
            core.owner._flush()  # let credits flow back while the rest is read
            return 0
        _stream_queue(core, s)
        transport.write(core._take_frames(core.mask_key() if core.mask_key is not None else None))
        if transport.get_write_buffer_size() > core.write_limit:
            core.owner._flush()  # the owner fails the wire past its limit
    return 0


cdef int _stream_queue(ConnCore core, MuxState s) except -1:
    """Queue every credit owed, one unblock each, in sequence."""
    cdef uint32_t seq
    cdef list q = core.queue
    while s.owed > 0:
        s.owed -= 1
        seq = s.send_seq
        s.send_seq = seq + 1  # wraps at 2**32
        msg = encode_message_c(s.mux_id, seq, 0, 0, s.credit_op, core.base_flags, None, None)
        q.append(msg)
        core.queued_bytes += PyBytes_GET_SIZE(msg)
    return 0


cdef int _stream_release(ConnCore core, MuxState s) except -1:
    """Queue every credit owed; the flush is asked for once they are all
    queued, so an idle connection writes them together rather than the
    first alone."""
    cdef list q = core.queue
    cdef bint first = PyList_GET_SIZE(q) == 0
    if s.owed <= 0:
        return 0
    _stream_queue(core, s)
    if first:
        core.owner._schedule_flush()
    elif PyList_GET_SIZE(q) >= EARLY_FLUSH_MESSAGES or core.queued_bytes >= EARLY_FLUSH_BYTES:
        core.owner._flush_early()
    return 0


cdef bint _stream_send(ConnCore core, MuxState s, object item) except -1:
    """Queue a stream item at once if it can leave now (open, untraced, a
    credit in hand, bytes below LARGE_MESSAGE); False otherwise."""
    cdef uint32_t seq
    if not s.fast or s.credits <= 0:
        return False
    if (not PyBytes_CheckExact(item) or PyBytes_GET_SIZE(item) >= LARGE_MESSAGE
            or PyBytes_GET_SIZE(item) > core.max_payload):
        return False
    s.credits -= 1
    seq = s.send_seq
    s.send_seq = seq + 1
    flags = core.base_flags | FLAG_PAYLOAD_IS_ZERO if PyBytes_GET_SIZE(item) == 0 else core.base_flags
    if PyBytes_GET_SIZE(item) >= ITEM_SPLIT and type(flags) is int and 0 <= flags <= 0xFF:
        # Queued as a SplitFrame: the item is copied once, into its frame.
        core._send(encode_split_c(s.mux_id, seq, s.item_op, <uint64_t>flags, <bytes>item))
    else:
        core._send(encode_message_c(s.mux_id, seq, 0, 0, s.item_op, flags, item, None))
    return True


cdef int _frame_sink(object ctx, const uint8_t* p, Py_ssize_t n) except -1:
    """The core's FrameSink (grid/_codec.pxd): one binary frame, dispatched
    where it lies in the read window, as _run() would dispatch its event,
    when _run() would get to it in this turn; 0 leaves it to _run()."""
    cdef ConnCore core = <ConnCore>ctx
    if (core._sink_error is not None or core._held or core._slice is not None
            or core._spent >= core.turn_budget):
        return 0
    core._sunk += 1
    try:
        core._on_bytes(p, n, None)
    except BaseException as exc:
        core._sink_error = exc  # raised once the parser is through this read
    return 1
