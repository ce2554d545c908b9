# What FrameParser (grid/_codec_ws_parser.pxi) receives into and how much it
# may hold: the receive-window pool, PyMem buffer growth, the budget shared
# with other parsers, and large frames received straight into their final
# buffers.  The parser's steps here are module functions taking the parser
# as ``self``; its fields come from grid/_codec.pxd.  Included by
# grid/_codec.pyx, before the parser.
#
# The receive-window pool (the pure twin's module docstring tells its rules):
# the read windows get_buffer() hands out are bytearrays of RECV_SIZE bytes,
# lent by one free list shared by every FrameParser of the process and given
# back at the end of the buffer_updated() that parsed them, when the parser
# fails and when it closes (or is freed).  At most RECV_KEEP free windows are
# kept; one given back beyond these is freed.  Borrowing is one list pop,
# giving back one append.


cdef list _free_windows = []           # the pool's free list, used last in, first out
cdef Py_ssize_t _lent_windows = 0      # windows borrowed and not given back yet
cdef char _no_window[1]                # what buffer_updated() parses when no window is held


cdef inline bytearray _borrow_window():
    global _lent_windows
    _lent_windows += 1
    if _free_windows:
        return <bytearray>_free_windows.pop()
    return bytearray(RECV_SIZE)


cdef inline int _give_back_window(bytearray window) except -1:
    global _lent_windows
    _lent_windows -= 1
    if _free_windows is not None and len(_free_windows) < RECV_KEEP:
        _free_windows.append(window)
    return 0


def recv_pool_stats() -> dict[str, int]:
    """The receive-window pool shared by every :class:`FrameParser` of the
    process: ``in_use`` (windows parsers hold now), ``free`` (windows kept
    for reuse), ``window`` (bytes per window) and ``keep`` (the most free
    windows kept)."""
    return {"in_use": _lent_windows, "free": len(_free_windows), "window": RECV_SIZE,
            "keep": RECV_KEEP}


cdef int _reserve(uint8_t** buf, Py_ssize_t* cap, Py_ssize_t need) except -1:
    """Grow a PyMem buffer to hold at least ``need`` bytes (geometrically)."""
    cdef Py_ssize_t new_cap = cap[0] if cap[0] else 4096
    cdef void* p
    if need <= cap[0]:
        return 0
    while new_cap < need:
        if new_cap > (<Py_ssize_t>1 << 61):
            raise MemoryError()
        new_cap *= 2
    p = PyMem_Realloc(buf[0], <size_t>new_cap)
    if p == NULL:
        raise MemoryError()
    buf[0] = <uint8_t*>p
    cap[0] = new_cap
    return 0


# ---------------------------------------------------------------- the shared budget
# (the pure twin's FrameParser methods of the same names)

cdef Py_ssize_t _held_now(FrameParser self):
    """What this parser holds of unfinished messages, as the budget
    counts it: nothing below LARGE_FRAME bytes."""
    cdef Py_ssize_t n = self._acc_len + self._frag_len
    if self._state == PARSER_LARGE:
        n += self._flen
    return n if n >= LARGE_FRAME_C else 0


cdef bint _settle(FrameParser self, Py_ssize_t n) except -1:
    """Hold ``n`` bytes of the budget (taking or giving the difference);
    False, with nothing changed, if the budget refuses."""
    cdef object budget = self._budget
    if budget is None or n == self._held:
        return True
    if n > self._held:
        if not budget.take(n - self._held):
            return False
    else:
        budget.give(self._held - n)
    self._held = n
    return True


cdef str _over_budget(FrameParser self):
    return (f"partly received messages of all sockets would hold more than the limit of "
            f"{self._budget.limit} bytes")


# ---------------------------------------------------------------- large frames
# A complete one split under split_large, and one received in place (see
# _parse and the FrameParser class docstring).

cdef object _split_whole(const uint8_t* src, Py_ssize_t n, const uint8_t* key):
    """A complete large frame's event payload under split_large: the pure
    twin's FrameParser._whole_large().  n >= SPLIT_FRAME_C > HEAD_MAX."""
    cdef uint8_t first[HEAD_MAX]
    cdef Py_ssize_t head_len = 0
    cdef uint64_t size = 0
    cdef SplitFrame s
    cdef bytes part
    _mask_at(first, src, HEAD_MAX, key, 0)
    if _split_point(first, HEAD_MAX, <uint64_t>n, &head_len, &size) != _PROBE_OK:
        return _payload(src, n, key)
    s = SplitFrame.__new__(SplitFrame)
    s.head = PyBytes_FromStringAndSize(<const char*>first, head_len)
    part = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>size)
    _mask_at(<uint8_t*>PyBytes_AS_STRING(part), src + head_len, <Py_ssize_t>size, key, head_len)
    s.payload = part
    head_len += <Py_ssize_t>size  # where the tail starts
    part = PyBytes_FromStringAndSize(NULL, n - head_len)
    _mask_at(<uint8_t*>PyBytes_AS_STRING(part), src + head_len, n - head_len, key, head_len)
    s.tail = part
    return s


@cython.final
cdef class _Fill:
    """A writable buffer exporter for the unfilled part of a large frame's
    buffer, which FrameParser.get_buffer() hands out as a memoryview.  It
    holds a reference to that bytes object, so the memory stays valid for as
    long as any view of it exists, even if the parser lets go of the frame
    (fails, completes) in the meantime."""
    cdef object owner
    cdef uint8_t* p
    cdef Py_ssize_t n

    def __getbuffer__(self, Py_buffer* view, int flags):
        PyBuffer_FillInfo(view, self, <void*>self.p, self.n, 0, flags)

    def __releasebuffer__(self, Py_buffer* view):
        pass


