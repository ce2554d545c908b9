# The grid envelope (docs/protocol.md §2, §4): Message, encoding and decoding
# of single messages and OpMerged containers, CRC and subroute trailers.
# Included by grid/_codec.pyx (one compile unit); no WebSocket here.


# ---------------------------------------------------------------- Message


@cython.annotation_typing(False)
def _message_signature(
    mux_id: int = 0,
    seq: int = 0,
    deadline_ms: int = 0,
    handler: int = 0,
    op: int = 0,
    flags: int = 0,
    payload: bytes | None = None,
    subroute: bytes | None = None,
) -> None:
    pass


@cython.final
@cython.freelist(128)
cdef class Message:
    """One decoded grid message (§2.1).

    ``payload`` is ``None`` when absent and ``b""`` when present but empty
    (FlagPayloadIsZero, §2.4).  ``subroute`` is the 32-byte subroute id when
    FlagSubroute is set, else ``None``.
    """

    # A cdef class's __init__ is a slot wrapper without a signature; this is
    # what inspect.signature(Message) reports instead (the pure twin's).
    __signature__ = _inspect.signature(_message_signature)

    def __init__(
        self,
        mux_id: int = 0,
        seq: int = 0,
        deadline_ms: int = 0,
        handler: int = 0,
        op: int = 0,
        flags: int = 0,
        payload: bytes | None = None,
        subroute: bytes | None = None,
    ) -> None:
        self.mux_id = mux_id
        self.seq = seq
        self.deadline_ms = deadline_ms
        self.handler = handler
        self.op = op
        self.flags = flags
        self.payload = payload
        self.subroute = subroute

    def encode(self) -> bytes:
        """Encode this message with its trailers (see :func:`encode_message`)."""
        cdef uint64_t v[6]
        _field(self.mux_id, 0, &v[0])
        _field(self.seq, 1, &v[1])
        _field(self.deadline_ms, 2, &v[2])
        _field(self.handler, 3, &v[3])
        _field(self.op, 4, &v[4])
        _field(self.flags, 5, &v[5])
        return _encode(v, self.payload, self.subroute)

    def __eq__(self, other: object) -> bool:
        cdef Message o
        if not isinstance(other, Message):
            return NotImplemented
        o = <Message>other
        # Tuple comparison, as the pure twin's _key(): identity, then ==.
        return (self.mux_id, self.seq, self.deadline_ms, self.handler, self.op, self.flags,
                self.payload, self.subroute) == (o.mux_id, o.seq, o.deadline_ms, o.handler, o.op,
                                                 o.flags, o.payload, o.subroute)

    __hash__ = None  # mutable

    def __repr__(self) -> str:
        return (
            f"Message(mux_id={self.mux_id}, seq={self.seq}, deadline_ms={self.deadline_ms}, "
            f"handler={self.handler}, op={self.op}, flags={self.flags:#04x}, "
            f"payload={self.payload!r}, subroute={self.subroute!r})"
        )


del _message_signature


# ---------------------------------------------------------------- encoding


cdef int _field(object value, int index, uint64_t* out) except -1:
    """Convert tuple field ``index`` like the pure twin: operator.index, then
    the range check with its ValueError text."""
    cdef int overflow = 0
    cdef long long x
    if not PyLong_Check(value):
        value = PyNumber_Index(value)  # TypeError for float, str, None
    x = PyLong_AsLongLongAndOverflow(value, &overflow)
    if overflow == 0:
        if x >= 0 and <uint64_t>x <= _FIELD_MAX_C[index]:
            out[0] = <uint64_t>x
            return 0
    elif overflow > 0 and index == 0 and value <= _U64_MAX:
        out[0] = value  # 2**63 .. 2**64-1, MuxID only
        return 0
    raise ValueError(f"{_FIELD_NAMES[index]} {PyNumber_Index(value)} is outside 0..{_FIELD_MAX[index]}")


