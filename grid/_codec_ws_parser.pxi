# FrameParser: incoming WebSocket frames (RFC 6455 §5) parsed in place.  An
# explicit state machine: _state (ParserState, declared in _codec.pxd) says
# whether the parser is between messages, inside a fragmented message,
# receiving a large frame in place, or failed; each transition assigns it.
# Included by grid/_codec.pyx, after grid/_codec_ws_recv.pxi, which holds
# what the parser receives into: the read-window pool, the shared budget
# and large frames received in place.


@cython.annotation_typing(False)
def _parser_signature(server: bool, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE, *,
                      split_large: bool = False) -> None:
    pass


cdef enum:
    # How FrameParser compares a message size with max_message_size.
    _LIMIT_C = 0         # an int >= 0: against _limit
    _LIMIT_NEGATIVE = 1  # an int < 0: every data message exceeds it
    _LIMIT_PY = 2        # not an int: Python's `>`, as the pure twin does


cdef inline bytes _payload(const uint8_t* src, Py_ssize_t n, const uint8_t* key):
    """A frame payload as owned bytes, unmasked if ``key`` is not NULL."""
    cdef bytes out
    if key == NULL:
        return PyBytes_FromStringAndSize(<const char*>src, n)
    out = PyBytes_FromStringAndSize(NULL, n)
    grid_mask_copy(<uint8_t*>PyBytes_AS_STRING(out), src, <size_t>n, key)
    return out


