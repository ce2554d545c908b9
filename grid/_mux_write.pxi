# The direct write of a quiet connection in the compiled core: the first
# message queued in a turn leaves at once, and the next input re-arms that
# (see the pure twin's ConnCore.send, after_direct and _input_after_direct).
# Included by grid/_mux.pyx; ConnCore's fields come from grid/_mux.pxd.


cdef int _write_direct(ConnCore core) except -1:
    """Write the one queued message to ``core.direct`` now."""
    cdef list q = core.queue
    cdef Py_ssize_t buffered
    transport = core.direct
    core.direct = None
    key_fn = core.mask_key
    if (PyList_GET_SIZE(q) == 1 and PyBytes_CheckExact(q[0])
            and (key_fn is None or key_fn is _pool_mask_key)):
        # One message, framed here; a client's key comes from the codec's
        # pool as mask_key() would give it, without the Python call.
        core.queue = []
        core.queued_bytes = 0
        core.msgs_out += 1
        data = frame_message_c(<bytes>q[0], key_fn is not None)
        core.bytes_out += PyBytes_GET_SIZE(data)
    else:
        data = core._take_frames(key_fn() if key_fn is not None else None)
    transport.write(data)
    buffered = transport.get_write_buffer_size()
    if buffered <= core.write_limit:
        core._quiet_pending = True  # settled by the next input, or by frames taken
    elif core._turn_end is None:
        core._turn_end = core._call_soon(core._after_direct)
    return 0


cdef int _input_after_direct(ConnCore core) except -1:
    """Input arrives in a later turn than the direct write before it, and no
    frames were taken since: nothing else was queued in that turn, so the
    next message may be written at once too."""
    core._quiet_pending = False
    if not core.queue and core._turn_end is None:
        core.direct = core.ready
    return 0