cdef Py_ssize_t _envelope_size(const uint64_t* v, object payload, object subroute,
                               _Bytes* pb, _Bytes* sb) except -1:
    """Borrow payload and subroute into pb / sb (the caller releases both,
    also on error) and return the encoded message's size.  Checks in the
    pure twin's order: payload (type, 4 GiB), then the subroute rules."""
    cdef Py_ssize_t size
    cdef uint64_t flags = v[5]
    cdef int i
    if payload is not None:
        _acquire(payload, pb)
        if <uint64_t>pb.n > 0xFFFFFFFF:
            raise ValueError(f"payload of {pb.n} bytes is over the 4 GiB bin limit")
    if flags & FLAG_SUBROUTE:
        if subroute is None:
            raise ValueError(_NEED_SUBROUTE)
        _acquire(subroute, sb)
        if sb.n != SUBROUTE_LEN:
            raise ValueError(_NEED_SUBROUTE)
    elif subroute is not None:
        raise ValueError("a subroute id needs FlagSubroute in flags")
    size = 1 + <Py_ssize_t>grid_bin_header_size(<uint64_t>pb.n) + pb.n + sb.n
    for i in range(6):
        size += <Py_ssize_t>grid_uint_size(v[i])
    if flags & FLAG_CRC:
        size += CRC_LEN
    return size


cdef uint8_t* _write_head(uint8_t* w, const uint64_t* v, Py_ssize_t payload_len) noexcept nogil:
    """The 7-tuple up to the payload bin's header; returns where the payload goes."""
    cdef int i
    w[0] = 0x97
    w += 1
    for i in range(6):
        w = grid_put_uint(w, v[i])
    return grid_put_bin_header(w, <uint64_t>payload_len)


cdef int _write_envelope(uint8_t* start, const uint64_t* v, _Bytes* pb, _Bytes* sb) except -1:
    """Write the message whose size _envelope_size() gave at ``start``.  A
    payload of LARGE_MESSAGE bytes or more is copied with the GIL released
    (its owner is immutable bytes or a held buffer view)."""
    cdef uint8_t* w = _write_head(start, v, pb.n)
    if pb.n >= LARGE_MESSAGE:
        with nogil:
            memcpy(w, pb.p, <size_t>pb.n)
    elif pb.n:
        memcpy(w, pb.p, <size_t>pb.n)
    w += pb.n
    if sb.n:
        memcpy(w, sb.p, SUBROUTE_LEN)
        w += SUBROUTE_LEN
    if v[5] & FLAG_CRC:
        # §2.2: XXH3 over everything before, low 32 bits little-endian.
        grid_store_le32(w, <uint32_t>_xxh3(start, w - start))
    return 0


cdef bytes _encode(const uint64_t* v, object payload, object subroute):
    cdef _Bytes pb, sb
    cdef bytes out
    pb.held = sb.held = False
    pb.n = sb.n = 0
    pb.p = sb.p = NULL
    try:
        out = PyBytes_FromStringAndSize(NULL, _envelope_size(v, payload, subroute, &pb, &sb))
        _write_envelope(<uint8_t*>PyBytes_AS_STRING(out), v, &pb, &sb)
        return out
    finally:
        _release(&pb)
        _release(&sb)


cdef int _head_tail(const uint64_t* v, _Bytes* pb, _Bytes* sb, uint8_t* head, Py_ssize_t* hn,
                    uint8_t* tail, Py_ssize_t* tn) except -1:
    """The envelope head (HEAD_MAX bytes room) and the trailers
    (SPLIT_TAIL_MAX) of the message whose payload and subroute id
    _envelope_size() borrowed into pb / sb: the message is head + payload +
    tail.  The CRC is XXH3 over the parts where they lie (§2.2)."""
    hn[0] = _write_head(head, v, pb.n) - head
    tn[0] = 0
    if sb.n:
        memcpy(tail, sb.p, SUBROUTE_LEN)
        tn[0] = SUBROUTE_LEN
    if v[5] & FLAG_CRC:
        grid_store_le32(tail + tn[0], <uint32_t>_xxh3_parts(head, hn[0], pb.p, pb.n, tail, tn[0]))
        tn[0] += CRC_LEN
    return 0


