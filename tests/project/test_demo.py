"""`make demo` runs `python -m grid demo`: it must pass in both modes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_demo_runs_a_three_node_grid() -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-m", "grid", "demo", "--requests", "200"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "demo passed" in out.stdout
    assert out.stdout.count("echo ok") == 6  # every ordered pair of 3 nodes
    assert out.stdout.count("two-way stream: 1000 items echoed") == 6
    assert "RemoteError('not found: bucket-x')" in out.stdout


def test_demo_needs_two_nodes() -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for n in ("0", "1", "-3"):
        out = subprocess.run([sys.executable, "-m", "grid", "demo", "--nodes", n],
                             capture_output=True, text=True, env=env, timeout=60)
        assert out.returncode == 2, out.stdout + out.stderr
        assert out.stderr == (f"grid demo: --nodes {n}: a demo grid needs at least 2 nodes "
                              "(calls go between nodes; a node has no connection to itself)\n")
        assert "Traceback" not in out.stderr and "passed" not in out.stdout
