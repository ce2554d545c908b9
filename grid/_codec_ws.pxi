# WebSocket framing and masking (RFC 6455 §5.2, §5.3) for the writer side:
# single frames, one message as one frame, and queued messages batched into
# frames as the Go writer does (§4).  Included by grid/_codec.pyx.


# ---------------------------------------------------------------- WebSocket

cdef inline void _mask_at(uint8_t* dst, const uint8_t* src, Py_ssize_t n, const uint8_t* key,
                          Py_ssize_t phase) noexcept nogil:
    """dst[0:n] = src[0:n] unmasked with ``key`` (if not NULL) as it applies
    from payload offset ``phase`` on; dst == src is fine."""
    cdef uint8_t rk[4]
    cdef int i
    if n <= 0:
        return
    if key == NULL:
        if dst != src:
            memcpy(dst, src, <size_t>n)
        return
    for i in range(4):
        rk[i] = key[(phase + i) & 3]
    grid_mask_copy(dst, src, <size_t>n, rk)



def apply_mask(data: Buffer, key: Buffer) -> bytes:
    """XOR ``data`` with the repeating 4-byte ``key`` (RFC 6455 §5.3)."""
    cdef _Bytes kb, db
    cdef bytes out
    kb.held = db.held = False
    try:
        _acquire(key, &kb)
        if kb.n != 4:
            raise ValueError("a WebSocket mask key is 4 bytes")
        _acquire(data, &db)
        if db.n == 0:
            return b""
        out = PyBytes_FromStringAndSize(NULL, db.n)
        grid_mask_copy(<uint8_t*>PyBytes_AS_STRING(out), db.p, <size_t>db.n, kb.p)
        return out
    finally:
        _release(&kb)
        _release(&db)


# Client mask keys (RFC 6455 §5.3, §10.3: unpredictable to the network).
# They are cut from a pool of the OS's randomness (os.urandom, the kernel's
# CSPRNG), refilled in one call every MASK_POOL // 4 keys; there is no PRNG
# in between, and no part of a pool is handed out twice.
cdef enum:
    MASK_POOL = 4096            # bytes of OS randomness fetched per refill

cdef uint8_t _mask_pool[MASK_POOL]
cdef Py_ssize_t _mask_pos = MASK_POOL  # used up: the first draw fills the pool
cdef object _urandom = os.urandom


cdef int _draw_mask_key(uint8_t* out) except -1:
    """Write the next 4-byte mask key of the pool to ``out``."""
    global _mask_pos
    cdef bytes fresh
    if _mask_pos > MASK_POOL - 4:
        # os.urandom may let other threads run: the pool changes only after it.
        fresh = _urandom(MASK_POOL)
        if PyBytes_GET_SIZE(fresh) != MASK_POOL:
            raise RuntimeError("os.urandom returned a short read")
        memcpy(_mask_pool, PyBytes_AS_STRING(fresh), MASK_POOL)
        _mask_pos = 0
    memcpy(out, _mask_pool + _mask_pos, 4)
    _mask_pos += 4
    return 0


def mask_key() -> bytes:
    """A fresh 4-byte client mask key (RFC 6455 §5.3), from a pool of
    ``os.urandom`` bytes refilled a few thousand bytes at a time."""
    cdef bytes out = PyBytes_FromStringAndSize(NULL, 4)
    _draw_mask_key(<uint8_t*>PyBytes_AS_STRING(out))
    return out


cdef bytes frame_message_c(bytes msg, bint masked):
    """``encode_frames([msg], mask_key() if masked else None)`` for one
    encoded message: its binary frame, masked with a key drawn from the
    pool when ``masked``."""
    cdef Py_ssize_t n = PyBytes_GET_SIZE(msg)
    cdef bytes out = PyBytes_FromStringAndSize(
        NULL, _frame_header_size(n) + (4 if masked else 0) + n)
    cdef uint8_t* w = _put_frame_header(<uint8_t*>PyBytes_AS_STRING(out), 0x80 | WS_BINARY, n,
                                        masked)
    cdef const uint8_t* p = <const uint8_t*>PyBytes_AS_STRING(msg)
    if not masked:
        memcpy(w, p, <size_t>n)
        return out
    _draw_mask_key(w)
    if n:
        grid_mask_copy(w + 4, p, <size_t>n, w)
    return out


