/* time.monotonic() in C where Python reads it with clock_gettime(CLOCK_MONOTONIC)
 * (Linux): the same clock and the same conversion to seconds, without the
 * Python call and its float object.  Elsewhere grid_monotonic() returns -1.0
 * and the caller asks time.monotonic() itself. */
#ifndef GRID_CLOCK_H
#define GRID_CLOCK_H

#include <time.h>

static inline double grid_monotonic(void)
{
#if defined(__linux__) && defined(CLOCK_MONOTONIC)
    struct timespec ts;
    long long ns;

    if (clock_gettime(CLOCK_MONOTONIC, &ts) == 0) {
        ns = (long long)ts.tv_sec * 1000000000LL + (long long)ts.tv_nsec;
        if (ns % 1000000000LL == 0)
            return (double)(ns / 1000000000LL);
        return (double)ns / 1e9;
    }
#endif
    return -1.0;
}

#endif
