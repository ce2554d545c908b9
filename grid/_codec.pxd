# Declarations of the compiled codec (grid/_codec.pyx), the contract for other
# Cython modules that cimport it (a connection protocol decoding straight from
# its receive buffer, say).  The Python surface is the pure twin's, in
# grid/_codec_py.py; section numbers refer to docs/protocol.md.

cimport cython
from libc.stdint cimport uint8_t, uint32_t, uint64_t


@cython.final
cdef class Message:
    # The seven tuple fields and trailers of one message (§2.1).  Plain Python
    # objects, like the pure twin's slots: reads, writes, __eq__ and __repr__
    # behave identically, and range checks happen on encode.  The decoder
    # fills them with ints / bytes / None.
    cdef public object mux_id       # uint64 MuxID
    cdef public object seq          # uint32 Seq
    cdef public object deadline_ms  # uint32 DeadlineMS
    cdef public object handler      # uint8 Handler id
    cdef public object op           # uint8 Op (§3.2)
    cdef public object flags        # uint8 flag set (§3.1)
    cdef public object payload      # bytes, or None when absent (§2.4)
    cdef public object subroute     # the 32-byte subroute id with FlagSubroute, else None


cdef enum:
    SPLIT_TAIL_MAX = 36         # most bytes a SplitFrame's tail may hold (subroute id + CRC)


@cython.final
cdef class SplitFrame:
    # A large frame's payload as envelope head, grid payload and tail (the
    # pure twin's read-only properties); all three exact bytes.
    cdef readonly bytes head
    cdef readonly bytes payload
    cdef readonly bytes tail
    # The CRC FrameParser computed over head, payload and tail as they
    # arrived (low 32 bits), so that decoding need not pass over the payload
    # again in one step; valid while _crc_known.
    cdef uint32_t _crc
    cdef bint _crc_known


cdef enum ParserState:
    # What FrameParser is in the middle of, between two reads (its _state).
    # Every transition assigns _state; the fields a state uses are valid in it.
    PARSER_FRAMES = 0       # between data messages: whole frames are parsed where they lie;
                            # _acc may hold the start of an unfinished frame
    PARSER_FRAGMENTED = 1   # inside a fragmented data message (_frag, _frag_op): continuation
                            # and control frames expected; _acc as in PARSER_FRAMES
    PARSER_LARGE = 2        # receiving a large frame in place (_big..., _flen, _fgot, _head, _tail)
    PARSER_FAILED = 3       # refused all further input (_failed); every buffer released


# A receiver that takes whole binary frames where they lie in the read window
# (FrameParser._updated_sink): called with ctx and the unmasked payload
# p[0:n], valid during the call only; returns 1 when it took the frame, 0 to
# have it handed out as an event (a copy) like any other.
ctypedef int (*FrameSink)(object ctx, const uint8_t* p, Py_ssize_t n) except -1