cdef object _mask_key(object mask_key, _Bytes* kb):
    """Borrow a client mask key into ``kb`` (the caller releases it): a fresh
    random one for ``b""``, else exactly 4 bytes.  Returns the object ``kb``
    borrows from, which the caller must keep."""
    _acquire(mask_key, kb)
    if kb.n == 0:
        _release(kb)
        mask_key = PyBytes_FromStringAndSize(NULL, 4)
        _draw_mask_key(<uint8_t*>PyBytes_AS_STRING(mask_key))
        _acquire(mask_key, kb)
    if kb.n != 4:
        raise ValueError("a WebSocket mask key is 4 bytes")
    return mask_key


def encode_frame(
    payload: Buffer,
    opcode: int = WS_BINARY,
    mask_key: Buffer | None = None,
    fin: bool = True,
) -> bytes:
    """Encode one WebSocket frame.  With ``mask_key`` (4 bytes) the frame is
    masked, as a client must; without it, unmasked, as a server must.
    ``mask_key=b""`` draws a random key."""
    cdef _Bytes pb, kb
    cdef int overflow = 0
    cdef long long op
    cdef Py_ssize_t hdr
    cdef uint8_t first
    cdef bytes out
    cdef uint8_t* w
    opcode = PyNumber_Index(opcode)
    op = PyLong_AsLongLongAndOverflow(opcode, &overflow)
    if overflow or not 0 <= op <= 0xF:
        raise ValueError(f"opcode {opcode} is outside 0..15")
    pb.held = kb.held = False
    pb.n = kb.n = 0
    pb.p = kb.p = NULL
    try:
        _acquire(payload, &pb)
        first = (0x80 if fin else 0) | <uint8_t>op
        hdr = _frame_header_size(pb.n)
        if mask_key is not None:
            mask_key = _mask_key(mask_key, &kb)  # kept alive: kb borrows from it
        out = PyBytes_FromStringAndSize(NULL, hdr + kb.n + pb.n)
        w = _put_frame_header(<uint8_t*>PyBytes_AS_STRING(out), first, pb.n, kb.n != 0)
        if kb.n:
            memcpy(w, kb.p, 4)
            grid_mask_copy(w + 4, pb.p, <size_t>pb.n, kb.p)
        elif pb.n:
            memcpy(w, pb.p, pb.n)
        return out
    finally:
        _release(&pb)
        _release(&kb)


def encode_message_frame(
    mux_id: int,
    seq: int,
    deadline_ms: int,
    handler: int,
    op: int,
    flags: int,
    payload: Buffer | None = None,
    subroute: Buffer | None = None,
    mask_key: Buffer | None = None,
) -> bytes:
    """One grid message as one complete binary WebSocket frame:
    ``encode_frame(encode_message(...), WS_BINARY, mask_key)`` in a single
    buffer.  Meant for large messages on a worker thread: the payload copy,
    the CRC and the mask run with the GIL released, so the caller's event
    loop keeps going.  ``mask_key`` as for :func:`encode_frame` (``b""``
    draws a random key)."""
    # Masked, as a client sends: the CRC is computed over the payload where
    # it lies, then head, payload and trailers are copied and masked in one
    # pass each.  Unmasked: written as encode_message() writes it.
    cdef uint64_t v[6]
    cdef _Bytes pb, sb, kb
    cdef Py_ssize_t size, hdr, hn, tn
    cdef bytes out
    cdef uint8_t* w
    cdef const uint8_t* key = NULL
    cdef uint8_t head[HEAD_MAX]
    cdef uint8_t tail[SPLIT_TAIL_MAX]
    _fields(v, mux_id, seq, deadline_ms, handler, op, flags)
    pb.held = sb.held = kb.held = False
    pb.n = sb.n = kb.n = 0
    pb.p = sb.p = kb.p = NULL
    try:
        size = _envelope_size(v, payload, subroute, &pb, &sb)
        if mask_key is not None:
            mask_key = _mask_key(mask_key, &kb)  # kept alive: kb borrows from it
            key = kb.p
        hdr = _frame_header_size(size)
        out = PyBytes_FromStringAndSize(NULL, hdr + (4 if key != NULL else 0) + size)
        w = _put_frame_header(<uint8_t*>PyBytes_AS_STRING(out), 0x80 | WS_BINARY, size,
                              key != NULL)
        if key == NULL:
            _write_envelope(w, v, &pb, &sb)
            return out
        memcpy(w, key, 4)
        w += 4
        _head_tail(v, &pb, &sb, head, &hn, tail, &tn)
        _mask_at(w, head, hn, key, 0)
        with nogil:
            _mask_at(w + hn, pb.p, pb.n, key, hn)
        _mask_at(w + hn + pb.n, tail, tn, key, hn + pb.n)
        return out
    finally:
        _release(&pb)
        _release(&sb)
        _release(&kb)