cdef int _big_clear(FrameParser self) except -1:
    _drop_view(self)
    self._big = None
    self._big_ptr = NULL
    self._big_len = 0
    self._flen = self._fgot = self._head_len = 0
    self._head = None
    self._hasher = None
    self._hashed = 0
    return 0


cdef int _drop_view(FrameParser self) except -1:
    cdef object view = self._view
    if view is not None:
        self._view = None
        try:
            view.release()
        except BufferError:
            pass  # still exported (a read in progress); _Fill keeps its memory valid
    return 0


cdef int _begin_large(FrameParser self, const uint8_t* payload, Py_ssize_t have, int opcode,
                      uint64_t length, bint masked) except -1:
    """Start receiving the data frame whose payload begins at
    payload[0:have] (have < length; the mask key, if any, is the 4 bytes
    before it) into its final buffer: 1 when started, 0 when
    split_large first needs more of the envelope head."""
    cdef uint8_t first[HEAD_MAX]
    cdef Py_ssize_t nfirst, head_len = 0
    cdef uint64_t size = length
    cdef const uint8_t* key = payload - 4 if masked else NULL
    cdef object head = None
    cdef bytes big
    cdef _Tuple t
    cdef uint64_t announced
    if self._split_large:
        nfirst = have if have < HEAD_MAX else HEAD_MAX
        _mask_at(first, payload, nfirst, key, 0)
        verdict = _split_point(first, nfirst, length, &head_len, &size)
        if verdict == _PROBE_MORE:
            return 0
        if verdict == _PROBE_OK:
            head = PyBytes_FromStringAndSize(<const char*>first, head_len)
            _probe_tuple(first, nfirst, &t, &announced)  # OK, as _split_point found
            if t.f[5] & FLAG_CRC:
                # Hash as the bytes arrive: the CRC check at the end needs no second pass.
                self._hasher = _xxh3_hasher()
                self._hasher.update(head)
                self._hashed = 0
        else:
            head_len = 0
            size = length
    # Taken before the buffer exists; nothing else is held meanwhile:
    # the frame takes all the rest of the input.
    if not _settle(self, <Py_ssize_t>length):
        raise self._fail(_over_budget(self))
    if size > <uint64_t>(PY_SSIZE_T_MAX - 64):
        raise MemoryError()  # as the pure twin's bytearray(size) (no OverflowError)
    big = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>size)
    self._big = big
    self._big_ptr = <uint8_t*>PyBytes_AS_STRING(big)
    self._big_len = <Py_ssize_t>size
    self._big_op = opcode
    self._state = PARSER_LARGE
    self._flen = <Py_ssize_t>length  # < 2**63, checked by _parse
    self._fgot = self._head_len = head_len
    self._head = head
    self._big_masked = masked
    if masked:
        memcpy(self._big_key, key, 4)
    _big_take(self, payload + head_len, have - head_len)
    return 1


cdef Py_ssize_t _big_take(FrameParser self, const uint8_t* src, Py_ssize_t n) except -1:
    """Add what of src[0:n] the large frame still needs (still masked);
    return how many bytes that took."""
    cdef Py_ssize_t k = self._flen - self._fgot, m, end = self._head_len + self._big_len
    cdef const uint8_t* key = self._big_key if self._big_masked else NULL
    if k > n:
        k = n
    n = k
    if self._fgot < end:
        m = end - self._fgot
        if m > k:
            m = k
        _mask_at(self._big_ptr + (self._fgot - self._head_len), src, m, key, self._fgot)
        self._fgot += m
        src += m
        k -= m
        if self._hasher is not None:
            _hash_filled(self)
    if k:
        # Split only: the tail, at most SPLIT_TAIL_MAX bytes (_split_point).
        _mask_at(self._tail + (self._fgot - end), src, k, key, self._fgot)
        self._fgot += k
    return n


cdef int _hash_filled(FrameParser self) except -1:
    """Feed the payload bytes received since the last call to _hasher."""
    cdef Py_ssize_t filled = self._fgot - self._head_len
    cdef _Span span
    if filled > self._big_len:
        filled = self._big_len
    if filled > self._hashed:
        span = _Span()
        span.p = self._big_ptr + self._hashed
        span.n = filled - self._hashed
        self._hasher.update(span)
        self._hashed = filled
    return 0


cdef tuple _big_event(FrameParser self):
    """The completed large frame's event; the parser lets go of it."""
    cdef SplitFrame s
    cdef object payload = self._big
    cdef int op = self._big_op
    cdef Py_ssize_t ntail
    if self._head is not None:
        s = SplitFrame.__new__(SplitFrame)
        s.head = self._head
        s.payload = payload
        ntail = self._flen - self._head_len - self._big_len
        s.tail = PyBytes_FromStringAndSize(<const char*>self._tail, ntail)
        if self._hasher is not None and ntail >= CRC_LEN and self._hashed == self._big_len:
            self._hasher.update(s.tail[:ntail - CRC_LEN])
            s._crc = <uint32_t>(self._hasher.intdigest() & 0xFFFFFFFF)
            s._crc_known = True
        payload = s
    _big_clear(self)
    self._state = PARSER_FRAMES
    return (op, payload)

