# Declarations of the compiled mux bookkeeping (grid/_mux.pyx).  The Python
# surface is the pure twin's (grid/_mux_py.py); the cdef methods are the same
# operations for compiled callers, without Python-level argument handling.

cimport cython
from libc.stdint cimport int64_t, uint32_t, uint64_t


@cython.final
cdef class MuxIdAllocator:
    cdef uint64_t _last             # id handed out most recently (start before the first)

    cdef uint64_t _next(self) except? 0


@cython.final
cdef class MuxState:
    # Fixed-width counters (§3.4, §8.3, §8.4).  Readable and writable from
    # Python; assigning a value outside the C type raises OverflowError.
    cdef public uint64_t mux_id
    cdef public uint32_t send_seq   # Seq of the next counted outgoing message (wraps at 2**32)
    cdef public uint32_t recv_seq   # Seq the next checked incoming message must carry
    cdef public int64_t credits     # data messages this side may still send

    cdef uint32_t _next_send_seq(self) except? 0xFFFFFFFF
    cdef int _check_recv(self, uint32_t seq) except -1
    cdef bint _take_credit(self) except -1
