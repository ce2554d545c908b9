/* XXH3-64 compiled for AVX2, for the message CRC of large messages
 * (crc.h decides at run time whether the CPU can run it).
 *
 * The default build of the codec targets the x86-64 baseline, where XXH3
 * hashes with SSE2.  This file is its own compile unit so that the system's
 * xxHash header can be compiled a second time with AVX2 enabled for these
 * functions only; the rest of the module stays runnable on any x86-64 CPU.
 * Where the conditions in crc_avx2.h do not hold (no xxHash header, another
 * architecture or compiler) the file compiles to nothing.
 */
#include "crc_avx2.h"

#if GRID_CRC_AVX2

#pragma GCC push_options
#pragma GCC target("avx2")

#define XXH_VECTOR XXH_AVX2
#define XXH_INLINE_ALL
#include <xxhash.h>

uint64_t grid_xxh3_avx2(const void *p, size_t n)
{
    return (uint64_t)XXH3_64bits(p, n);
}

uint64_t grid_xxh3_3_avx2(const void *a, size_t an, const void *b, size_t bn,
                          const void *c, size_t cn)
{
    XXH3_state_t state;
    XXH3_64bits_reset(&state);
    XXH3_64bits_update(&state, a, an);
    XXH3_64bits_update(&state, b, bn);
    XXH3_64bits_update(&state, c, cn);
    return (uint64_t)XXH3_64bits_digest(&state);
}

#pragma GCC pop_options

#else

/* ISO C wants at least one declaration in a compile unit. */
typedef int grid_crc_avx2_unused;

#endif
