"""What a new user meets first: ``Manager.connection`` says why it has no
connection to give (not started, closed, itself, not a peer) and connection
states print as their names."""

from __future__ import annotations

import pytest

import grid
from grid.testing import TestGrid, free_ports
from support import run


def test_connection_errors_name_the_problem(loop_kind: str) -> None:
    async def main() -> None:
        a, b, c = (f"http://127.0.0.1:{p}" for p in free_ports(3))
        mgr = grid.Manager(a, [a, b, c], lambda: "t")
        with pytest.raises(grid.GridError, match="not started.*await start"):
            mgr.connection(b)
        await mgr.start()
        try:
            assert mgr.connection(b).remote == b
            assert mgr.connection(c) is mgr.connections[c]
            with pytest.raises(KeyError, match="is this node itself") as self_err:
                mgr.connection(a)
            assert b in str(self_err.value) and c in str(self_err.value)
            with pytest.raises(KeyError, match="is not a peer") as other:
                mgr.connection(b + "/")  # a trailing slash is another host string
            assert repr(b + "/") in str(other.value) and repr(b) in str(other.value)
        finally:
            await mgr.close()
        with pytest.raises(grid.GridError, match="is closed"):
            mgr.connection(b)
    run(loop_kind, main)


def test_state_prints_its_name(loop_kind: str) -> None:
    async def main() -> None:
        async with TestGrid(2) as g:
            conn = g.conn(0, 1)
            assert str(conn.state) == "CONNECTED" and f"{conn.state}" == "CONNECTED"
            assert conn.state == 2 and repr(conn.state) == "<State.CONNECTED: 2>"
            assert str(conn.stats().state) == "CONNECTED"
            with pytest.raises(KeyError, match="itself"):
                g.conn(1, 1)
    run(loop_kind, main)
    assert [str(s) for s in grid.State] == [
        "UNCONNECTED", "CONNECTING", "CONNECTED", "CONNECTION_ERROR", "SHUTDOWN"]


def test_make_demo_shows_progress_and_readme_says_how_long_make_test_takes() -> None:
    """``make demo`` on a fresh clone prints a line per step (the install is
    pip's own output, not ``-q``) and the README says what ``make test`` costs."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    plan = subprocess.run(["make", "-n", "-B", "demo", "VENV=/nonexistent-venv"], cwd=root,
                          capture_output=True, text=True, timeout=60)
    assert plan.returncode == 0, plan.stderr
    steps = plan.stdout.splitlines()
    install = [s for s in steps if "pip install" in s and ".[test]" in s]
    assert install and all(" -q" not in s for s in install), install
    for step in ("creating /nonexistent-venv", "installing the project", "compiling the Cython core",
                 "running the demo"):
        assert any(step in s for s in steps if s.startswith("echo")), (step, steps)
    readme = (root / "README.md").read_text()
    assert "`make test` takes about 10 minutes on a 2-core" in readme