cdef SplitFrame _encode_split(const uint64_t* v, bytes payload, object subroute):
    """The message _encode() would write, as a SplitFrame: the envelope head
    and the trailers (subroute id, CRC) as small bytes of their own, the
    payload the caller's own object, not copied.  The CRC is computed over
    the three parts where they lie."""
    cdef _Bytes pb, sb
    cdef uint8_t head[HEAD_MAX]
    cdef uint8_t tail[SPLIT_TAIL_MAX]
    cdef Py_ssize_t hn, tn
    cdef SplitFrame s
    pb.held = sb.held = False
    pb.n = sb.n = 0
    pb.p = sb.p = NULL
    try:
        _envelope_size(v, payload, subroute, &pb, &sb)  # the checks; pb is payload's own storage
        _head_tail(v, &pb, &sb, head, &hn, tail, &tn)
    finally:
        _release(&pb)
        _release(&sb)
    s = SplitFrame.__new__(SplitFrame)
    s.head = PyBytes_FromStringAndSize(<const char*>head, hn)
    s.payload = payload
    s.tail = PyBytes_FromStringAndSize(<const char*>tail, tn)
    return s


cdef object encode_message_c(uint64_t mux_id, uint64_t seq, uint64_t deadline_ms, uint64_t handler,
                             uint64_t op, uint64_t flags, object payload, object subroute):
    """encode_message() for C callers; out-of-range fields raise the same
    ValueError.  A bytes payload of SPLIT_FRAME bytes or more is not copied:
    the message comes back as a SplitFrame holding it (see the .pxd)."""
    cdef uint64_t v[6]
    cdef int i
    v[0] = mux_id
    v[1] = seq
    v[2] = deadline_ms
    v[3] = handler
    v[4] = op
    v[5] = flags
    for i in range(1, 6):
        if v[i] > _FIELD_MAX_C[i]:
            raise ValueError(f"{_FIELD_NAMES[i]} {v[i]} is outside 0..{_FIELD_MAX[i]}")
    if PyBytes_CheckExact(payload) and PyBytes_GET_SIZE(payload) >= SPLIT_FRAME_C:
        return _encode_split(v, <bytes>payload, subroute)
    return _encode(v, payload, subroute)


cdef SplitFrame encode_split_c(uint64_t mux_id, uint64_t seq, uint64_t op, uint64_t flags,
                               bytes payload):
    """encode_message_c() of a message without deadline, handler or
    subroute id, as a SplitFrame whatever the size of its bytes payload
    (see the .pxd); out-of-range fields raise the same ValueError."""
    cdef uint64_t v[6]
    cdef int i
    v[0] = mux_id
    v[1] = seq
    v[2] = 0
    v[3] = 0
    v[4] = op
    v[5] = flags
    for i in range(1, 6):
        if v[i] > _FIELD_MAX_C[i]:
            raise ValueError(f"{_FIELD_NAMES[i]} {v[i]} is outside 0..{_FIELD_MAX[i]}")
    return _encode_split(v, payload, None)


def encode_message(
    mux_id: int,
    seq: int,
    deadline_ms: int,
    handler: int,
    op: int,
    flags: int,
    payload: Buffer | None = None,
    subroute: Buffer | None = None,
) -> bytes:
    """Encode one grid message: the 7-tuple, then the subroute id if
    ``flags & FLAG_SUBROUTE``, then the XXH3 CRC if ``flags & FLAG_CRC`` (§2.2).

    ``payload=None`` is written as an empty bin, as Go does; set
    FLAG_PAYLOAD_IS_ZERO yourself to mark a present-but-empty payload.
    ``subroute`` must be 32 bytes and is required exactly when FlagSubroute is
    set.  Out-of-range fields raise ValueError.
    """
    cdef uint64_t v[6]
    _fields(v, mux_id, seq, deadline_ms, handler, op, flags)
    return _encode(v, payload, subroute)


