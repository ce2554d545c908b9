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

#define XXH_INLINE_ALL
#include <xxhash.h>

#define GRID_CRC_INLINE 1

static inline uint64_t grid_xxh3(const void *p, size_t n)
{
    return (uint64_t)XXH3_64bits(p, n);
}

/* XXH3-64 of the concatenation a[0:an] + b[0:bn] + c[0:cn] without joining
 * them: a message's CRC computed over its envelope head, its payload where
 * the caller keeps it, and its subroute id. */
static inline uint64_t grid_xxh3_3(const void *a, size_t an, const void *b, size_t bn,
                                   const void *c, size_t cn)
{
    XXH3_state_t state;
    XXH3_64bits_reset(&state);
    XXH3_64bits_update(&state, a, an);
    XXH3_64bits_update(&state, b, bn);
    XXH3_64bits_update(&state, c, cn);
    return (uint64_t)XXH3_64bits_digest(&state);
}

#else

#define GRID_CRC_INLINE 0

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
