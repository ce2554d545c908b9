# The message CRC's C side (see crc.h): XXH3-64 from the system's xxHash
# header compiled inline, when setup.py found it.  GRID_CRC_INLINE is 1 then
# and grid_xxh3() / grid_xxh3_3() are the real hash; it is 0 otherwise and
# neither may be called (the codec uses the xxhash package).  The header path is relative
# to grid/, where the generated _codec.c lives.

from libc.stdint cimport uint64_t


cdef extern from "includes/crc.h" nogil:
    const int GRID_CRC_INLINE
    uint64_t grid_xxh3(const void* p, size_t n)
    uint64_t grid_xxh3_3(const void* a, size_t an, const void* b, size_t bn, const void* c,
                         size_t cn)
