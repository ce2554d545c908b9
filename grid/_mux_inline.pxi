# Sync handlers run inline by the compiled core (see the pure twin's
# run_inline in grid/_mux_recv_py.py): the call context set around the handler, the reply
# queued unless the caller's deadline passed meanwhile.
# Included by grid/_mux.pyx; ConnCore's fields come from grid/_mux.pxd.


cdef int _run_inline(ConnCore core, object entry, object handler, object mux_id, object seq,
                     object dl, object payload, Message m, const uint8_t* p,
                     _Inner* e) except -1:
    """Run the sync handler ``entry`` for the request ``m``, or, with ``m``
    None, for the request decoded at ``p + e.base`` (its fields given; its
    Message is built only for ``owner._handler_failed``)."""
    cdef double started = _now(), elapsed
    deadline = core.clock() + dl / 1000 if dl else None
    var = core.context_var
    ctx = (core.caller, handler, entry.route, mux_id, deadline)
    # A real ContextVar through the C API; anything else as the pure twin calls it.
    token = PyContextVar_Set(var, ctx) if type(var) is _ContextVar else var.set(ctx)
    try:
        result = entry.fn(payload)
    except RemoteError as exc:
        result, err = None, exc.message
    except Exception as exc:
        if m is None:
            m = _build(p + e.base, &e.t, e.sub)
        result, err = None, core.owner._handler_failed(m, exc)
    else:
        err = None
    finally:
        if type(var) is _ContextVar:
            PyContextVar_Reset(var, token)
        else:
            var.reset(token)
    elapsed = _now() - started
    if elapsed >= _SLOW_HANDLER:
        entry.ran_slow(elapsed)  # a rate-limited warning
    if dl and elapsed * 1000 > dl:
        return 0  # the caller has given up (§7 step 3)
    core._respond(mux_id, seq, result, err)
    return 0
