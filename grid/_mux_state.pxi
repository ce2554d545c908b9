# Included by grid/_mux.pyx: the per-mux bookkeeping (docs/protocol.md §3.4,
# §8.3, §8.4), the compiled twins of grid._mux_py.MuxIdAllocator and MuxState.


@cython.annotation_typing(False)
def _allocator_signature(start: int = 0) -> None:
    pass


@cython.annotation_typing(False)
def _state_signature(mux_id: int, send_seq: int = 0, recv_seq: int = 0, credits: int = 0) -> None:
    pass


@cython.final
cdef class MuxIdAllocator:
    """Hands out caller-side mux ids: pre-incremented from ``start``, wrapping
    at 2**64 and skipping 0, which is reserved for connection pings (§3.4).
    One allocator lives as long as its connection object, across reconnects."""

    # What inspect.signature(MuxIdAllocator) reports (a cdef class's
    # __init__ is a slot wrapper without one).
    __signature__ = _inspect.signature(_allocator_signature)

    def __init__(self, start: int = 0) -> None:
        start = PyNumber_Index(start)
        if not 0 <= start <= _U64_MASK:
            raise ValueError(f"start {start} is outside 0..2**64-1")
        self._last = start

    @property
    def last(self) -> int:
        """The id handed out most recently (``start`` before the first)."""
        return self._last

    def next(self) -> int:
        """Return the next mux id (never 0)."""
        return self._next()

    cdef uint64_t _next(self) except? 0:
        # Unsigned arithmetic wraps at 2**64 by definition.
        cdef uint64_t v = self._last + 1
        if v == 0:
            v = 1
        self._last = v
        return v


@cython.final
cdef class MuxState:
    """Sequence numbers and credits of one mux, seen from one side (§8.3, §8.4),
    and a stream's receiving end for ConnCore's fast paths: the pure twin's
    :class:`grid._mux_py.MuxState`, with fixed-width C counters."""

    __signature__ = _inspect.signature(_state_signature)

    def __init__(self, mux_id: int, send_seq: int = 0, recv_seq: int = 0, credits: int = 0) -> None:
        # Checked with Python ints first, as the pure twin, so out-of-range
        # values give its ValueError rather than a C OverflowError.
        mux_id, send_seq, recv_seq = PyNumber_Index(mux_id), PyNumber_Index(send_seq), PyNumber_Index(recv_seq)
        credits = PyNumber_Index(credits)
        if not 0 <= mux_id <= _U64_MASK:
            raise ValueError(f"mux_id {mux_id} is outside 0..2**64-1")
        if not (0 <= send_seq <= _U32_MASK and 0 <= recv_seq <= _U32_MASK):
            raise ValueError("sequence numbers are 32-bit unsigned")
        if credits < 0:
            raise ValueError("credits must be >= 0")
        self.mux_id = mux_id
        self.send_seq = send_seq
        self.recv_seq = recv_seq
        self.credits = credits  # OverflowError above 2**63-1 (the pure twin has no cap)
        self.waiter = None
        self.items = None
        self.item_waiter = None
        self.capacity = 0
        self.received = 0
        self.owed = 0
        self.flush_every = 1
        self.credit_op = 0
        self.item_op = 0
        self.fast = False

    def next_send_seq(self) -> int:
        """Take the Seq for the next counted outgoing message."""
        return self._next_send_seq()

    cdef uint32_t _next_send_seq(self) except? 0xFFFFFFFF:
        cdef uint32_t s = self.send_seq
        self.send_seq = s + 1  # wraps at 2**32, as Go's uint32
        return s

    def check_recv(self, seq: int) -> None:
        """Accept ``seq`` if it is the one due, else raise IncorrectSequence
        (and leave the counter where it was)."""
        cdef int overflow = 0
        cdef long long x
        cdef uint32_t expected = self.recv_seq
        if PyLong_Check(seq):
            # Compared whole: 2**32 + expected is a mismatch, not a wrap.
            x = PyLong_AsLongLongAndOverflow(seq, &overflow)
            if overflow != 0 or x != <long long>expected:
                raise IncorrectSequence(expected, seq)
        elif seq != expected:
            raise IncorrectSequence(expected, seq)
        self.recv_seq = expected + 1

    cdef int _check_recv(self, uint32_t seq) except -1:
        cdef uint32_t expected = self.recv_seq
        if seq != expected:
            raise IncorrectSequence(expected, seq)
        self.recv_seq = expected + 1
        return 0

    def add_credits(self, n: int = 1) -> int:
        """Return ``n`` credits (an ack or unblock arrived); give the new total."""
        cdef int64_t k
        n = PyNumber_Index(n)
        if n < 0:
            raise ValueError("n must be >= 0")
        k = n  # OverflowError above 2**63-1
        if self.credits > 0 and k > INT64_MAX - self.credits:
            raise OverflowError("credits would overflow a 64-bit counter")
        self.credits += k
        return self.credits

    def take_credit(self) -> bool:
        """Spend one credit if there is one; False means the sender must wait."""
        return self._take_credit()

    cdef bint _take_credit(self) except -1:
        if self.credits > 0:
            self.credits -= 1
            return True
        return False

    def __repr__(self) -> str:
        return (f"MuxState(mux_id={self.mux_id}, send_seq={self.send_seq}, "
                f"recv_seq={self.recv_seq}, credits={self.credits})")
