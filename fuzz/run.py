"""Run the differential codec fuzzer (``make fuzz`` calls ``fuzz/run.py --runs 1000000``).

Each fuzz input is checked against every twin (pure, and compiled when built),
so ``--runs N`` exercises each twin N times.  Seeds are generated into the
corpus directory first; crashes land in ``--artifacts``.  Extra arguments
after ``--`` go to libFuzzer unchanged (e.g. ``-- -jobs=4 -workers=4``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from seeds import write_corpus  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=None,
                    help="inputs to try, each through every twin (default 1000000; unlimited with --seconds)")
    ap.add_argument("--seconds", type=int, default=0, help="stop after this many seconds (0 = no limit)")
    ap.add_argument("--corpus", type=Path, default=ROOT / ".fuzz" / "corpus")
    ap.add_argument("--artifacts", type=Path, default=ROOT / ".fuzz" / "artifacts")
    ap.add_argument("--seed", type=int, default=0, help="libFuzzer -seed (0 = random)")
    ap.add_argument("--max-len", type=int, default=70_000)
    ap.add_argument("libfuzzer", nargs="*", help="extra libFuzzer flags, after --")
    args = ap.parse_args(argv)
    if args.runs is None:
        args.runs = -1 if args.seconds else 1_000_000

    n = write_corpus(args.corpus)
    args.artifacts.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, str(HERE / "fuzz_codec.py"),
        f"-runs={args.runs}", f"-max_len={args.max_len}", f"-seed={args.seed}",
        f"-artifact_prefix={args.artifacts}/", "-print_final_stats=1",
        *([f"-max_total_time={args.seconds}"] if args.seconds else []),
        *args.libfuzzer, str(args.corpus),
    ]
    print(f"{n} seeds in {args.corpus}; running: {' '.join(cmd)}", flush=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return subprocess.call(cmd, cwd=ROOT, env=env)


if __name__ == "__main__":
    sys.exit(main())
