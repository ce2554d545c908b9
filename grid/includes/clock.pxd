# time.monotonic() in C (see clock.h): the clock request deadlines are kept
# on, read without a Python call where the platform lets C read the same
# clock; -1.0 where it does not (the caller then calls time.monotonic()).
# The header path is relative to grid/, where the generated _mux.c lives.


cdef extern from "includes/clock.h" nogil:
    double grid_monotonic()
