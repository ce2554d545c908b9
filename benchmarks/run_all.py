"""Run every grid benchmark in turn (``make bench``).

    python benchmarks/run_all.py [--json DIR] [--seconds S] [--pin none|split|same]
                                 [--quick] [--only NAMES] [--list]

Runs ``benchmarks/codec.py`` (when present), ``benchmarks/pool.py``,
``benchmarks/requests.py``, ``benchmarks/streams.py`` and
``benchmarks/interop.py`` with the same interpreter.  ``--json DIR`` writes
``DIR/codec.json``, ``DIR/pool.json``, ``DIR/requests.json``,
``DIR/streams.json`` and ``DIR/interop.json``; ``--seconds`` and ``--pin`` go
to requests.py, streams.py and interop.py.  ``--quick`` makes every run short
(a smoke test of the whole chain, not a measurement: fewer cells, shorter
windows, a smaller memory check, the Python pairs of interop.py only);
``--only codec,requests`` runs a subset; ``--list`` prints the names it would
run, one per line, and exits.  Exits non-zero when a benchmark itself fails
(missed performance targets are reported in the output, not turned into an
exit status).

Each benchmark's output is framed by ``===== NAME =====`` and
``===== NAME: exit RC, S s =====`` lines (``grid bench`` reads them);
``--frame-stderr`` repeats them on stderr, so that a reader of both pipes can
tell which benchmark wrote each error line (the two pipes are not ordered
against each other).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from typing import List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))

#: Every benchmark, in the order run.
NAMES = ("codec", "pool", "requests", "streams", "interop")

# --quick: (measured seconds, extra options) per benchmark.
QUICK_SECONDS = {"requests": 0.5, "streams": 0.3, "interop": 0.3}
QUICK_EXTRA = {
    "codec": ["--repeat", "1", "--min-time", "0.02"],
    "requests": ["--warmup", "0.2", "--concurrency", "1,16", "--inflight", "1000"],
    "streams": ["--warmup", "0.1"],
    "interop": ["--warmup", "0.1", "--concurrency", "1,16", "--pairs", "py-py,py-py-pure"],
}


def plan(args: argparse.Namespace) -> Tuple[List[Tuple[str, List[str]]], List[str]]:
    """(name, command after the interpreter) for each benchmark to run, and
    notes on what was left out."""
    wanted = NAMES if not args.only else [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in NAMES]
    if unknown:
        raise SystemExit(f"run_all: unknown benchmark(s) {', '.join(unknown)}; "
                         f"choose from {', '.join(NAMES)}")
    steps: List[Tuple[str, List[str]]] = []
    notes: List[str] = []
    for name in NAMES:
        if name not in wanted:
            continue
        script = os.path.join(HERE, name + ".py")
        if not os.path.exists(script):
            notes.append(f"run_all: benchmarks/{name}.py not present; skipped")
            continue
        cmd = [script]
        if args.json:
            cmd += ["--json", os.path.join(args.json, name + ".json")]
        if args.quick:
            cmd += QUICK_EXTRA.get(name, [])
        if name in ("requests", "streams", "interop"):
            seconds: Optional[float] = args.seconds
            if seconds is None and args.quick:
                seconds = QUICK_SECONDS[name]
            if seconds is not None:
                cmd += ["--seconds", str(seconds)]
            if args.pin is not None:
                cmd += ["--pin", args.pin]
        steps.append((name, cmd))
    return steps, notes


def main() -> int:
    ap = argparse.ArgumentParser(description="run all grid benchmarks")
    ap.add_argument("--json", metavar="DIR", help="write one JSON file per benchmark into DIR")
    ap.add_argument("--seconds", type=float, help="measured seconds per requests.py / streams.py cell")
    ap.add_argument("--pin", choices=["none", "split", "same"], help="requests.py / streams.py CPU placement")
    ap.add_argument("--quick", action="store_true",
                    help="short runs with few cells: checks the chain works, numbers are rough")
    ap.add_argument("--only", metavar="NAMES", help=f"comma list of benchmarks to run ({','.join(NAMES)})")
    ap.add_argument("--list", action="store_true", help="print the benchmarks that would run, and exit")
    ap.add_argument("--frame-stderr", action="store_true",
                    help="also frame each benchmark's stderr with its start and exit lines")
    args = ap.parse_args()

    steps, notes = plan(args)
    if args.list:
        for name, _ in steps:
            print(name)
        return 0
    if args.json:
        os.makedirs(args.json, exist_ok=True)
    for n in notes:
        print(n, flush=True)

    failed = []
    for name, cmd in steps:
        start = f"===== {name} ====="
        print("\n" + start, flush=True)
        if args.frame_stderr:
            print(start, file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call([sys.executable] + cmd)
        end = f"===== {name}: exit {rc}, {time.perf_counter() - t0:.1f} s ====="
        if args.frame_stderr:
            print(end, file=sys.stderr, flush=True)
        print(end, flush=True)
        if rc != 0:
            failed.append(f"{name} (exit {rc})")
    if failed:
        print("run_all: failed: " + ", ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
