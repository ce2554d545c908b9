/* XXH3-64 for grid's compiled codec: the message CRC (docs/protocol.md §2.3).
 *
 * setup.py defines GRID_HAVE_XXHASH_H when it finds the system's xxHash
 * header (libxxhash-dev, xxhash-devel, Homebrew xxhash).  The header is then
 * compiled in with XXH_INLINE_ALL, so the hash of a small message is a plain
 * C call and a built wheel needs no libxxhash at run time.
 *
 * Without the header GRID_CRC_INLINE is 0 and grid_xxh3() is a stub that is
 * never called: the codec takes its CRCs from the `xxhash` Python package
 * instead (grid/_codec.pyx, _xxh3).  A C compiler drops the unused branch,
 * since GRID_CRC_INLINE is a constant.
 */
#ifndef GRID_CRC_H
#define GRID_CRC_H

#include <stddef.h>
#include <stdint.h>

#ifdef GRID_HAVE_XXHASH_H

#define XXH_INLINE_ALL
#include <xxhash.h>

#define GRID_CRC_INLINE 1

static inline uint64_t grid_xxh3(const void *p, size_t n)
{
    return (uint64_t)XXH3_64bits(p, n);
}

#else

#define GRID_CRC_INLINE 0

static inline uint64_t grid_xxh3(const void *p, size_t n)
{
    (void)p;
    (void)n;
    return 0;
}

#endif

#endif /* GRID_CRC_H */