cdef int _fields(uint64_t* v, object mux_id, object seq, object deadline_ms, object handler,
                 object op, object flags) except -1:
    # All six conversions first, then all six range checks, as the pure twin
    # (so a TypeError in a later field wins over a ValueError in an earlier
    # one).  Plain ints, the usual case, need no conversion.
    if not (PyLong_CheckExact(mux_id) and PyLong_CheckExact(seq) and PyLong_CheckExact(deadline_ms)
            and PyLong_CheckExact(handler) and PyLong_CheckExact(op) and PyLong_CheckExact(flags)):
        mux_id = PyNumber_Index(mux_id)
        seq = PyNumber_Index(seq)
        deadline_ms = PyNumber_Index(deadline_ms)
        handler = PyNumber_Index(handler)
        op = PyNumber_Index(op)
        flags = PyNumber_Index(flags)
    _field(mux_id, 0, &v[0])
    _field(seq, 1, &v[1])
    _field(deadline_ms, 2, &v[2])
    _field(handler, 3, &v[3])
    _field(op, 4, &v[4])
    _field(flags, 5, &v[5])
    return 0


cdef object _joined(object message):
    """An encoded message as a buffer: a SplitFrame (either twin's) joined
    into bytes, anything else as it is."""
    if PyBytes_CheckExact(message):
        return message
    parts = _split_parts(message)
    return message if parts is None else b"".join(parts)


def encode_merged(messages: Sequence[Buffer | SplitFrame]) -> bytes:
    """Build an OpMerged container (§4) from already-encoded messages
    (buffers, or :class:`SplitFrame` parts of one).

    The container itself carries no CRC and no subroute; each inner message
    keeps its own trailers.
    """
    cdef Py_ssize_t n = len(messages)
    cdef Py_ssize_t k, i, got = 0, size
    cdef _Bytes* spans = NULL
    cdef tuple items
    cdef bytes out
    cdef uint8_t* w
    if n > 0xFFFFFFFF:
        raise ValueError("too many messages for one container")
    # A private tuple: its references keep every item (and a bytes item's
    # storage) alive while we hold raw pointers, whatever other code does
    # to the caller's list.
    items = tuple([_joined(m) for m in messages])
    k = PyTuple_GET_SIZE(items)
    spans = <_Bytes*>PyMem_Realloc(NULL, <size_t>(k if k else 1) * sizeof(_Bytes))
    if spans == NULL:
        raise MemoryError()
    try:
        size = 8 + <Py_ssize_t>grid_uint_size(<uint64_t>n)
        for i in range(k):
            _acquire(items[i], &spans[i])
            got = i + 1
            if <uint64_t>spans[i].n > 0xFFFFFFFF:
                raise ValueError(f"payload of {spans[i].n} bytes is over the 4 GiB bin limit")
            size += <Py_ssize_t>grid_bin_header_size(<uint64_t>spans[i].n) + spans[i].n
        out = PyBytes_FromStringAndSize(NULL, size)
        w = <uint8_t*>PyBytes_AS_STRING(out)
        # 97 00 <n> 00 00 11 00 c4 00: MuxID 0, Seq n, Op 17, Flags 0, no payload.
        w[0] = 0x97
        w[1] = 0x00
        w = grid_put_uint(w + 2, <uint64_t>n)
        w[0] = 0x00
        w[1] = 0x00
        w[2] = OP_MERGED
        w[3] = 0x00
        w[4] = 0xC4
        w[5] = 0x00
        w += 6
        for i in range(k):
            w = grid_put_bin_header(w, <uint64_t>spans[i].n)
            if spans[i].n:
                memcpy(w, spans[i].p, spans[i].n)
                w += spans[i].n
        return out
    finally:
        for i in range(got):
            _release(&spans[i])
        PyMem_Free(spans)


# ---------------------------------------------------------------- decoding


