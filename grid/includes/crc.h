/* XXH3-64 for grid's compiled codec: the message CRC (docs/protocol.md §2.3).
 *
 * setup.py defines GRID_HAVE_XXHASH_H when it finds the system's xxHash
 * header (libxxhash-dev, xxhash-devel, Homebrew xxhash).  The header is then
 * compiled in with XXH_INLINE_ALL, so the hash of a small message is a plain
 * C call and a built wheel needs no libxxhash at run time.
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

#ifdef GRID_HAVE_XXHASH_H

/* GRID_CRC_WIDE: on x86-64 with GCC or clang, a build not already for AVX2,
 * and the xxHash release whose AVX2 stripe functions this file calls
 * (0.8.1), inputs past XXH3's short-input range are hashed by those
 * functions when the CPU and the OS support AVX2 (asked once, by
 * grid_crc_init() at import): the same hash, in wider steps.  The header
 * compiles them with a target attribute, and they are called only from the
 * functions below that carry the same attribute, so the rest of the module
 * runs on any x86-64.  Anywhere else everything takes the default build. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__AVX2__)
#include <immintrin.h>
#define XXH_DISPATCH_AVX2 1
#define XXH_TARGET_AVX2 __attribute__((__target__("avx2")))
#endif

#define XXH_INLINE_ALL
#include <xxhash.h>

#define GRID_CRC_INLINE 1

#if defined(XXH_DISPATCH_AVX2) && XXH_VERSION_NUMBER == 801
#define GRID_CRC_WIDE 1
#define GRID_CRC_WIDE_MIN (XXH3_MIDSIZE_MAX + 1) /* shorter inputs take no stripe loop */

static int grid_crc_wide_ok = 0; /* set by grid_crc_init() */

static void grid_crc_init(void)
{
    __builtin_cpu_init();
    grid_crc_wide_ok = __builtin_cpu_supports("avx2") ? 1 : 0;
}

XXH_NO_INLINE XXH_TARGET_AVX2 uint64_t grid_xxh3_wide(const void *p, size_t n)
{
    return (uint64_t)XXH3_hashLong_64b_internal(p, n, XXH3_kSecret, sizeof(XXH3_kSecret),
                                                XXH3_accumulate_512_avx2, XXH3_scrambleAcc_avx2);
}

XXH_NO_INLINE XXH_TARGET_AVX2 uint64_t grid_xxh3_3_wide(const void *a, size_t an, const void *b,
                                                        size_t bn, const void *c, size_t cn)
{
    XXH3_state_t state;
    XXH3_64bits_reset(&state);
    XXH3_update(&state, (const xxh_u8 *)a, an, XXH3_accumulate_512_avx2, XXH3_scrambleAcc_avx2);
    XXH3_update(&state, (const xxh_u8 *)b, bn, XXH3_accumulate_512_avx2, XXH3_scrambleAcc_avx2);
    XXH3_update(&state, (const xxh_u8 *)c, cn, XXH3_accumulate_512_avx2, XXH3_scrambleAcc_avx2);
    return (uint64_t)XXH3_64bits_digest(&state);
}
#else
#define GRID_CRC_WIDE 0

static void grid_crc_init(void)
{
}
#endif

static inline uint64_t grid_xxh3(const void *p, size_t n)
{
#if GRID_CRC_WIDE
    if (n >= GRID_CRC_WIDE_MIN && grid_crc_wide_ok)
        return grid_xxh3_wide(p, n);
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
#if GRID_CRC_WIDE
    if (an + bn + cn >= GRID_CRC_WIDE_MIN && grid_crc_wide_ok)
        return grid_xxh3_3_wide(a, an, b, bn, c, cn);
#endif
    XXH3_64bits_reset(&state);
    XXH3_64bits_update(&state, a, an);
    XXH3_64bits_update(&state, b, bn);
    XXH3_64bits_update(&state, c, cn);
    return (uint64_t)XXH3_64bits_digest(&state);
}

#else

#define GRID_CRC_INLINE 0
#define GRID_CRC_WIDE 0

static void grid_crc_init(void)
{
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
