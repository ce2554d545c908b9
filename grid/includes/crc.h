/* XXH3-64 for grid's compiled codec: the message CRC (docs/protocol.md §2.3).
 *
 * setup.py defines GRID_HAVE_XXHASH_H when it finds the system's xxHash
 * header (libxxhash-dev, xxhash-devel, Homebrew xxhash).  The header is then
 * compiled in with XXH_INLINE_ALL, so the hash of a small message is a plain
 * C call and a built wheel needs no libxxhash at run time.
 *
 * On x86-64 with GCC a second build of XXH3 for AVX2 sits beside it
 * (crc_avx2.c); grid_crc_use_avx2() checks the CPU, and inputs over
 * GRID_CRC_WIDE bytes go to the AVX2 build where the CPU has it.  Both
 * builds compute the same hash.
 *
 * Without the header GRID_CRC_INLINE is 0 and grid_xxh3() and grid_xxh3_3()
 * are stubs that are never called: the codec takes its CRCs from the `xxhash` Python package
 * instead (grid/_codec.pyx, _xxh3).  A C compiler drops the unused branch,
 * since GRID_CRC_INLINE is a constant.
 */
#ifndef GRID_CRC_H
#define GRID_CRC_H

#include <stddef.h>
#include <stdint.h>

#include "crc_avx2.h"

#ifdef GRID_HAVE_XXHASH_H

#define XXH_INLINE_ALL
#include <xxhash.h>

#define GRID_CRC_INLINE 1

/* XXH3 hashes inputs up to 240 bytes without its striped loop, which is
 * the only part that SIMD width speeds up. */
#define GRID_CRC_WIDE 240

/* 1 when the CRC of a large input uses the AVX2 build (grid_crc_use_avx2). */
static int grid_crc_avx2 = 0;

/* Whether this CPU (and its OS) can run the AVX2 build. */
static inline int grid_crc_avx2_available(void)
{
#if GRID_CRC_AVX2
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") ? 1 : 0;
#else
    return 0;
#endif
}

/* Use the AVX2 build for large inputs (on != 0) where the CPU can run it;
 * returns whether it is used now. */
static inline int grid_crc_use_avx2(int on)
{
    grid_crc_avx2 = on && grid_crc_avx2_available();
    return grid_crc_avx2;
}

static inline uint64_t grid_xxh3(const void *p, size_t n)
{
#if GRID_CRC_AVX2
    if (n > GRID_CRC_WIDE && grid_crc_avx2)
        return grid_xxh3_avx2(p, n);
#endif
    return (uint64_t)XXH3_64bits(p, n);
}

/* XXH3-64 of the concatenation a[0:an] + b[0:bn] + c[0:cn] without joining
 * them: a message's CRC computed over its envelope head, its payload where
 * the caller keeps it, and its subroute id. */
static inline uint64_t grid_xxh3_3(const void *a, size_t an, const void *b, size_t bn,
                                   const void *c, size_t cn)
{
    XXH3_state_t state;
#if GRID_CRC_AVX2
    if (an + bn + cn > GRID_CRC_WIDE && grid_crc_avx2)
        return grid_xxh3_3_avx2(a, an, b, bn, c, cn);
#endif
    XXH3_64bits_reset(&state);
    XXH3_64bits_update(&state, a, an);
    XXH3_64bits_update(&state, b, bn);
    XXH3_64bits_update(&state, c, cn);
    return (uint64_t)XXH3_64bits_digest(&state);
}

#else

#define GRID_CRC_INLINE 0

static inline int grid_crc_use_avx2(int on)
{
    (void)on;
    return 0;
}

static inline uint64_t grid_xxh3(const void *p, size_t n)
{
    (void)p;
    (void)n;
    return 0;
}

static inline uint64_t grid_xxh3_3(const void *a, size_t an, const void *b, size_t bn,
                                   const void *c, size_t cn)
{
    (void)a;
    (void)an;
    (void)b;
    (void)bn;
    (void)c;
    (void)cn;
    return 0;
}

#endif

#endif /* GRID_CRC_H */
