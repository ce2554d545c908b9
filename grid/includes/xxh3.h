/* XXH3-64 for grid's compiled codec (the message CRC, GRID-PROTOCOL.md §2.3).
 *
 * xxhash.h is the xxHash project's own single-header library (v0.8.2,
 * BSD 2-Clause, see LICENSE.xxhash), the same algorithm the `xxhash` Python
 * package wraps.  Inlined here so that a CRC of a small message is a plain C
 * call: going through the Python package costs a call, a buffer export and an
 * int object per message, several times the hash itself.
 */
#ifndef GRID_XXH3_H
#define GRID_XXH3_H

#define XXH_INLINE_ALL
#include "xxhash.h"

static inline uint64_t grid_xxh3(const void *p, size_t n)
{
    return (uint64_t)XXH3_64bits(p, n);
}

#endif
