# Large messages as SplitFrame (envelope head, payload, tail): what FrameParser
# hands out for a large one-message frame with split_large, and its decoding.
# Part of the envelope layer; included by grid/_codec.pyx.


# ---------------------------------------------------------------- split frames


@cython.annotation_typing(False)
def _split_signature(head: Buffer, payload: Buffer, tail: Buffer) -> None:
    pass


cdef bytes _owned(object data):
    """The pure twin's _bytes(): exact bytes as they are, other buffers copied."""
    if PyBytes_CheckExact(data):
        return <bytes>data
    return bytes(_flat_view(data))


@cython.final
cdef class SplitFrame:
    """The payload of a large WebSocket frame holding one grid message, in
    three parts that join to the frame payload: ``head`` (the envelope up to
    and including the payload's bin header), ``payload`` (the grid message's
    payload bytes) and ``tail`` (what follows: subroute id and CRC, if any).

    :class:`FrameParser` with ``split_large=True`` produces it for data
    frames of at least :data:`SPLIT_FRAME` bytes, copying ``payload`` out of
    its read window once (a frame of :data:`LARGE_FRAME` bytes or more is
    received straight into it); :func:`decode_messages` and
    :func:`decode_message` accept it and hand out that very ``payload``
    object as the message's payload, with no copy.  :func:`encode_frames`,
    :func:`encode_batches` and :func:`encode_merged` take one as an encoded
    message (a sender's core may queue one for a large payload, whose bytes
    are then copied once, into the frame).  ``bytes(frame)`` joins the parts
    (a copy).  Equal to a SplitFrame of either twin with equal parts, never
    to plain bytes.
    """

    __signature__ = _inspect.signature(_split_signature)

    def __init__(self, head: Buffer, payload: Buffer, tail: Buffer) -> None:
        self.head = _owned(head)
        self.payload = _owned(payload)
        self.tail = _owned(tail)

    def __bytes__(self) -> bytes:
        return self.head + self.payload + self.tail

    def __len__(self) -> int:
        return len(self.head) + len(self.payload) + len(self.tail)

    def __eq__(self, other: object) -> bool:
        parts = _split_parts(other)
        if parts is None:
            return NotImplemented
        return (self.head, self.payload, self.tail) == parts

    __hash__ = None  # as Message: compared by value, not hashed

    def __repr__(self) -> str:
        return (f"SplitFrame(head={self.head!r}, payload=<{len(self.payload)} bytes>, "
                f"tail={self.tail!r})")


del _split_signature

# Module names of the two SplitFrame classes; each twin accepts both.
cdef tuple _SPLIT_MODULES = ("grid._codec", "grid._codec_py")


cdef tuple _split_parts(object data):
    """(head, payload, tail) of a SplitFrame of either twin, else None."""
    cdef SplitFrame s
    cdef object cls = type(data)
    if cls is SplitFrame:
        s = <SplitFrame>data
        return (s.head, s.payload, s.tail)
    if cls.__name__ == "SplitFrame" and cls.__module__ in _SPLIT_MODULES:
        return (data.head, data.payload, data.tail)
    return None


cdef enum:
    # _probe_tuple verdicts (the pure twin's _MORE, _NO, _OK)
    _PROBE_MORE = 0
    _PROBE_NO = 1
    _PROBE_OK = 2


cdef int _probe_tuple(const uint8_t* p, Py_ssize_t n, _Tuple* t, uint64_t* length) noexcept:
    """The pure twin's _probe_head(): read the envelope head at p[0:n] (the
    7-tuple up to its payload's bin header) without needing the payload:
    _PROBE_OK with t.f, t.start (where the payload starts) and length[0]
    (its announced size) set; _PROBE_MORE when p[0:n] ends inside the head;
    _PROBE_NO when it is no head that _decode_tuple would accept."""
    cdef Py_ssize_t pos
    cdef int b, i, size, hdr
    cdef uint64_t raw
    if n < 1:
        return _PROBE_MORE
    b = p[0]
    if b == 0x97:
        pos = 1
    elif b == 0xDC or b == 0xDD:
        pos = 3 if b == 0xDC else 5
        if n < pos:
            return _PROBE_MORE
        if (grid_load_be16(p + 1) if b == 0xDC else grid_load_be32(p + 1)) != 7:
            return _PROBE_NO
    else:
        return _PROBE_NO
    for i in range(6):
        if pos >= n:
            return _PROBE_MORE
        b = p[pos]
        if b < 0x80:
            t.f[i] = <uint64_t>b
            pos += 1
            continue
        if b < 0xCC or b > 0xD3:
            return _PROBE_NO
        size = 1 << ((b - 0xCC) & 3)
        if n - pos - 1 < size:
            return _PROBE_MORE
        raw = grid_load_be(p + pos + 1, size)  # size bytes, present by the test above
        if (b >= 0xD0 and grid_sign_bit(raw, size)) or raw > _FIELD_MAX_C[i]:
            return _PROBE_NO
        t.f[i] = raw
        pos += 1 + size
    if pos >= n:
        return _PROBE_MORE
    b = p[pos]
    hdr = 2 if b == 0xC4 else (3 if b == 0xC5 else (5 if b == 0xC6 else 0))
    if hdr == 0:
        return _PROBE_NO
    if n - pos < hdr:
        return _PROBE_MORE
    t.start = pos + hdr
    length[0] = grid_load_be(p + pos + 1, hdr - 1)
    return _PROBE_OK