cdef Py_ssize_t _read_uint(const uint8_t* p, Py_ssize_t pos, Py_ssize_t end, int index,
                           uint64_t* out) except -1:
    """Read one integer field the way msgp's readers accept it (§2.3); return
    the position after it.  Requires pos >= 0 and end <= len(p)."""
    cdef int b, size
    cdef uint64_t raw
    if pos >= end:
        raise ProtocolError(f"truncated envelope: {_FIELD_NAMES[index]} missing")
    b = p[pos]
    if b < 0x80:
        out[0] = <uint64_t>b
        return pos + 1
    if 0xCC <= b <= 0xD3:
        size = 1 << ((b - 0xCC) & 3)  # cc..cf: 1,2,4,8; d0..d3: 1,2,4,8
        if end - pos - 1 < size:
            raise ProtocolError(f"truncated envelope: {_FIELD_NAMES[index]} cut short")
        raw = grid_load_be(p + pos + 1, size)  # size bytes, present by the test above
        if b >= 0xD0 and grid_sign_bit(raw, size):
            raise ProtocolError(
                f"bad msgpack value: {_FIELD_NAMES[index]} is negative ({grid_negative(raw, size)})"
            )
        if raw > _FIELD_MAX_C[index]:
            raise ProtocolError(
                f"bad msgpack value: {_FIELD_NAMES[index]} {raw} overflows its field"
            )
        out[0] = raw
        return pos + 1 + size
    if b >= 0xE0:
        raise ProtocolError(f"bad msgpack value: {_FIELD_NAMES[index]} is negative ({b - 256})")
    raise ProtocolError(f"bad msgpack type 0x{b:02x} for {_FIELD_NAMES[index]}, want an integer")


cdef Py_ssize_t _read_bin(const uint8_t* p, Py_ssize_t pos, Py_ssize_t end, str what,
                          Py_ssize_t* start) except -1:
    """Find the bin8/16/32 object at ``pos``: set start[0], return its stop."""
    cdef int b, hdr
    cdef uint64_t n
    if pos >= end:
        raise ProtocolError(f"truncated envelope: {what} missing")
    b = p[pos]
    if b == 0xC4:
        hdr = 2
    elif b == 0xC5:
        hdr = 3
    elif b == 0xC6:
        hdr = 5
    else:
        raise ProtocolError(f"bad msgpack type 0x{b:02x} for {what}, want bin")
    if end - pos < hdr:
        raise ProtocolError(f"truncated envelope: {what} header cut short")
    n = grid_load_be(p + pos + 1, hdr - 1)
    if <uint64_t>(end - pos - hdr) < n:
        raise ProtocolError(
            f"truncated envelope: {what} needs {n} bytes, {end - pos - hdr} left"
        )
    start[0] = pos + hdr
    return pos + hdr + <Py_ssize_t>n


cdef int _decode_tuple(const uint8_t* p, Py_ssize_t end, _Tuple* t) except -1:
    """Decode the 7-tuple at the start of p[0:end] into ``t``."""
    cdef int b, i
    cdef Py_ssize_t pos
    cdef uint64_t count
    if end == 0:
        raise ProtocolError("truncated envelope: empty message")
    b = p[0]
    if b == 0x97:
        pos = 1
    elif b == 0xDC or b == 0xDD:
        pos = 3 if b == 0xDC else 5
        if end < pos:
            raise ProtocolError("truncated envelope: array header cut short")
        count = grid_load_be16(p + 1) if b == 0xDC else grid_load_be32(p + 1)
        if count != 7:
            raise ProtocolError(f"wrong array length: {count} elements, want 7")
    elif 0x90 <= b <= 0x9F:
        raise ProtocolError(f"wrong array length: {b - 0x90} elements, want 7")
    else:
        raise ProtocolError(f"bad msgpack type 0x{b:02x} for the envelope, want array")
    for i in range(6):
        pos = _read_uint(p, pos, end, i, &t.f[i])
    t.stop = _read_bin(p, pos, end, "Payload", &t.start)
    return 0


