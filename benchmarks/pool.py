"""Does a byte-buffer pool pay for itself?  Measures what a pool could save.

grid encodes each message into one exactly-sized ``bytes`` and each flush
into one more (``MuxCore.take_frames``).  A pool could only save those
allocations; this prints their cost beside the whole encode and beside a
pooled alternative (encoding into a reused ``bytearray`` and copying out the
``bytes`` the transport needs), for the sizes of the Go pool's classes.

    python benchmarks/pool.py [--json PATH]
"""

from __future__ import annotations

import argparse
import os
import sys
import timeit

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

from _report import print_table, write_json  # noqa: E402

from grid import _codec  # noqa: E402


def best(fn, number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--json")
    args = ap.parse_args()
    rows = []
    out = []
    for size in (512, 4096, 32 * 1024, 96 * 1024):
        payload = os.urandom(size)
        n = 200_000 if size <= 4096 else 20_000
        alloc = best(lambda: bytes(size + 32), n)
        encode = best(lambda: _codec.encode_message(1, 0, 60000, 1, 14, 3, payload), n)
        pool = bytearray(size + 64)
        view = memoryview(pool)

        def pooled() -> bytes:
            # the cheapest pooled variant: fill a reused buffer, then the one
            # copy the transport needs (it keeps a reference to what it gets)
            view[: size] = payload
            return bytes(view[: size + 32])

        pooled_ns = best(pooled, n)
        rows.append([f"{size:,} B", f"{alloc:,.0f}", f"{encode:,.0f}", f"{alloc / encode:.0%}",
                     f"{pooled_ns:,.0f}"])
        out.append({"size": size, "alloc_ns": alloc, "encode_ns": encode, "pooled_copy_ns": pooled_ns})
    print_table("What a buffer pool could save (ns per message, best of 5)",
                ["payload", "bytes alloc", "encode_message", "alloc share", "pooled + copy-out"], rows)
    print("A pool only removes the allocation; the transport still needs an object it may keep,"
          " so a pooled buffer costs a copy-out that is as large as the allocation it saves.")
    if args.json:
        write_json(args.json, {"pool": out})


if __name__ == "__main__":
    main()
