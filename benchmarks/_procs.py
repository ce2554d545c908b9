"""Plumbing shared by the benchmarks: per-system environments, a server
subprocess that announces itself with a READY line, CPU placement and CPU
time readings, loopback ports and command-line lists."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import time
from typing import Dict, List, Optional, Tuple

HOST = "127.0.0.1"


def _system_env(system: str) -> Dict[str, str]:
    env = dict(os.environ)
    env.pop("GRID_PURE", None)
    if system == "grid-pure":
        env["GRID_PURE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_cpu_seconds(pid: int) -> Optional[float]:
    """utime + stime of ``pid`` in seconds (Linux /proc), None elsewhere."""
    if pid <= 0:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return (int(rest[11]) + int(rest[12])) / _CLK_TCK
    except (OSError, IndexError, ValueError):
        return None


def _busy_cpu_seconds() -> Optional[float]:
    """CPU seconds the whole machine has spent busy (Linux /proc/stat), None elsewhere."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return (sum(v[:8]) - v[3] - v[4]) / _CLK_TCK  # all but idle and iowait (guest is in user)
    except (OSError, ValueError, IndexError):
        return None


class _ServerProc:
    def __init__(self, cmd: List[str], env: Dict[str, str]) -> None:
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)

    def wait_ready(self, timeout: float = 30.0) -> Tuple[str, List[str]]:
        """('ready'|'unavailable'|'failed', fields of the line)."""
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            r, _, _ = select.select([self.proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not r:
                break
            line = self.proc.stdout.readline()
            if not line:
                return "failed", [f"server exited with {self.proc.wait()}"]
            parts = line.split()
            if parts and parts[0] == "READY":
                return "ready", parts[1:]
            if parts and parts[0] == "UNAVAILABLE":
                return "unavailable", [line.strip()[len("UNAVAILABLE ") :]]
        return "failed", ["server not ready in time"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _cpus(pin: str) -> Tuple[int, int]:
    """(server cpu, client cpu), -1 meaning unpinned."""
    if pin == "none" or not hasattr(os, "sched_getaffinity"):
        return -1, -1
    cpus = sorted(os.sched_getaffinity(0))
    if pin == "same" or len(cpus) < 2:
        return cpus[0], cpus[0]
    return cpus[0], cpus[1]


def _free_ports(n: int) -> List[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _grid_url(port: int) -> str:
    return f"http://{HOST}:{port}"


def _grid_ports(client_dials: bool) -> Tuple[int, int]:
    """Free (client, server) ports for a pair of grid processes such that
    the benchmark's client dials (``client_dials``), or the server does.

    The dialing node is the WebSocket client and masks every frame it sends
    (RFC 6455); which node dials follows from the two addresses (the dial
    rule, ``grid.dials``), so random ports would make a one-way
    stream's sender mask its items in some runs and not in others."""
    from grid import dials

    for _ in range(1000):
        client, server = _free_ports(2)
        if dials(_grid_url(client), _grid_url(server)) == client_dials:
            return client, server
    raise RuntimeError("no port pair with the wanted dialer in 1000 tries")


def _label(system: str) -> str:
    return {"grid": "grid (accel)", "grid-pure": "grid (pure)", "raw": "raw asyncio", "grpc": "grpc.aio",
            "picows": "picows + id mux", "floor": "blocking floor"}[system]


def _int_list(s: str) -> List[int]:
    return [int(x) for x in s.split(",") if x.strip()]


def _str_list(s: str) -> List[str]:
    return [x.strip() for x in s.split(",") if x.strip()]