cdef Py_ssize_t _trailers(const uint8_t* p, Py_ssize_t n, uint64_t flags, Py_ssize_t tail,
                          Py_ssize_t* subroute) except -1:
    """Check the CRC and find the subroute id (§2.3 steps 3-4): return the end
    of the body, set subroute[0] to the id's offset or -1.  tail <= n."""
    cdef Py_ssize_t end = n
    cdef uint32_t given, actual
    if flags & FLAG_CRC:
        if end - tail < CRC_LEN:
            raise ProtocolError(f"want crc len 4, got {end - tail}")
        end -= CRC_LEN
        given = grid_load_le32(p + end)  # the 4 bytes after `end`, checked above
        actual = <uint32_t>_xxh3(p, end)
        if given != actual:
            raise ProtocolError(f"crc mismatch: 0x{given:08x} (given) != 0x{actual:08x} (bytes)")
    subroute[0] = -1
    if flags & FLAG_SUBROUTE:
        if end - tail < SUBROUTE_LEN:
            raise ProtocolError(f"want subroute len 32, got {end - tail}")
        end -= SUBROUTE_LEN
        subroute[0] = end
    return end


cdef Message _build(const uint8_t* p, _Tuple* t, Py_ssize_t subroute):
    cdef Message m = Message.__new__(Message)
    cdef uint64_t flags = t.f[5]
    m.mux_id = t.f[0]
    m.seq = t.f[1]
    m.deadline_ms = t.f[2]
    m.handler = t.f[3]
    m.op = t.f[4]
    m.flags = flags
    # tuple fields and both trailers were found inside p[0:n] by the decoder
    m.payload = _payload_of(p, t)
    if subroute >= 0:
        m.subroute = PyBytes_FromStringAndSize(<const char*>p + subroute, SUBROUTE_LEN)
    return m


cdef object _payload_of(const uint8_t* p, _Tuple* t):
    """The payload of the message whose tuple ``t`` was decoded from ``p``."""
    if t.stop > t.start or t.f[5] & FLAG_PAYLOAD_IS_ZERO:
        return PyBytes_FromStringAndSize(<const char*>p + t.start, t.stop - t.start)
    return None


cdef Message decode_message_ptr(const uint8_t* data, Py_ssize_t n):
    """decode_message() over data[0:n]."""
    cdef _Tuple t
    cdef Py_ssize_t subroute
    _decode_tuple(data, n, &t)
    _trailers(data, n, t.f[5], t.stop, &subroute)
    return _build(data, &t, subroute)


cdef list _inner(const uint8_t* p, Py_ssize_t pos, Py_ssize_t end, uint64_t count):
    """The ``count`` bins of a merged container, at p[pos:end] (§4)."""
    cdef list out = []
    cdef uint64_t i
    cdef Py_ssize_t start, stop
    for i in range(count):
        if pos >= end:
            raise ProtocolError(f"merged container announces {count} messages, holds {i}")
        stop = _read_bin(p, pos, end, "merged message", &start)
        out.append(decode_message_ptr(p + start, stop - start))
        pos = stop
    return out


cdef list _iter_merged_ptr(const uint8_t* p, Py_ssize_t n):
    cdef _Tuple t
    cdef Py_ssize_t subroute, end
    _decode_tuple(p, n, &t)
    if t.f[4] != OP_MERGED:
        raise ProtocolError(f"not a merged container: op {t.f[4]}")
    end = _trailers(p, n, t.f[5], t.stop, &subroute)
    return _inner(p, t.stop, end, t.f[1])


cdef list decode_messages_ptr(const uint8_t* data, Py_ssize_t n):
    """decode_messages() over data[0:n]: the container is parsed once (the
    pure twin parses it twice, with the same checks and the same verdict)."""
    cdef _Tuple t
    cdef Py_ssize_t subroute, end
    _decode_tuple(data, n, &t)
    end = _trailers(data, n, t.f[5], t.stop, &subroute)
    if t.f[4] == OP_MERGED:
        return _inner(data, t.stop, end, t.f[1])
    return [_build(data, &t, subroute)]