@cython.final
cdef class FrameParser:
    cdef ParserState _state     # see ParserState
    cdef object _server         # `server` exactly as given (what the property returns)
    cdef bint _is_server        # its truth value: True means frames must be masked
    cdef object _max_size       # `max_message_size` exactly as given (property, error text)
    cdef uint64_t _limit        # ... as a C bound, when _limit_kind is _LIMIT_C
    cdef int _limit_kind        # _LIMIT_C, _LIMIT_NEGATIVE or _LIMIT_PY (see _set_limit)
    cdef object _failed         # PARSER_FAILED: the text of the violation, else None
    cdef bytearray _recv        # get_buffer()'s read window, borrowed from the pool, else None
    cdef uint8_t* _acc          # PyMem buffer: unparsed bytes, always a prefix of one frame
    cdef Py_ssize_t _acc_len    # bytes used in _acc
    cdef Py_ssize_t _acc_cap    # bytes allocated for _acc
    cdef uint8_t* _frag         # PyMem buffer: the fragmented data message so far (unmasked)
    cdef Py_ssize_t _frag_len
    cdef Py_ssize_t _frag_cap
    cdef int _frag_op           # PARSER_FRAGMENTED: opcode of the message's first frame
    cdef bint _busy             # inside _process (guards the raw pointers against re-entry)
    cdef bint _split_large      # split_large: large one-message frames arrive as SplitFrame
    # PARSER_LARGE: the large frame in progress, received in place: its
    # payload of _flen bytes, _fgot of which are in, is _head (split only)
    # + _big + _tail[:_flen - _head_len - _big_len].
    cdef object _hasher         # split frames with FlagCRC: XXH3 over what has arrived, else None
    cdef Py_ssize_t _hashed     # bytes of _big fed to _hasher so far
    cdef int _big_op            # its opcode
    cdef object _big            # bytes of _big_len, filled in place, referenced by nobody else
    cdef uint8_t* _big_ptr      # ... its storage
    cdef Py_ssize_t _big_len
    cdef Py_ssize_t _flen
    cdef Py_ssize_t _fgot
    cdef Py_ssize_t _head_len   # payload bytes before _big (split), else 0
    cdef object _head           # bytes: the envelope head (split), else None
    cdef uint8_t _tail[SPLIT_TAIL_MAX]
    cdef bint _big_masked
    cdef uint8_t _big_key[4]
    cdef object _view           # the memoryview of _big get_buffer() handed out, while current
    cdef object _budget         # `budget`: bytes shared with other parsers, or None
    cdef Py_ssize_t _held       # bytes taken from _budget (see _held_now)
    cdef FrameSink _sink        # _updated_sink's receiver, during that call only, else NULL
    cdef object _sink_ctx       # ... and its context

    cdef int _set_limit(self, object value) except -1
    cdef int _check_size(self, uint64_t total) except -1
    cdef object _fail(self, str text)
    cdef int _put_window(self) except -1
    cdef int _release_buffers(self) except -1
    cdef object _get_buffer(self)              # get_buffer() for C callers
    cdef list _updated(self, object nbytes)    # buffer_updated() for C callers
    cdef list _updated_sink(self, object nbytes, FrameSink sink, object ctx)
    cdef list _feed(self, object data)         # feed() for C callers
    cdef list _process(self, const uint8_t* data, Py_ssize_t n)
    cdef list _consume(self, const uint8_t* data, Py_ssize_t n)
    cdef Py_ssize_t _parse(self, const uint8_t* buf, Py_ssize_t n, list events, bint sink) except -1
    cdef int _frag_append(self, const uint8_t* src, Py_ssize_t n, const uint8_t* key) except -1
    cdef bint _top_up(self, const uint8_t* data, Py_ssize_t n, Py_ssize_t* ipp, list events) except -1
    cdef Py_ssize_t _parse_acc(self, list events) except -1
    cdef uint64_t _acc_need(self)
    # The budget and large-frame steps are module functions (grid/_codec_ws_recv.pxi).


cdef struct _Tuple:
    # One decoded 7-tuple (§2.1): the six integer fields and where its payload lies.
    uint64_t f[6]        # MuxID, Seq, DeadlineMS, Handler, Op, Flags
    Py_ssize_t start     # payload bytes: data[start:stop]
    Py_ssize_t stop      # ... which is also where the tuple ends


# C-level entry points for other compiled modules.  `data` must stay valid
# for the duration of the call; results own their memory (bytes copies).
# The decoding steps, for a caller that dispatches without building Messages:
# _read_bin finds one bin (a merged container's next message), _decode_tuple
# reads a message's 7-tuple, _trailers checks its CRC and finds its subroute
# id, _build makes the Message -- each with decode_messages()'s checks and
# error texts.  _payload_of is the payload _build gives the Message (None
# when absent, b"" when present but empty, §2.4).
cdef Py_ssize_t _read_bin(const uint8_t* p, Py_ssize_t pos, Py_ssize_t end, str what,
                          Py_ssize_t* start) except -1
cdef int _decode_tuple(const uint8_t* p, Py_ssize_t end, _Tuple* t) except -1
cdef Py_ssize_t _trailers(const uint8_t* p, Py_ssize_t n, uint64_t flags, Py_ssize_t tail,
                          Py_ssize_t* subroute) except -1
cdef Message _build(const uint8_t* p, _Tuple* t, Py_ssize_t subroute)
cdef object _payload_of(const uint8_t* p, _Tuple* t)
cdef Message decode_message_ptr(const uint8_t* data, Py_ssize_t n)
cdef list decode_messages_ptr(const uint8_t* data, Py_ssize_t n)
# encode_message_c returns the encoded message as bytes, or, for a bytes
# payload of SPLIT_FRAME bytes or more, as a SplitFrame whose payload is that
# very object (encode_frames copies it once, straight into the frame).
cdef object encode_message_c(uint64_t mux_id, uint64_t seq, uint64_t deadline_ms, uint64_t handler,
                             uint64_t op, uint64_t flags, object payload, object subroute)
# frame_message_c frames one encoded message (bytes) as encode_frames([msg],
# key) does, masked with a key from the pool when `masked` (a client);
# _draw_mask_key writes the pool's next 4-byte mask key to `out`.
cdef bytes frame_message_c(bytes msg, bint masked)
cdef int _draw_mask_key(uint8_t* out) except -1
# encode_split_c is encode_message_c with no deadline, handler or subroute id,
# always as a SplitFrame: a sender that queues a payload of a few KiB this way
# has it copied once, into the frame, instead of into the message and again
# into the frame.
cdef SplitFrame encode_split_c(uint64_t mux_id, uint64_t seq, uint64_t op, uint64_t flags,
                               bytes payload)
