# Request deadlines of one ConnCore: its pending requests' deadlines, kept in
# a C ring while they only grow and in a heap otherwise (the pure twin's
# ConnCore._track, _compact and expire).  Included by grid/_mux.pyx; the
# fields come from grid/_mux.pxd.


cdef int _track_deadline(ConnCore self, double at, uint64_t mux_id) except -1:
    # In arrival order while deadlines only grow (one timeout for all,
    # the usual case): a C ring, no Python object per request.  A
    # deadline earlier than the last one goes to the heap.
    cdef Py_ssize_t i, n
    cdef _Deadline* grown
    self._last_at = at
    n = self._fifo_len
    if n and at < self._fifo[(self._fifo_head + n - 1) % self._fifo_cap].at:
        _heappush(self._deadlines, (at, mux_id))
    else:
        if n == self._fifo_cap:
            grown = <_Deadline*>PyMem_Malloc(<size_t>(2 * n + 64) * sizeof(_Deadline))
            if grown == NULL:
                raise MemoryError()
            for i in range(n):
                grown[i] = self._fifo[(self._fifo_head + i) % self._fifo_cap]
            PyMem_Free(self._fifo)
            self._fifo = grown
            self._fifo_cap = 2 * n + 64
            self._fifo_head = 0
        self._fifo[(self._fifo_head + n) % self._fifo_cap].at = at
        self._fifo[(self._fifo_head + n) % self._fifo_cap].mux_id = mux_id
        self._fifo_len = n + 1
    if self._fifo_len + len(self._deadlines) > 2 * len(self.pending) + 1024:
        _compact_deadlines(self)
    return 0


cdef int _compact_deadlines(ConnCore self) except -1:
    # Entries of answered requests stay until they expire; drop them
    # when they outnumber the live ones, so that the bookkeeping stays
    # within a small multiple of the requests in flight.
    cdef Py_ssize_t i, kept = 0
    cdef _Deadline e
    pending = self.pending
    for i in range(self._fifo_len):
        e = self._fifo[(self._fifo_head + i) % self._fifo_cap]
        if e.mux_id in pending:
            self._fifo[(self._fifo_head + kept) % self._fifo_cap] = e
            kept += 1
    self._fifo_len = kept
    dl = [e2 for e2 in self._deadlines if e2[1] in pending]
    _heapify(dl)
    self._deadlines = dl
    return 0


cdef object _expire_deadlines(ConnCore self):
    """ConnCore.expire: fail the requests past their deadline; the next
    deadline (monotonic) or None."""
    cdef double now = _now()
    cdef _Deadline head
    dl = self._deadlines
    pending = self.pending
    while True:  # the two sources merged, earliest deadline first
        if self._fifo_len:
            head = self._fifo[self._fifo_head]
        if (self._fifo_len and head.at <= now
                and not (dl and dl[0] < (head.at, head.mux_id))):
            self._fifo_head = (self._fifo_head + 1) % self._fifo_cap
            self._fifo_len -= 1
            mux_id = head.mux_id
        elif dl and dl[0][0] <= now:
            _, mux_id = _heappop(dl)
        else:
            break
        fut = pending.pop(mux_id, None)
        if fut is not None and not fut.done():
            fut.set_exception(TimeoutError(REQUEST_TIMEOUT_TEXT))
    if self._fifo_len + len(dl) > 2 * len(pending) + 1024:
        _compact_deadlines(self)
        dl = self._deadlines
    if self._fifo_len:
        head = self._fifo[self._fifo_head]
        return min(head.at, dl[0][0]) if dl else head.at
    return dl[0][0] if dl else None