# ---------------------------------------------------------------- writer batches


cdef struct _Limit:
    # A batching bound of encode_frames: an int as a C value (clamped, it is
    # only compared), anything else compared with Python semantics.
    long long c
    bint is_c


cdef int _set_bound(_Limit* lim, object value) except -1:
    cdef int overflow = 0
    lim.is_c = PyLong_Check(value)
    if lim.is_c:
        lim.c = PyLong_AsLongLongAndOverflow(value, &overflow)
        if overflow:
            lim.c = LLONG_MAX if overflow > 0 else LLONG_MIN
    return 0


cdef inline bint _below(Py_ssize_t v, _Limit* lim, object value) except -1:
    if lim.is_c:
        return v < lim.c
    return v < value


cdef inline Py_ssize_t _frame_header_size(Py_ssize_t body):
    return 2 if body < 126 else (4 if body < 0x10000 else 10)


cdef uint8_t* _put_frame_header(uint8_t* w, uint8_t first, Py_ssize_t body,
                               bint masked) noexcept:
    """A frame header: ``first`` (FIN and opcode), then the length of a
    ``body``-byte payload with the MASK bit set if ``masked`` (the key itself
    is the caller's); returns where the key or the payload goes."""
    cdef Py_ssize_t hdr = _frame_header_size(body)
    w[0] = first
    if hdr == 2:
        w[1] = <uint8_t>body
    elif hdr == 4:
        w[1] = 126
        grid_store_be16(w + 2, <uint64_t>body)
    else:
        w[1] = 127
        grid_store_be64(w + 2, <uint64_t>body)
    if masked:
        w[1] |= 0x80
    return w + hdr


def encode_batches(
    messages: Sequence[Buffer | SplitFrame],
    max_messages: int = MERGE_MAX_MESSAGES,
    max_bytes: int = MERGE_MAX_BYTES,
) -> list[Buffer]:
    """The WebSocket message payloads :func:`encode_frames` frames, for a
    server that does the WebSocket framing itself: ``messages`` batched as
    the Go writer does (§4), each batch of one as that message (a
    :class:`SplitFrame` joined into bytes), each larger batch as an OpMerged
    container."""
    # The limits stay Python objects: compared with Python semantics, as the
    # pure twin compares them (encode_frames's C limits are a speed-up).
    cdef Py_ssize_t n = len(messages)
    cdef Py_ssize_t i, start = 0, size = 0, ln
    cdef list out = []
    for i in range(n):
        ln = len(messages[i])
        if i + 1 < n and i - start < max_messages and size + ln < max_bytes:
            size += ln
            continue
        out.append(_joined(messages[start]) if i == start
                   else encode_merged(messages[start:i + 1]))
        start = i + 1
        size = 0
    return out


cdef struct _Part:
    # One queued message of encode_frames, in up to three pieces written one
    # after the other: head, b, tail (head and tail empty unless the message
    # is a SplitFrame, whose payload b is then).
    _Bytes b
    const uint8_t* head
    Py_ssize_t hn
    const uint8_t* tail
    Py_ssize_t tn


