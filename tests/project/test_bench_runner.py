"""The benchmark runner (benchmarks/run_all.py, _progress.py, _plot.py), as
``make bench`` runs it: a progress bar on stderr, each benchmark's tables on
stdout, a failed benchmark's own error lines, JSON results and a plot.

The real codec benchmark runs in its quick mode end to end; failures are
played by stand-in benchmark scripts beside a copy of the runner.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from support import ROOT

BENCH = ROOT / "benchmarks"
RUNNER_FILES = ("run_all.py", "_progress.py", "_plot.py")


def run_all(*args: str, bdir: Path = BENCH, env: dict[str, str] | None = None,
            timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    if env is None:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, str(bdir / "run_all.py"), *args], capture_output=True,
                          text=True, env=env, timeout=timeout)


def runner_copy(tmp_path: Path, scripts: dict[str, str]) -> Path:
    """The runner beside stand-in benchmark scripts (name -> source)."""
    for f in RUNNER_FILES:
        shutil.copy(BENCH / f, tmp_path / f)
    for name, source in scripts.items():
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    return tmp_path


def test_quick_codec_end_to_end() -> None:
    out = run_all("--quick", "--only", "codec")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "== codec: exit 0," in out.stdout
    assert "grid codec, pure vs cython" in out.stdout
    assert "envelope encode+decode" in out.stdout
    assert "[########################] 1/1 codec" in out.stderr  # the bar, finished
    assert "1/1 benchmarks run" in out.stderr


def test_json_kept(tmp_path: Path) -> None:
    out = run_all("--quick", "--only", "codec", "--json", str(tmp_path / "j"))
    assert out.returncode == 0, out.stdout + out.stderr
    data = json.loads((tmp_path / "j" / "codec.json").read_text())
    assert data["benchmark"] == "codec" and data["repeat"] == 1
    assert {r["id"] for r in data["results"]} >= {"envelope_roundtrip", "mask_64k"}
    assert f"JSON results in {tmp_path / 'j'}" in out.stdout


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None,
                    reason="matplotlib is not installed (the 'plot' extra)")
def test_plot(tmp_path: Path) -> None:
    png = tmp_path / "bench.png"
    out = run_all("--quick", "--only", "codec", "--plot", str(png))
    assert out.returncode == 0, out.stdout + out.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"plot of codec written to {png}" in out.stdout


def test_plot_without_matplotlib(tmp_path: Path) -> None:
    """A missing matplotlib is reported before any benchmark runs."""
    fake = tmp_path / "fake" / "matplotlib"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named matplotlib')\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "fake"), str(ROOT),
                                         env.get("PYTHONPATH", "")])
    out = run_all("--only", "codec", "--plot", str(tmp_path / "x.png"), env=env, timeout=30)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "--plot needs matplotlib" in out.stderr and "gridmux[plot]" in out.stderr
    assert "grid codec" not in out.stdout  # nothing ran


def test_unknown_benchmark() -> None:
    out = run_all("--only", "nosuch", "--quick", timeout=30)
    assert out.returncode == 2
    assert "unknown benchmark(s) nosuch" in out.stderr


def test_list() -> None:
    out = run_all("--list", "--only", "pool,codec", timeout=30)
    assert out.returncode == 0
    assert out.stdout.split() == ["codec", "pool"]  # run_all's order, not the option's


def test_failed_benchmark_shows_its_own_error_lines(tmp_path: Path) -> None:
    """A failed benchmark's tables and last error lines are shown and the exit
    status is 1; a passing benchmark's error output is not shown."""
    bdir = runner_copy(tmp_path, {
        "codec": """\
            import sys
            print("partial table", flush=True)
            print("boom: no codec here", file=sys.stderr, flush=True)
            sys.exit(3)
            """,
        "pool": """\
            import sys
            print("pool: a warning only", file=sys.stderr, flush=True)
            print("pool table")
            """,
    })
    out = run_all("--only", "codec,pool", bdir=bdir, timeout=60)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "== codec: exit 3," in out.stdout and "partial table" in out.stdout
    assert "== pool: exit 0," in out.stdout and "pool table" in out.stdout
    assert "run_all: codec failed; its last error output:\nboom: no codec here\n" in out.stderr
    assert "pool failed" not in out.stderr and "a warning only" not in out.stderr
    assert "2/2 benchmarks run" in out.stderr and "failed: codec\n" in out.stderr


def test_missing_benchmark_is_noted(tmp_path: Path) -> None:
    bdir = runner_copy(tmp_path, {"pool": "print('pool table')\n"})
    out = run_all("--only", "codec,pool", bdir=bdir, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "benchmarks/codec.py not present; skipped" in out.stdout
    assert "1/1 benchmarks run" in out.stderr


def test_progress_bar_off_a_terminal() -> None:
    """Off a terminal the bar prints one line per step, never status churn."""
    sys.path.insert(0, str(BENCH))
    try:
        from _progress import ProgressBar
    finally:
        sys.path.remove(str(BENCH))
    stream = io.StringIO()
    bar = ProgressBar(2, stream, prefix="t: ")
    bar.update(label="codec", status="starting")
    bar.update(status="running grid ...")
    bar.update(status="running go ...")
    bar.update(done=1, label="pool", status="")
    bar.clear()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("t: [------------------------] 0/2 codec 0:00")
    assert lines[0].endswith("starting")
    assert lines[1].startswith("t: [############------------] 1/2 pool 0:00")
