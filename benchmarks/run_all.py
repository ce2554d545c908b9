"""Run every grid benchmark in turn (``make bench``).

    python benchmarks/run_all.py [--json DIR] [--seconds S] [--pin none|split|same]

Runs ``benchmarks/codec.py`` (when present), ``benchmarks/requests.py``,
``benchmarks/streams.py`` and ``benchmarks/interop.py`` with the same
interpreter.  ``--json DIR`` writes ``DIR/codec.json``, ``DIR/requests.json``,
``DIR/streams.json`` and ``DIR/interop.json``; ``--seconds`` and ``--pin`` go
to requests.py, streams.py and interop.py.  Exits
non-zero when a benchmark itself fails (missed performance targets are
reported in the output, not turned into an exit status).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> int:
    ap = argparse.ArgumentParser(description="run all grid benchmarks")
    ap.add_argument("--json", metavar="DIR", help="write one JSON file per benchmark into DIR")
    ap.add_argument("--seconds", type=float, help="measured seconds per requests.py / streams.py cell")
    ap.add_argument("--pin", choices=["none", "split", "same"], help="requests.py / streams.py CPU placement")
    args = ap.parse_args()

    if args.json:
        os.makedirs(args.json, exist_ok=True)

    plan = []
    codec = os.path.join(HERE, "codec.py")
    if os.path.exists(codec):
        extra = ["--json", os.path.join(args.json, "codec.json")] if args.json else []
        plan.append(("codec", [codec] + extra))
    else:
        print("run_all: benchmarks/codec.py not present; skipped", flush=True)
    plan.append(("pool", [os.path.join(HERE, "pool.py")]
                 + (["--json", os.path.join(args.json, "pool.json")] if args.json else [])))
    extra = ["--json", os.path.join(args.json, "requests.json")] if args.json else []
    if args.seconds is not None:
        extra += ["--seconds", str(args.seconds)]
    if args.pin is not None:
        extra += ["--pin", args.pin]
    plan.append(("requests", [os.path.join(HERE, "requests.py")] + extra))
    extra = ["--json", os.path.join(args.json, "streams.json")] if args.json else []
    if args.seconds is not None:
        extra += ["--seconds", str(args.seconds)]
    if args.pin is not None:
        extra += ["--pin", args.pin]
    plan.append(("streams", [os.path.join(HERE, "streams.py")] + extra))
    # Python and Go grid nodes in every pairing (Go pairs skipped without a Go toolchain).
    extra = ["--json", os.path.join(args.json, "interop.json")] if args.json else []
    if args.seconds is not None:
        extra += ["--seconds", str(args.seconds)]
    if args.pin is not None:
        extra += ["--pin", args.pin]
    plan.append(("interop", [os.path.join(HERE, "interop.py")] + extra))

    failed = []
    for name, cmd in plan:
        print(f"\n===== {name} =====", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call([sys.executable] + cmd)
        print(f"===== {name}: exit {rc}, {time.perf_counter() - t0:.1f} s =====", flush=True)
        if rc != 0:
            failed.append(f"{name} (exit {rc})")
    if failed:
        print("run_all: failed: " + ", ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