cdef object _take_part(object item, _Part* part):
    """Borrow the bytes of queued message ``item`` into ``part`` (the caller
    releases part.b, and keeps the returned object, which holds every
    pointer, alive): a compiled SplitFrame in its three parts, anything
    else as one buffer (another twin's SplitFrame joined first)."""
    cdef SplitFrame s
    part.hn = part.tn = 0
    part.head = part.tail = NULL
    if PyBytes_CheckExact(item):  # the usual message: its own storage, no view needed
        part.b.held = False
        part.b.p = <const uint8_t*>PyBytes_AS_STRING(item)
        part.b.n = PyBytes_GET_SIZE(item)
        return item
    if type(item) is SplitFrame:
        s = <SplitFrame>item
        part.b.held = False
        part.b.p = <const uint8_t*>PyBytes_AS_STRING(s.payload)
        part.b.n = PyBytes_GET_SIZE(s.payload)
        part.head = <const uint8_t*>PyBytes_AS_STRING(s.head)
        part.hn = PyBytes_GET_SIZE(s.head)
        part.tail = <const uint8_t*>PyBytes_AS_STRING(s.tail)
        part.tn = PyBytes_GET_SIZE(s.tail)
        return item
    item = _joined(item)
    _acquire(item, &part.b)
    return item


cdef inline uint8_t* _emit(uint8_t* w, const uint8_t* src, Py_ssize_t n, const uint8_t* key,
                           const uint8_t* body) noexcept:
    """Copy src[0:n] to ``w`` inside the frame payload that starts at
    ``body``, masked with ``key`` (if not NULL) at w's offset in it: the copy
    and the mask are one pass.  Returns w + n."""
    _mask_at(w, src, n, key, w - body)
    return w + n


cdef inline uint8_t* _emit_part(uint8_t* w, _Part* part, const uint8_t* key,
                                const uint8_t* body) noexcept:
    if part.hn == 0 and key == NULL:  # one buffer, unmasked: a plain copy
        if part.b.n:
            memcpy(w, part.b.p, <size_t>part.b.n)
        return w + part.b.n
    w = _emit(w, part.head, part.hn, key, body)
    w = _emit(w, part.b.p, part.b.n, key, body)
    return _emit(w, part.tail, part.tn, key, body)


