/* Byte-level helpers for grid's compiled codec (grid/_codec.pyx).
 *
 * Pure C, no Python API: endian-neutral loads and stores (byte by byte, which
 * gcc and clang turn into single bswap/mov instructions), the msgpack integer
 * and bin headers of the grid envelope (docs/protocol.md §2.1) and the
 * WebSocket mask (RFC 6455 §5.3).  Callers check every length before calling;
 * nothing here reads or writes outside the ranges it is given.
 */
#ifndef GRID_WIRE_H
#define GRID_WIRE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline uint64_t grid_load_be16(const uint8_t *p)
{
    return ((uint64_t)p[0] << 8) | (uint64_t)p[1];
}

static inline uint64_t grid_load_be32(const uint8_t *p)
{
    return ((uint64_t)p[0] << 24) | ((uint64_t)p[1] << 16) |
           ((uint64_t)p[2] << 8) | (uint64_t)p[3];
}

static inline uint64_t grid_load_be64(const uint8_t *p)
{
    return (grid_load_be32(p) << 32) | grid_load_be32(p + 4);
}

/* Big-endian unsigned integer of `size` bytes (1, 2, 4 or 8). */
static inline uint64_t grid_load_be(const uint8_t *p, int size)
{
    switch (size) {
    case 1: return p[0];
    case 2: return grid_load_be16(p);
    case 4: return grid_load_be32(p);
    default: return grid_load_be64(p);
    }
}

/* True if the `size`-byte two's complement value `v` is negative. */
static inline int grid_sign_bit(uint64_t v, int size)
{
    return (int)((v >> (8 * size - 1)) & 1);
}

/* The negative value of a `size`-byte two's complement `v` (sign bit set),
 * computed without implementation-defined conversions. */
static inline int64_t grid_negative(uint64_t v, int size)
{
    uint64_t magnitude;
    if (size == 8)
        magnitude = ~v + 1;                       /* 2^64 - v */
    else
        magnitude = ((uint64_t)1 << (8 * size)) - v;
    if (magnitude == ((uint64_t)1 << 63))
        return INT64_MIN;
    return -(int64_t)magnitude;
}

static inline uint32_t grid_load_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) |
           ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static inline void grid_store_le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static inline void grid_store_be16(uint8_t *p, uint64_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static inline void grid_store_be32(uint8_t *p, uint64_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static inline void grid_store_be64(uint8_t *p, uint64_t v)
{
    grid_store_be32(p, v >> 32);
    grid_store_be32(p + 4, v & 0xFFFFFFFFu);
}

/* Size of msgp's AppendUint64 encoding of v: fixint, cc, cd, ce or cf. */
static inline size_t grid_uint_size(uint64_t v)
{
    if (v < 0x80) return 1;
    if (v < 0x100) return 2;
    if (v < 0x10000) return 3;
    if (v < 0x100000000ull) return 5;
    return 9;
}

/* Write the smallest unsigned msgpack form of v; return the end. */
static inline uint8_t *grid_put_uint(uint8_t *w, uint64_t v)
{
    if (v < 0x80) {
        *w = (uint8_t)v;
        return w + 1;
    }
    if (v < 0x100) {
        w[0] = 0xcc;
        w[1] = (uint8_t)v;
        return w + 2;
    }
    if (v < 0x10000) {
        w[0] = 0xcd;
        grid_store_be16(w + 1, v);
        return w + 3;
    }
    if (v < 0x100000000ull) {
        w[0] = 0xce;
        grid_store_be32(w + 1, v);
        return w + 5;
    }
    w[0] = 0xcf;
    grid_store_be64(w + 1, v);
    return w + 9;
}

/* Size of the bin8/16/32 header for n bytes (n < 2^32, checked by the caller). */
static inline size_t grid_bin_header_size(uint64_t n)
{
    if (n < 0x100) return 2;
    if (n < 0x10000) return 3;
    return 5;
}

static inline uint8_t *grid_put_bin_header(uint8_t *w, uint64_t n)
{
    if (n < 0x100) {
        w[0] = 0xc4;
        w[1] = (uint8_t)n;
        return w + 2;
    }
    if (n < 0x10000) {
        w[0] = 0xc5;
        grid_store_be16(w + 1, n);
        return w + 3;
    }
    w[0] = 0xc6;
    grid_store_be32(w + 1, n);
    return w + 5;
}

/* dst[i] = src[i] ^ key[i % 4] for i < n.  dst == src (in place) is fine,
 * every chunk is read before it is written; partial overlap is not.
 * Eight bytes per step through a uint64_t: the key repeated twice has the
 * same byte layout as the data whatever the host's endianness, and memcpy
 * keeps unaligned loads and stores well defined (it compiles to plain moves). */
static inline void grid_mask_copy(uint8_t *dst, const uint8_t *src, size_t n,
                                  const uint8_t *key)
{
    uint8_t k8[8];
    uint64_t k, a, b;
    size_t i = 0;

    memcpy(k8, key, 4);
    memcpy(k8 + 4, key, 4);
    memcpy(&k, k8, 8);
    for (; i + 16 <= n; i += 16) {
        memcpy(&a, src + i, 8);
        memcpy(&b, src + i + 8, 8);
        a ^= k;
        b ^= k;
        memcpy(dst + i, &a, 8);
        memcpy(dst + i + 8, &b, 8);
    }
    for (; i + 8 <= n; i += 8) {
        memcpy(&a, src + i, 8);
        a ^= k;
        memcpy(dst + i, &a, 8);
    }
    for (; i < n; i++)
        dst[i] = src[i] ^ key[i & 3];
}

/* Total bytes the WebSocket frame at p needs (RFC 6455 §5.2), judged from
 * the n bytes present: 2 until the fixed header is in, then the extended
 * header size until that is in, then header + mask key + payload.  These
 * are exactly the points where FrameParser._parse waits for more input. */
static inline uint64_t grid_ws_need(const uint8_t *p, size_t n)
{
    uint64_t hdr = 2, len;

    if (n < 2)
        return 2;
    len = p[1] & 0x7f;
    if (len == 126) {
        hdr = 4;
        if (n < 4)
            return 4;
        len = grid_load_be16(p + 2);
    } else if (len == 127) {
        hdr = 10;
        if (n < 10)
            return 10;
        len = grid_load_be64(p + 2);
        if (len > UINT64_MAX - 14)      /* rejected by the parser; no wrap */
            len = UINT64_MAX - 14;
    }
    if (p[1] & 0x80)
        hdr += 4;
    return hdr + len;
}

#endif /* GRID_WIRE_H */