@cython.final
cdef class FrameParser:
    """Incremental RFC 6455 frame parser for one side of a connection.

    ``server=True`` parses what a client sends (frames must be masked);
    ``server=False`` parses what a server sends (frames must not be masked).
    Feed it bytes in any split with :meth:`feed`, or let an
    ``asyncio.BufferedProtocol`` read straight into it with
    :meth:`get_buffer` / :meth:`buffer_updated`.  Each returns a list of
    ``(opcode, payload)`` events: complete data messages (fragments
    reassembled, opcode of the first frame) and control frames (ping, pong,
    close) as they arrive.  A violation raises ProtocolError, after which the
    parser stays failed.

    The read window that :meth:`get_buffer` hands out is borrowed from a
    pool shared by all parsers and given back once :meth:`buffer_updated`
    has parsed the read, so a parser between reads holds none (see the
    module docstring).

    An unfragmented data frame of :data:`LARGE_FRAME` bytes or more is
    received into its final buffer as it arrives: while one is incomplete,
    :meth:`get_buffer` hands out that buffer's unfilled part (exactly what
    the frame still needs, so a read never runs into the next frame), and
    the work per read stays proportional to the read.  ``split_large=True``
    (keyword only) makes such a frame, and any complete unfragmented data
    frame of :data:`SPLIT_FRAME` bytes or more, arrive as a
    :class:`SplitFrame` when it holds one grid message with a non-nil
    payload, so that the message payload is copied out of the read window
    once (or, large, received in place) and decodes without a further copy;
    other frames stay plain ``bytes``.

    :attr:`budget`, when set, is shared with other parsers (a node's
    sockets): what this parser holds of messages not yet complete (a large
    frame's announced length, an unfinished frame's bytes, the fragments of
    a message so far) is taken from it once it reaches :data:`LARGE_FRAME`
    bytes, and given back as those messages complete or the parser fails or
    closes.  A large frame takes its length before its buffer is allocated;
    the rest is settled at the end of each read.  When the budget refuses,
    the parser fails with a ProtocolError (nothing of that read is
    delivered).
    """

    # Input is parsed where it lies: in the bytes given to feed(), or in the
    # 256 KiB window that get_buffer() borrows from the pool and hands out
    # (uvloop/asyncio read into it directly).  Only the unfinished frame at
    # the end of a read is copied, into _acc, so the window is free again
    # once the read is parsed; the next read first tops _acc up to exactly
    # one frame (never more), then parsing continues in place again.  A
    # window never moves or shrinks, so a memoryview of it stays valid, like
    # the pure twin's bytearray; payloads are copied out as bytes, so events
    # never alias it.
    #
    # A large frame (see _parse) is the exception: once its header is in,
    # its payload (or, split, the grid payload inside it) gets its final
    # bytes object at once, and every later read lands there: copied (and
    # unmasked) from the input, or read straight into it through the view
    # get_buffer() hands out and unmasked in place by buffer_updated().
    # The finished frame's event is that object itself.

    __signature__ = _inspect.signature(_parser_signature)

    def __cinit__(self):
        self._state = PARSER_FRAMES
        self._frag_op = -1
        self._big_op = -1
        self._limit_kind = _LIMIT_C

    def __init__(self, server: bool, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE, *,
                 split_large: bool = False) -> None:
        if max_message_size < 0:
            raise ValueError("max_message_size must be >= 0")
        self._server = server
        self._is_server = server
        self._split_large = split_large
        self._set_limit(max_message_size)
        self._release_buffers()
        self._failed = None
        self._state = PARSER_FRAMES

    def __dealloc__(self):
        PyMem_Free(self._acc)
        PyMem_Free(self._frag)
        if self._recv is not None:
            self._put_window()

    @property
    def server(self):
        return self._server

    @server.setter
    def server(self, value):
        self._is_server = value
        self._server = value

    @property
    def max_message_size(self):
        return self._max_size

    @property
    def split_large(self):
        """Deliver large one-message frames as SplitFrame (see the class docstring)."""
        return self._split_large

    @split_large.setter
    def split_large(self, value):
        self._split_large = value

    @max_message_size.setter
    def max_message_size(self, value):
        self._set_limit(value)

    @property
    def failed(self) -> bool:
        """True once the parser has raised; it then refuses further input."""
        return self._state == PARSER_FAILED

    @property
    def budget(self):
        """The budget shared with other parsers (see the class docstring), or None."""
        return self._budget

    @budget.setter
    def budget(self, value):
        _settle(self, 0)  # what the old budget holds for this parser goes back to it
        self._budget = value
        if self._state != PARSER_FAILED and not _settle(self, _held_now(self)):
            raise self._fail(_over_budget(self))

    @property
    def held(self) -> int:
        """Bytes this parser has taken from its budget."""
        return self._held

    def close(self) -> None:
        """Let go of every buffer (and all that the budget holds for this
        parser); the parser refuses further input, as a failed one does."""
        if self._state != PARSER_FAILED:
            self._fail("parser closed")
        self._put_window()  # one borrowed by get_buffer() after failing

    cdef int _set_limit(self, object value) except -1:
        cdef int overflow = 0
        cdef long long x
        if PyLong_Check(value):
            x = PyLong_AsLongLongAndOverflow(value, &overflow)
            if overflow < 0 or (overflow == 0 and x < 0):
                self._limit_kind = _LIMIT_NEGATIVE
            elif overflow > 0:
                # Totals stay below 2**63 + memory size, so 2**64-1 is "no limit".
                self._limit = value if value <= _U64_MAX else UINT64_MAX
                self._limit_kind = _LIMIT_C
            else:
                self._limit = <uint64_t>x
                self._limit_kind = _LIMIT_C
        else:
            self._limit_kind = _LIMIT_PY
        self._max_size = value
        return 0

    cdef int _check_size(self, uint64_t total) except -1:
        if self._limit_kind == _LIMIT_C:
            if total <= self._limit:
                return 0
        elif self._limit_kind == _LIMIT_PY:
            if not total > self._max_size:
                return 0
        raise self._fail(
            f"message of {total} bytes exceeds the limit of {self._max_size} bytes"
        )

    cdef int _put_window(self) except -1:
        """Give the read window back to the pool, if this parser holds one."""
        cdef bytearray recv = self._recv
        if recv is not None:
            self._recv = None
            _give_back_window(recv)
        return 0

    cdef int _release_buffers(self) except -1:
        self._put_window()
        PyMem_Free(self._acc)
        self._acc = NULL
        self._acc_len = self._acc_cap = 0
        PyMem_Free(self._frag)
        self._frag = NULL
        self._frag_len = self._frag_cap = 0
        _big_clear(self)
        return 0

    cdef object _fail(self, str text):
        self._failed = text
        self._release_buffers()
        self._state = PARSER_FAILED
        _settle(self, 0)
        return ProtocolError(text)

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """A writable buffer for ``asyncio.BufferedProtocol.get_buffer``: the
        unfilled part of a large frame's buffer while one is incomplete, else
        a 256 KiB read window borrowed from the pool."""
        return self._get_buffer()

    cdef object _get_buffer(self):
        cdef _Fill fill
        cdef Py_ssize_t end
        _drop_view(self)
        if self._state == PARSER_LARGE:
            end = self._head_len + self._big_len
            if self._fgot < end:
                fill = _Fill.__new__(_Fill)
                fill.owner = self._big
                fill.p = self._big_ptr + (self._fgot - self._head_len)
                fill.n = end - self._fgot
                self._view = PyMemoryView_FromObject(fill)
                return self._view
        if self._recv is None:
            self._recv = _borrow_window()
        if self._state == PARSER_LARGE:
            return memoryview(self._recv)[:self._flen - self._fgot]
        return memoryview(self._recv)

    def buffer_updated(self, nbytes: int) -> list[tuple[int, bytes | SplitFrame]]:
        """Parse the ``nbytes`` just written into :meth:`get_buffer`'s buffer;
        the read window goes back to the pool."""
        return self._updated(nbytes)

    def feed(self, data: Buffer) -> list[tuple[int, bytes | SplitFrame]]:
        """Add received bytes; return the events they complete."""
        return self._feed(data)

    cdef list _updated(self, object nbytes):
        cdef int overflow = 0
        cdef long long x = -1
        cdef Py_ssize_t k
        # A current view of _big (get_buffer handed it out; the frame has
        # not moved since): the bytes are already in place.
        cdef bint in_place = self._view is not None
        cdef bytearray recv = self._recv
        # Without a window (no get_buffer() since the last read) nothing can have been read.
        cdef Py_ssize_t limit = ((self._head_len + self._big_len - self._fgot) if in_place
                                 else RECV_SIZE if recv is not None else 0)
        if PyLong_Check(nbytes):
            x = PyLong_AsLongLongAndOverflow(nbytes, &overflow)
            if overflow or not 0 <= x <= limit:
                raise ValueError(f"nbytes {nbytes} is outside the buffer")
            k = <Py_ssize_t>x
        else:
            # Not an int: the pure twin's own steps, for its exact behaviour.
            if not 0 <= nbytes <= limit:
                raise ValueError(f"nbytes {nbytes} is outside the buffer")
            window = slice(None, nbytes)  # a generic slice, not Cython's C-index one
            k = len((self._view if in_place else memoryview(recv if recv is not None else b""))[window])
        if in_place:
            if self._state == PARSER_FAILED:  # cannot be: failing drops the view
                raise ProtocolError(f"parser failed earlier: {self._failed}")
            self._put_window()  # one left from a read into the window before feed() moved on
            return self._process(NULL, k)  # 0 <= k <= what the frame still needs in _big
        if recv is None:
            if self._state == PARSER_FAILED:
                raise ProtocolError(f"parser failed earlier: {self._failed}")
            return self._process(<const uint8_t*>_no_window, 0)  # k == 0
        try:
            if self._state == PARSER_FAILED:
                raise ProtocolError(f"parser failed earlier: {self._failed}")
            # 0 <= k <= RECV_SIZE == len(recv)
            return self._process(<const uint8_t*>PyByteArray_AS_STRING(recv), k)
        finally:
            self._put_window()

    cdef list _updated_sink(self, object nbytes, FrameSink sink, object ctx):
        """_updated() that first offers ``sink`` each whole binary frame found
        in the read window, where it lies (see FrameSink in the .pxd), until
        the first one it declines or the first other event: those and all
        that follow come back as events, in order.  A masked frame is
        unmasked in place, in the window, which this parser owns."""
        if self._recv is None or self._view is not None:
            return self._updated(nbytes)
        self._sink = sink
        self._sink_ctx = ctx
        try:
            return self._updated(nbytes)
        finally:
            self._sink = NULL
            self._sink_ctx = None

    cdef list _feed(self, object data):
        cdef Py_buffer view
        if self._state == PARSER_FAILED:
            raise ProtocolError(f"parser failed earlier: {self._failed}")
        if PyBytes_CheckExact(data):
            return self._process(<const uint8_t*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
        if _get_buffer_or_fail(data, &view, PyBUF_SIMPLE) != 0:
            # The pure twin's `bytearray += data` refusal, text included.
            PyErr_Clear()
            raise TypeError(PyUnicode_FromFormat(
                "can't concat %.100s to bytearray", Py_TYPE(data).tp_name))
        try:
            return self._process(<const uint8_t*>view.buf, view.len)
        finally:
            PyBuffer_Release(&view)

    cdef list _process(self, const uint8_t* data, Py_ssize_t n):
        cdef list events
        # _parse reads _acc through a raw pointer; a re-entrant call (from a
        # finalizer run by the GC during an allocation, say) could move it.
        if self._busy:
            raise RuntimeError("FrameParser re-entered while parsing")
        self._busy = True
        try:
            _drop_view(self)  # the frame moves on: a view handed out earlier is stale
            events = self._consume(data, n)
            if _held_now(self) != self._held and not _settle(self, _held_now(self)):
                raise self._fail(_over_budget(self))
            return events
        except ProtocolError:
            raise  # already failed by _fail()
        except BaseException as exc:
            # Not a protocol violation (MemoryError, say), but the position in
            # the stream is lost all the same: stay failed, like the pure twin.
            if self._state != PARSER_FAILED:
                self._fail(f"{type(exc).__name__}: {exc}")
            raise
        finally:
            self._busy = False

    cdef list _consume(self, const uint8_t* data, Py_ssize_t n):
        cdef list events = []
        cdef Py_ssize_t ip = 0, used
        if data == NULL:
            # buffer_updated() into the view of _big that get_buffer() handed
            # out: the n bytes are in place at the frame's fill position.
            _mask_at(self._big_ptr + (self._fgot - self._head_len),
                     self._big_ptr + (self._fgot - self._head_len), n,
                     self._big_key if self._big_masked else NULL, self._fgot)
            self._fgot += n
            if self._hasher is not None:
                _hash_filled(self)
            if self._fgot == self._flen:
                events.append(_big_event(self))
            return events
        while True:
            if self._state == PARSER_LARGE:
                # A large frame in progress takes what it still needs first;
                # whatever follows it in this input is parsed as usual.
                ip += _big_take(self, data + ip, n - ip)
                if self._fgot < self._flen:
                    return events
                events.append(_big_event(self))
            if self._acc_len > 0 and self._top_up(data, n, &ip, events):
                continue  # _acc held the start of a large frame: the rest is its
            break
        if ip == n:
            return events
        if self._acc_len == 0:
            # The common case: whole frames straight from the input (the last
            # one may be a large frame that takes all the rest).
            ip += self._parse(data + ip, n - ip, events, self._sink != NULL)
            if ip < n:
                _reserve(&self._acc, &self._acc_cap, n - ip)
                memcpy(self._acc, data + ip, <size_t>(n - ip))
                self._acc_len = n - ip
        else:
            # Unreachable while _acc_need() and _parse() agree; if they
            # ever did not, fall back to the pure twin's way: append all,
            # parse all, keep the rest.
            _reserve(&self._acc, &self._acc_cap, self._acc_len + (n - ip))
            memcpy(self._acc + self._acc_len, data + ip, <size_t>(n - ip))
            self._acc_len += n - ip
            used = self._parse(self._acc, self._acc_len, events, False)
            memmove(self._acc, self._acc + used, <size_t>(self._acc_len - used))
            self._acc_len -= used
        return events

    cdef bint _top_up(self, const uint8_t* data, Py_ssize_t n, Py_ssize_t* ipp,
                      list events) except -1:
        """Finish the frame pending in _acc from data[ipp[0]:n], advancing
        ipp[0]; True if that started a large frame (which then holds all of
        _acc and wants the rest of the input first)."""
        cdef Py_ssize_t used
        cdef uint64_t need, take
        # Top the pending frame up from the new input, never past its end
        # (_acc_need() is exactly what _parse waits for), and re-parse it
        # with everything known so far, as the pure twin re-parses its
        # buffer: a violation shows on the same byte in both.
        while True:
            need = self._acc_need()
            take = 0
            if need > <uint64_t>self._acc_len:
                take = need - <uint64_t>self._acc_len
                if take > <uint64_t>(n - ipp[0]):
                    take = <uint64_t>(n - ipp[0])
            if take:
                _reserve(&self._acc, &self._acc_cap, self._acc_len + <Py_ssize_t>take)
                memcpy(self._acc + self._acc_len, data + ipp[0], <size_t>take)
                self._acc_len += <Py_ssize_t>take
                ipp[0] += <Py_ssize_t>take
            used = self._parse_acc(events)
            if used:
                if used < self._acc_len:  # cannot happen; keep the bytes anyway
                    memmove(self._acc, self._acc + used, <size_t>(self._acc_len - used))
                    self._acc_len -= used
                    continue
                self._acc_len = 0
                if self._acc_cap > ACC_KEEP:
                    PyMem_Free(self._acc)
                    self._acc = NULL
                    self._acc_cap = 0
                break
            if ipp[0] == n or take == 0:
                break
        return self._state == PARSER_LARGE

    cdef Py_ssize_t _parse_acc(self, list events) except -1:
        """_parse() of _acc.  With a sink, the parse borrows _acc from the
        parser: a sink that closes the parser meanwhile (which releases its
        buffers) cannot free what the parse still reads."""
        cdef uint8_t* acc = self._acc
        cdef Py_ssize_t cap = self._acc_cap
        if self._sink == NULL:
            return self._parse(acc, self._acc_len, events, False)
        self._acc = NULL
        self._acc_cap = 0
        try:
            return self._parse(acc, self._acc_len, events, True)
        finally:
            if self._acc == NULL and self._state != PARSER_FAILED:
                self._acc = acc
                self._acc_cap = cap
            else:
                PyMem_Free(acc)

    cdef uint64_t _acc_need(self):
        """grid_ws_need() for the frame pending in _acc, except that a large
        frame (see _parse) is wanted only up to the end of its header, plus
        HEAD_MAX payload bytes under split_large: the rest goes straight to
        its final buffer."""
        cdef const uint8_t* p = self._acc
        cdef uint64_t need = grid_ws_need(p, <size_t>self._acc_len)
        cdef uint64_t hdr
        if (self._acc_len < 10 or self._state != PARSER_FRAMES or not (p[0] & 0x80)
                or (p[0] & 0x0F) not in (1, 2) or (p[1] & 0x7F) != 127):
            return need  # large frames have the 64-bit length form
        hdr = 14 if p[1] & 0x80 else 10
        if need - hdr < LARGE_FRAME_C:
            return need
        return hdr + (HEAD_MAX if self._split_large else 0)

    cdef Py_ssize_t _parse(self, const uint8_t* buf, Py_ssize_t n, list events, bint sink) except -1:
        """Parse the complete frames in buf[0:n]; return how many bytes they
        span.  Same checks, in the same order, as the pure twin's loop.
        With ``sink`` (buf is the read window or _acc) whole binary frames go to
        self._sink while it takes them and no event precedes them."""
        cdef Py_ssize_t pos = 0, avail, hdr, start, split_head
        cdef uint64_t split_size
        cdef int b0, b1, opcode
        cdef bint fin, masked, control
        cdef uint64_t length, total
        cdef const uint8_t* key
        while True:
            avail = n - pos
            if avail < 2:
                break
            b0 = buf[pos]
            b1 = buf[pos + 1]
            fin = (b0 & 0x80) != 0
            opcode = b0 & 0x0F
            if b0 & 0x70:
                raise self._fail("reserved bits set in frame header")
            if 3 <= opcode <= 7 or opcode >= 0xB:
                raise self._fail(f"reserved opcode 0x{opcode:x}")
            masked = (b1 & 0x80) != 0
            if self._is_server and not masked:
                raise self._fail("unmasked client frame")
            if not self._is_server and masked:
                raise self._fail("masked server frame")
            length = <uint64_t>(b1 & 0x7F)
            control = opcode >= 0x8
            if control:
                if not fin:
                    raise self._fail("fragmented control frame")
                if length > 125:
                    raise self._fail("oversized control frame")
            hdr = 2
            if length == 126:
                hdr = 4
                if avail < hdr:
                    break
                length = grid_load_be16(buf + pos + 2)
            elif length == 127:
                hdr = 10
                if avail < hdr:
                    break
                length = grid_load_be64(buf + pos + 2)
                if length >> 63:
                    raise self._fail(f"invalid 64-bit frame length {length}")
            if not control:
                if opcode == WS_CONTINUATION:
                    if self._state != PARSER_FRAGMENTED:
                        raise self._fail("stray continuation frame")
                    total = <uint64_t>self._frag_len + length  # both < 2**63: no wrap
                else:
                    if self._state == PARSER_FRAGMENTED:
                        raise self._fail("new data frame inside a fragmented message")
                    total = length
                self._check_size(total)
            if masked:
                hdr += 4
            if avail < hdr or <uint64_t>(avail - hdr) < length:
                # An incomplete unfragmented data frame of LARGE_FRAME or
                # more whose header is in: receive it into its final buffer
                # from here on (it takes all the rest of buf).
                if (avail >= hdr and fin and not control and opcode != WS_CONTINUATION
                        and length >= LARGE_FRAME_C
                        and _begin_large(self, buf + pos + hdr, avail - hdr, opcode, length, masked)):
                    pos = n
                break
            # From here on the whole frame is inside buf[0:n]: the mask key is
            # buf[start-4:start] and the payload buf[start:start+length].
            start = pos + hdr
            key = buf + start - 4 if masked else NULL
            pos = start + <Py_ssize_t>length
            if control:
                events.append((opcode, _payload(buf + start, <Py_ssize_t>length, key)))
            elif opcode == WS_CONTINUATION:
                self._frag_append(buf + start, <Py_ssize_t>length, key)
                if fin:
                    events.append((self._frag_op, PyBytes_FromStringAndSize(
                        <const char*>self._frag, self._frag_len)))
                    self._state = PARSER_FRAMES
                    self._frag_len = 0
                    if self._frag_cap > ACC_KEEP:
                        PyMem_Free(self._frag)
                        self._frag = NULL
                        self._frag_cap = 0
            elif fin:
                if sink and opcode == WS_BINARY and PyList_GET_SIZE(events) == 0:
                    if key != NULL:  # the buffer is ours: unmasked where it lies
                        _mask_at(<uint8_t*>buf + start, buf + start, <Py_ssize_t>length, key, 0)
                        key = NULL
                    # One large message still goes out as a SplitFrame (below);
                    # a container of any size goes to the sink.
                    if ((not self._split_large or length < SPLIT_FRAME_C
                            or _split_point(buf + start, HEAD_MAX, length, &split_head,
                                            &split_size) != _PROBE_OK)
                            and self._sink(self._sink_ctx, buf + start, <Py_ssize_t>length)):
                        if self._state == PARSER_FAILED:
                            return n  # closed by what the frame did: the rest is dropped
                        continue
                    sink = False  # declined: this frame and the rest are events
                if self._split_large and length >= SPLIT_FRAME_C:
                    events.append((opcode, _split_whole(buf + start, <Py_ssize_t>length, key)))
                else:
                    events.append((opcode, _payload(buf + start, <Py_ssize_t>length, key)))
            else:
                self._frag_len = 0
                self._frag_append(buf + start, <Py_ssize_t>length, key)
                self._frag_op = opcode
                self._state = PARSER_FRAGMENTED
        return pos

    cdef int _frag_append(self, const uint8_t* src, Py_ssize_t n, const uint8_t* key) except -1:
        _reserve(&self._frag, &self._frag_cap, self._frag_len + n)
        if n:
            if key != NULL:
                grid_mask_copy(self._frag + self._frag_len, src, <size_t>n, key)
            else:
                memcpy(self._frag + self._frag_len, src, <size_t>n)
            self._frag_len += n
        return 0

del _parser_signature
