"""The credit-window ceiling of a stream on this machine.

A sender that may hold at most ``W`` items unacknowledged moves at most ``W``
items per credit round trip.  A credit round trip takes about what one call
takes with nothing else to do: the blocking-socket floor
(``baselines/blocking_echo.py``), measured here in two processes placed on
the CPUs the stream benchmark uses.  So ``W / floor round trip`` is the
rate a stream with a window of ``W`` can expect at best, whatever its
per-item cost, unless its sender and receiver never sleep.

The same file is the floor's server and client program::

    python benchmarks/_window.py --serve --cpu N            # prints READY <port>
    python benchmarks/_window.py --port P --cpu N --size B  # prints RESULT <json>
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any, Dict, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from _procs import HOST, _cpus, _ServerProc  # noqa: E402


def floor_round_trip(pin: str, size: int, seconds: float, warmup: float) -> Tuple[Optional[Dict[str, Any]], str]:
    """Mean and p50 round trip (µs) of ``size``-byte blocking echoes, server
    and client in their own processes placed as ``pin`` says; (None, why) if
    it could not run."""
    server_cpu, client_cpu = _cpus(pin)
    me = [sys.executable, os.path.abspath(__file__)]
    server = _ServerProc(me + ["--serve", "--cpu", str(server_cpu)], dict(os.environ))
    try:
        state, fields = server.wait_ready()
        if state != "ready":
            return None, " ".join(fields)
        cmd = me + ["--port", fields[0], "--cpu", str(client_cpu), "--size", str(size),
                    "--seconds", str(seconds), "--warmup", str(warmup)]
        try:
            out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, timeout=60 + 3 * (seconds + warmup))
        except subprocess.TimeoutExpired:
            return None, "floor client timed out"
        for line in out.stdout.splitlines():
            if line.startswith("RESULT "):
                return json.loads(line[len("RESULT "):]), ""
        return None, f"floor client exited with {out.returncode} and no result"
    finally:
        server.stop()


def ceiling(capacity: int, floor: Dict[str, Any]) -> float:
    """Items per second a window of ``capacity`` allows at the floor's median
    round trip (the median: a busy moment on the machine must not lower the bound)."""
    return capacity / (floor["p50_us"] / 1e6)


def _main() -> int:
    ap = argparse.ArgumentParser(description="blocking-socket floor for the stream window ceiling")
    ap.add_argument("--serve", action="store_true")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--cpu", type=int, default=-1)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--warmup", type=float, default=0.2)
    args = ap.parse_args()
    if args.cpu >= 0 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    from baselines import blocking_echo

    if args.serve:
        import signal

        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})  # for sigwait
        server = blocking_echo.BlockingServer(HOST, 0)
        print(f"READY {server.port}", flush=True)
        signal.sigwait({signal.SIGTERM, signal.SIGINT})
        server.close()
        return 0
    client = blocking_echo.BlockingClient(HOST, args.port)
    lat = sorted(blocking_echo.measure(client, os.urandom(args.size), args.seconds, args.warmup))
    client.close()
    print("RESULT " + json.dumps({"size": args.size, "round_trips": len(lat),
                                  "mean_us": sum(lat) / len(lat) / 1000.0,
                                  "p50_us": lat[len(lat) // 2] / 1000.0}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