cdef int _split_point(const uint8_t* first, Py_ssize_t n, uint64_t flen, Py_ssize_t* head_len,
                      uint64_t* size) noexcept:
    """The pure twin's _split_point(): where FrameParser splits a frame
    payload of ``flen`` bytes that starts with first[0:n] (unmasked)."""
    cdef _Tuple t
    cdef uint64_t length
    cdef int verdict = _probe_tuple(first, n, &t, &length)
    if verdict != _PROBE_OK:
        return verdict
    if (t.f[4] == OP_MERGED or <uint64_t>t.start > flen or length > flen - <uint64_t>t.start
            or flen - <uint64_t>t.start - length > SPLIT_TAIL_MAX):
        return _PROBE_NO
    head_len[0] = t.start
    size[0] = length
    return _PROBE_OK


cdef object _known_crc(object data):
    """The CRC FrameParser computed for a SplitFrame it made, else None."""
    if type(data) is SplitFrame and (<SplitFrame>data)._crc_known:
        return (<SplitFrame>data)._crc
    return None


cdef Message _decode_split(bytes head, bytes payload, bytes tail, object known_crc=None):
    """The pure twin's _decode_split(): decode_message() of the joined parts
    without joining them, when ``head`` is exactly the envelope up to the
    payload (as FrameParser splits); None otherwise."""
    cdef _Tuple t
    cdef uint64_t length, flags
    cdef Py_ssize_t end = PyBytes_GET_SIZE(tail)  # the bytes after the tuple are all in the tail
    cdef Py_ssize_t pn = PyBytes_GET_SIZE(payload)
    cdef const uint8_t* tp = <const uint8_t*>PyBytes_AS_STRING(tail)
    cdef uint32_t given, actual
    cdef Message m
    if (_probe_tuple(<const uint8_t*>PyBytes_AS_STRING(head), PyBytes_GET_SIZE(head), &t, &length)
            != _PROBE_OK or t.start != PyBytes_GET_SIZE(head) or length != <uint64_t>pn
            or t.f[4] == OP_MERGED):
        return None
    flags = t.f[5]
    if flags & FLAG_CRC:
        if end < CRC_LEN:
            raise ProtocolError(f"want crc len 4, got {end}")
        end -= CRC_LEN
        given = grid_load_le32(tp + end)  # the 4 bytes after `end`, checked above
        if known_crc is not None:  # computed by FrameParser as the bytes arrived
            actual = <uint32_t>known_crc
        else:  # over the three parts where they lie (each bytes, held by the caller)
            actual = <uint32_t>_xxh3_parts(<const uint8_t*>PyBytes_AS_STRING(head),
                                           PyBytes_GET_SIZE(head),
                                           <const uint8_t*>PyBytes_AS_STRING(payload), pn, tp, end)
        if given != actual:
            raise ProtocolError(f"crc mismatch: 0x{given:08x} (given) != 0x{actual:08x} (bytes)")
    m = Message.__new__(Message)
    if flags & FLAG_SUBROUTE:
        if end < SUBROUTE_LEN:
            raise ProtocolError(f"want subroute len 32, got {end}")
        end -= SUBROUTE_LEN
        m.subroute = PyBytes_FromStringAndSize(<const char*>tp + end, SUBROUTE_LEN)
    m.mux_id = t.f[0]
    m.seq = t.f[1]
    m.deadline_ms = t.f[2]
    m.handler = t.f[3]
    m.op = t.f[4]
    m.flags = flags
    if pn or flags & FLAG_PAYLOAD_IS_ZERO:
        m.payload = payload  # the frame's own object: no copy
    return m


def decode_message(data: Buffer | SplitFrame) -> Message:
    """Decode one grid message, verifying its CRC and cutting its subroute id.

    Also takes a :class:`SplitFrame`: the result is the joined bytes' one,
    with the frame's own ``payload`` object as the message payload.
    Raises :class:`grid.ProtocolError` naming what was wrong.
    """
    cdef _Bytes b
    cdef tuple parts
    cdef Message m
    if PyBytes_CheckExact(data):
        return decode_message_ptr(<const uint8_t*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
    parts = _split_parts(data)
    if parts is not None:
        m = _decode_split(parts[0], parts[1], parts[2], _known_crc(data))
        if m is not None:
            return m
        data = b"".join(parts)
        return decode_message_ptr(<const uint8_t*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
    _acquire(data, &b)
    try:
        return decode_message_ptr(b.p, b.n)
    finally:
        _release(&b)


def iter_merged(data: Buffer) -> list[Message]:
    """Decode an OpMerged container (§4) and return its inner messages in order.

    The container's Seq announces the count; fewer bins than announced is a
    ProtocolError, bytes after the last announced bin are ignored (as Go
    does).  Inner messages are decoded but not expanded further: a nested
    container comes back as a Message with op 17 for the caller to reject.
    """
    cdef _Bytes b
    _acquire(data, &b)
    try:
        return _iter_merged_ptr(b.p, b.n)
    finally:
        _release(&b)


def decode_messages(data: Buffer | SplitFrame) -> list[Message]:
    """Decode one WebSocket message's worth of grid data: a plain message comes
    back as a one-element list, a merged container as its inner messages.
    A :class:`SplitFrame` decodes as its joined bytes would, without the join."""
    cdef _Bytes b
    cdef tuple parts
    cdef Message m
    if PyBytes_CheckExact(data):
        return decode_messages_ptr(<const uint8_t*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
    parts = _split_parts(data)
    if parts is not None:
        m = _decode_split(parts[0], parts[1], parts[2], _known_crc(data))
        if m is not None:
            return [m]
        data = b"".join(parts)
        return decode_messages_ptr(<const uint8_t*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
    _acquire(data, &b)
    try:
        return decode_messages_ptr(b.p, b.n)
    finally:
        _release(&b)
