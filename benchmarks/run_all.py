"""Run every grid benchmark in turn (``make bench``).

    python benchmarks/run_all.py [--json DIR] [--plot PNG] [--seconds S]
                                 [--pin none|split|same] [--quick] [--only NAMES] [--list]

Runs ``benchmarks/codec.py`` (when present), ``benchmarks/pool.py``,
``benchmarks/requests.py``, ``benchmarks/streams.py``, ``benchmarks/mesh.py``
and ``benchmarks/interop.py`` with the same interpreter.  ``--json DIR``
writes ``DIR/codec.json``, ``DIR/pool.json``, ``DIR/requests.json``,
``DIR/streams.json``, ``DIR/mesh.json`` and ``DIR/interop.json``; ``--seconds`` and ``--pin`` go
to requests.py, streams.py and interop.py.  ``--quick`` makes every run short
(a smoke test of the whole chain, not a measurement: fewer cells, shorter
windows, a smaller memory check, the Python pairs of interop.py only);
``--only codec,requests`` runs a subset; ``--list`` prints the names it would
run, one per line, and exits.  ``--plot PNG`` draws the results with
matplotlib (the ``plot`` extra; see ``_plot.py``).

A progress bar on stderr shows the benchmark running and its latest status
line (one line per step when stderr is not a terminal).  Each benchmark's
tables are printed under ``== NAME: exit RC, S s ==`` once it finishes; a
failed benchmark's last error lines follow on stderr.  Exits 1 when a
benchmark itself fails (missed performance targets are reported in the
output, not turned into an exit status), 2 on bad usage.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from typing import List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from _progress import Outcome, ProgressBar, run_child  # noqa: E402

#: Every benchmark, in the order run.
NAMES = ("codec", "pool", "requests", "streams", "mesh", "interop")

# --quick: (measured seconds, extra options) per benchmark.
QUICK_SECONDS = {"requests": 0.5, "streams": 0.3, "interop": 0.3}
QUICK_EXTRA = {
    "codec": ["--repeat", "1", "--min-time", "0.02"],
    "requests": ["--warmup", "0.2", "--concurrency", "1,16", "--inflight", "1000"],
    "streams": ["--warmup", "0.1"],
    "mesh": ["--quick"],
    "interop": ["--warmup", "0.1", "--concurrency", "1,16", "--pairs", "py-py,py-py-pure"],
}


def plan(args: argparse.Namespace) -> Tuple[List[Tuple[str, List[str]]], List[str]]:
    """(name, command after the interpreter) for each benchmark to run, and
    notes on what was left out.  ValueError names unknown benchmarks."""
    wanted = NAMES if not args.only else [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in NAMES]
    if unknown:
        raise ValueError(f"unknown benchmark(s) {', '.join(unknown)}; "
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


def report(name: str, result: Outcome) -> None:
    """Print a finished benchmark's tables, and a failure's last error lines."""
    print(f"\n== {name}: exit {result.rc}, {result.seconds:.1f} s ==")
    print("\n".join(result.out).strip("\n"), flush=True)
    if result.rc != 0:
        tail = result.err[-20:]
        print(f"run_all: {name} failed; its last error output:", file=sys.stderr)
        print("\n".join(tail) if tail else "(none)", file=sys.stderr, flush=True)


def run(steps: List[Tuple[str, List[str]]]) -> List[str]:
    """Run each step under one progress bar; returns the names that failed."""
    bar = ProgressBar(len(steps))
    failed: List[str] = []
    for done, (name, cmd) in enumerate(steps):
        bar.update(done=done, label=name, status="starting")
        result = run_child([sys.executable] + cmd, bar)
        bar.clear()
        report(name, result)
        if result.rc != 0:
            failed.append(name)
    bar.update(done=len(steps), status="")
    bar.clear()
    print(f"run_all: {len(steps)}/{len(steps)} benchmarks run in "
          f"{time.monotonic() - bar.started:.1f} s"
          + (f"; failed: {', '.join(failed)}" if failed else ""), file=sys.stderr)
    return failed


def main() -> int:
    ap = argparse.ArgumentParser(description="run all grid benchmarks")
    ap.add_argument("--json", metavar="DIR", help="write one JSON file per benchmark into DIR")
    ap.add_argument("--plot", metavar="PNG", help="draw the results into this PNG (needs "
                    "matplotlib: pip install 'gridmux[plot]')")
    ap.add_argument("--seconds", type=float, help="measured seconds per requests.py / streams.py cell")
    ap.add_argument("--pin", choices=["none", "split", "same"], help="requests.py / streams.py CPU placement")
    ap.add_argument("--quick", action="store_true",
                    help="short runs with few cells: checks the chain works, numbers are rough")
    ap.add_argument("--only", metavar="NAMES", help=f"comma list of benchmarks to run ({','.join(NAMES)})")
    ap.add_argument("--list", action="store_true", help="print the benchmarks that would run, and exit")
    args = ap.parse_args()

    if args.plot:
        from _plot import PlotError, plot_results, require_matplotlib

        try:
            require_matplotlib()  # fail before any benchmark runs, not after them
        except PlotError as exc:
            ap.error(str(exc))
    try:
        steps, notes = plan(args)
    except ValueError as exc:
        ap.error(str(exc))
    if args.list:
        for name, _ in steps:
            print(name)
        return 0
    if not steps:
        ap.error("no benchmark to run")
    scratch = None  # a temporary JSON directory for --plot without --json
    if args.plot and not args.json:
        scratch = args.json = tempfile.mkdtemp(prefix="grid-bench-")
        steps, notes = plan(args)
    try:
        if args.json:
            os.makedirs(args.json, exist_ok=True)
        for n in notes:
            print(n, flush=True)
        failed = run(steps)
        if args.plot:
            try:
                drawn = plot_results(args.json, args.plot)
            except PlotError as exc:
                print(f"run_all: {exc}", file=sys.stderr)
                return 1
            print(f"\nplot of {', '.join(drawn)} written to {args.plot}")
        if args.json and scratch is None:
            print(f"JSON results in {args.json}")
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    return 1 if failed else 0

if __name__ == "__main__":
    sys.exit(main())