def encode_frames(
    messages: Sequence[Buffer | SplitFrame],
    mask_key: Buffer | None = None,
    max_messages: int = MERGE_MAX_MESSAGES,
    max_bytes: int = MERGE_MAX_BYTES,
) -> bytes:
    """Encode queued grid messages as binary WebSocket frames, ready to write.

    Messages are batched as the Go writer does (§4): a message joins the
    current batch while fewer than ``max_messages`` precede it and the batch
    stays below ``max_bytes``; a batch of one leaves as a plain message, a
    larger one as an OpMerged container.  With ``mask_key`` (4 bytes) every
    frame is masked with it, as a client must.  A message may be a
    :class:`SplitFrame` (its parts joined, as ``bytes(frame)``).
    """
    # Two passes, one allocation: the first decides the batches exactly as
    # the pure twin's loop (len() of each message, the same comparisons) and
    # borrows every message's bytes, raising what the pure twin raises in
    # the order it would; the second writes all frames into one bytes, each
    # byte of a message copied once, masked as it is copied.
    cdef Py_ssize_t n
    cdef Py_ssize_t i, j, start = 0, size = 0, ln, got = 0, nb = 0, body, total = 0
    cdef Py_ssize_t* ends = NULL     # ends[b]: one past the last message of batch b
    cdef Py_ssize_t* bodies = NULL   # bodies[b]: payload size of batch b's frame
    cdef _Part* parts = NULL
    cdef _Bytes kb
    cdef _Limit lim_n, lim_b
    cdef bint masked = mask_key is not None, random_key = False, key_checked = False
    cdef list items
    cdef bytes out
    cdef uint8_t* w
    cdef uint8_t* frame_body
    cdef uint8_t* done
    cdef const uint8_t* key
    if mask_key is not None and len(mask_key) != 4:
        raise ValueError("a WebSocket mask key is 4 bytes")
    n = len(messages)
    if n == 0:
        return b""
    _set_bound(&lim_n, max_messages)
    _set_bound(&lim_b, max_bytes)
    items = []  # holds every message while we keep pointers into it
    kb.held = False
    kb.n = 0
    kb.p = NULL
    parts = <_Part*>PyMem_Realloc(NULL, <size_t>n * sizeof(_Part))
    ends = <Py_ssize_t*>PyMem_Realloc(NULL, <size_t>n * sizeof(Py_ssize_t))
    bodies = <Py_ssize_t*>PyMem_Realloc(NULL, <size_t>n * sizeof(Py_ssize_t))
    try:
        if parts == NULL or ends == NULL or bodies == NULL:
            raise MemoryError()
        for i in range(n):
            item = messages[i]
            items.append(item)
            ln = len(item)
            if i + 1 < n and _below(i - start, &lim_n, max_messages) and _below(size + ln, &lim_b, max_bytes):
                size += ln
                continue
            # Batch messages[start:i+1], checked as encode_merged/encode_frame would.
            for j in range(start, i + 1):
                item = items[j]
                if PyBytes_CheckExact(item):  # the usual message, inline
                    parts[j].b.held = False
                    parts[j].b.p = <const uint8_t*>PyBytes_AS_STRING(item)
                    parts[j].b.n = PyBytes_GET_SIZE(item)
                    parts[j].hn = parts[j].tn = 0
                else:
                    held = _take_part(item, &parts[j])
                    if held is not item:
                        items[j] = held  # another twin's SplitFrame, joined
                got = j + 1
                ln = parts[j].hn + parts[j].b.n + parts[j].tn
                if i > start and <uint64_t>ln > 0xFFFFFFFF:
                    raise ValueError(f"payload of {ln} bytes is over the 4 GiB bin limit")
            if i == start:
                body = parts[i].hn + parts[i].b.n + parts[i].tn
            else:
                body = 8 + <Py_ssize_t>grid_uint_size(<uint64_t>(i + 1 - start))
                for j in range(start, i + 1):
                    ln = parts[j].hn + parts[j].b.n + parts[j].tn
                    body += <Py_ssize_t>grid_bin_header_size(<uint64_t>ln) + ln
            if masked and not key_checked:
                _acquire(mask_key, &kb)
                if kb.n == 0:
                    random_key = True  # a fresh key per frame, drawn below
                elif kb.n != 4:
                    raise ValueError("a WebSocket mask key is 4 bytes")
                key_checked = True
            total += _frame_header_size(body) + (4 if masked else 0) + body
            ends[nb] = i + 1
            bodies[nb] = body
            nb += 1
            start = i + 1
            size = 0

        out = PyBytes_FromStringAndSize(NULL, total)
        w = <uint8_t*>PyBytes_AS_STRING(out)
        # Each frame below takes exactly the size counted for it above.
        start = 0
        for j in range(nb):
            i = ends[j] - 1  # the batch is messages[start:i+1]
            body = bodies[j]
            w = _put_frame_header(w, 0x80 | WS_BINARY, body, masked)  # FIN, binary (§1.5)
            key = NULL
            if masked:
                if random_key:
                    _draw_mask_key(w)
                else:
                    memcpy(w, kb.p, 4)
                key = w
                w += 4
            frame_body = w
            if i == start:
                # One message: copied and masked in one pass.
                w = _emit_part(w, &parts[i], key, frame_body)
            else:
                # OpMerged container (§4), as encode_merged writes it.  The
                # parts of a large message are masked as they are copied;
                # everything else is masked in place afterwards, in one pass
                # (many small pieces cost less that way than piece by piece).
                w[0] = 0x97
                w[1] = 0x00
                w = grid_put_uint(w + 2, <uint64_t>(i + 1 - start))
                w[0] = 0x00
                w[1] = 0x00
                w[2] = OP_MERGED
                w[3] = 0x00
                w[4] = 0xC4
                w[5] = 0x00
                w += 6
                done = frame_body  # masked up to here
                for ln in range(start, i + 1):
                    w = grid_put_bin_header(
                        w, <uint64_t>(parts[ln].hn + parts[ln].b.n + parts[ln].tn))
                    if key != NULL and parts[ln].hn:
                        _mask_at(done, done, w - done, key, done - frame_body)
                        w = _emit_part(w, &parts[ln], key, frame_body)
                        done = w
                    else:
                        w = _emit_part(w, &parts[ln], NULL, frame_body)
                if key != NULL:
                    _mask_at(done, done, w - done, key, done - frame_body)  # in place
            start = i + 1
        return out
    finally:
        for j in range(got):
            _release(&parts[j].b)
        _release(&kb)
        PyMem_Free(parts)
        PyMem_Free(ends)
        PyMem_Free(bodies)
