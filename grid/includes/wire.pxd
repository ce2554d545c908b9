# C-only helpers of the compiled codec (see wire.h): endian loads and stores,
# msgpack integer/bin headers, the WebSocket mask.  Plain C, no Python API and
# no failure modes, so no exception specification is needed (extern functions
# are noexcept in Cython 3).  The header path is relative to grid/, where the
# generated _codec.c lives.

from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t


cdef extern from "includes/wire.h" nogil:
    uint64_t grid_load_be16(const uint8_t* p)
    uint64_t grid_load_be32(const uint8_t* p)
    uint64_t grid_load_be64(const uint8_t* p)
    uint64_t grid_load_be(const uint8_t* p, int size)
    int grid_sign_bit(uint64_t v, int size)
    int64_t grid_negative(uint64_t v, int size)
    uint32_t grid_load_le32(const uint8_t* p)
    void grid_store_le32(uint8_t* p, uint32_t v)
    void grid_store_be16(uint8_t* p, uint64_t v)
    void grid_store_be64(uint8_t* p, uint64_t v)
    size_t grid_uint_size(uint64_t v)
    uint8_t* grid_put_uint(uint8_t* w, uint64_t v)
    size_t grid_bin_header_size(uint64_t n)
    uint8_t* grid_put_bin_header(uint8_t* w, uint64_t n)
    void grid_mask_copy(uint8_t* dst, const uint8_t* src, size_t n, const uint8_t* key)
    uint64_t grid_ws_need(const uint8_t* p, size_t n)

