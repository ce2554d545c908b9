/* The AVX2 build of XXH3-64 (crc_avx2.c): when it exists and what it offers.
 *
 * GRID_CRC_AVX2 is 1 where the system's xxHash header was found and GCC
 * compiles for x86-64: crc_avx2.c then holds the two functions below, and
 * crc.h calls them for large inputs on CPUs that have AVX2.  Elsewhere it is
 * 0 and neither function exists.
 */
#ifndef GRID_CRC_AVX2_H
#define GRID_CRC_AVX2_H

#include <stddef.h>
#include <stdint.h>

#if defined(GRID_HAVE_XXHASH_H) && defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define GRID_CRC_AVX2 1
__attribute__((visibility("hidden"))) uint64_t grid_xxh3_avx2(const void *p, size_t n);
__attribute__((visibility("hidden"))) uint64_t grid_xxh3_3_avx2(const void *a, size_t an,
                                                                 const void *b, size_t bn,
                                                                 const void *c, size_t cn);
#else
#define GRID_CRC_AVX2 0
#endif

#endif /* GRID_CRC_AVX2_H */
