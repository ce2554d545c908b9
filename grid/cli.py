"""The ``grid`` command line (``python -m grid``, or ``grid`` once installed).

Subcommands:

``grid demo``
    a three-node grid on loopback, exercised end to end (``make demo``).
``grid bench [--quick] [--only NAMES] [--plot out.png] [--json DIR] [--dir PATH]``
    runs the benchmarks of a source checkout (``benchmarks/run_all.py``) with
    a progress bar on stderr and prints their tables; ``--plot`` draws them
    with matplotlib (the ``plot`` extra).
``grid serve --config node.toml`` or ``grid serve --local URL --hosts URL,URL --token-file F --handlers MOD``
    runs one node until SIGINT or SIGTERM, then closes it gracefully.
``grid ping HOST --as LOCAL --token-file F [-c N]``
    dials a node, reports the handshake (accepted, or the node's reason for
    refusing) and the round-trip times of N connection pings.

Exit status: 0 success; 1 the node refused us (ping), a benchmark failed
(bench) or the node could not start (serve); 2 bad usage or configuration;
3 the node was unreachable or broke the protocol (ping); 4 some pings went
unanswered (ping).

Handler modules (``grid serve``)
--------------------------------
``--handlers SPEC`` (repeatable; ``handlers = [...]`` in TOML) names a module
by dotted name (``myapp.grid_handlers``, imported from ``sys.path`` plus the
current directory) or by file path (``handlers/echo.py``; in a TOML file,
relative to that file), optionally followed by ``:attr``.  The module
defines either or both of:

``HANDLERS``
    a dict: key ``handler_id`` (1..255) or ``(handler_id, "sub/route")``;
    value a function ``fn(payload) -> bytes | None`` (sync or ``async``,
    registered with :meth:`grid.Manager.register_single`) or a
    :class:`grid.StreamHandler` (registered with
    :meth:`grid.Manager.register_stream`; its subroute is the handler's own).
``register(mgr)``
    called with the :class:`grid.Manager` before it starts, for anything
    else (typed handlers, state shared between handlers); may be ``async``.

``HANDLERS`` is registered first, then ``register`` is called.  With
``:attr`` only that attribute is used: a dict is taken as ``HANDLERS``, a
callable as ``register``.  See ``examples/serve_handlers.py``.

Configuration file (``grid serve --config node.toml``)
-------------------------------------------------------
Top-level keys: ``local``, ``hosts`` (list), ``token`` or ``token_file``,
``handlers`` (list), ``listen`` (``"0.0.0.0:9001"``), ``tls_cert``,
``tls_key``, ``tls_ca``, ``grace`` (seconds), ``log_level``; an optional
``[manager]`` table passes keyword options to :class:`grid.Manager`
(``ping_interval``, ``max_streams``, ...).  Options given on the command
line override the file's.  Relative paths are relative to the file.
Unknown keys are an error.  See ``examples/node.toml``.

The token is shared: the node presents it when it dials and accepts exactly
it from peers.  Without ``--token``/``--token-file`` the ``GRID_TOKEN``
environment variable is used (``--token`` is visible in process listings).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hmac
import importlib
import importlib.util
import inspect
import logging
import os
import platform
import queue
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, TextIO

import grid
from grid import _http, _payloads
from grid._consts import ROUTE_PATH, WS_BINARY, WS_CLOSE, WS_PING, WS_PONG, Op
from grid._impl import (
    FrameParser,
    SplitFrame,
    decode_messages,
    encode_frame,
    encode_message,
    local_dials,
)

__all__ = ["main", "CliError", "NodeConfig", "load_config", "load_handlers", "ping", "PingReport"]

#: Exit statuses (see the module docstring).
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_LOST = 0, 1, 2, 3, 4


class CliError(Exception):
    """A user-facing error: printed as ``grid CMD: message``; exits with ``status``."""

    def __init__(self, message: str, status: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.status = status


def _version() -> str:
    return (f"grid {grid.__version__} ({grid.IMPLEMENTATION} core, "
            f"Python {platform.python_version()})")


# =========================================================================== demo

ECHO, LOOKUP, DISK_INFO, ECHO_STREAM = 1, 2, 9, 10


@dataclasses.dataclass
class Usage:
    """A typed payload: a msgp map {"Disk": str, "Used": int, "Total": int}."""

    Disk: str
    Used: int = 0
    Total: int = 0


USAGE: grid.SingleHandler[Usage, Usage] = grid.SingleHandler(11, Usage, Usage)


def _demo_setup(m: grid.Manager) -> None:
    def echo(payload: bytes | None) -> bytes | None:
        return payload

    async def lookup(payload: bytes | None) -> bytes:
        raise grid.RemoteError(f"not found: {(payload or b'').decode()}")

    def disk_info(payload: bytes | None) -> bytes:
        call = grid.current_call()
        assert call is not None
        return f"{m.local} serves {call.subroute} for {call.caller}".encode()

    m.register_single(ECHO, echo)
    m.register_single(LOOKUP, lookup)
    m.register_single(DISK_INFO, disk_info, "disk", "1")

    async def echo_stream(ctx: grid.StreamContext, payload: bytes | None,
                          inbound: AsyncIterator[bytes] | None, out: grid.StreamOut) -> None:
        assert inbound is not None
        async for item in inbound:
            await out.send(item.upper())

    m.register_stream(ECHO_STREAM, grid.StreamHandler(echo_stream, in_capacity=16,
                                                      out_capacity=16))
    USAGE.register(m, lambda u: Usage(u.Disk, 40, 100))


async def demo(nodes: int, requests: int) -> int:
    """Run ``nodes`` managers on loopback, exercise every pair, print a report;
    returns the exit status (1 if any check failed)."""
    from grid.testing import TestGrid

    print(f"grid demo: {nodes} nodes on loopback, core: {grid.IMPLEMENTATION}")
    t0 = time.perf_counter()
    async with TestGrid(nodes, setup=_demo_setup) as g:
        print(f"  all {nodes * (nodes - 1)} connection ends up in "
              f"{(time.perf_counter() - t0) * 1000:.0f} ms")
        for h, m in zip(g.hosts, g.managers):
            print(f"  node {h}  dials {[c.remote for c in m.connections.values() if c.dials]}")
        print()
        failures = 0
        for i, src in enumerate(g.managers):
            for j, dst in enumerate(g.hosts):
                if i == j:
                    continue
                conn = src.connection(dst)
                assert conn is not None
                reply = await conn.request(ECHO, b"hello from " + src.local.encode())
                ok = reply == b"hello from " + src.local.encode()
                try:
                    await conn.request(LOOKUP, b"bucket-x")
                    err = "no error?"
                    ok = False
                except grid.RemoteError as e:
                    err = e.message
                sub = await conn.subroute("disk", "1").request(DISK_INFO)
                t = time.perf_counter()
                await asyncio.gather(*(conn.request(ECHO, b"x" * 512) for _ in range(requests)))
                rate = requests / (time.perf_counter() - t)
                stream = await conn.new_stream(ECHO_STREAM)
                words = [b"w%d" % k for k in range(1000)]

                async def feed() -> None:
                    for w in words:
                        await stream.send(w)
                    await stream.close_send()

                feeder = asyncio.ensure_future(feed())
                echoed = [x async for x in stream]
                await feeder
                ok = ok and echoed == [w.upper() for w in words]
                usage = await USAGE.call(conn, Usage("/mnt/disk1"))
                ok = ok and usage == Usage("/mnt/disk1", 40, 100)
                failures += not ok
                print(f"  {src.local} -> {dst}: echo {'ok' if ok else 'WRONG'}; "
                      f"failing call -> RemoteError({err!r})")
                print(f"      subroute: {(sub or b'').decode()}; {requests} x 512 B echo: {rate:,.0f} req/s")
                print(f"      two-way stream: {len(echoed)} items echoed; typed call: {usage}")
        print()
        print(f"  {'connection':<48} {'state':<10} {'msgs out':>9} {'msgs in':>9} "
              f"{'bytes out':>10} {'rtt':>6}")
        for m in g.managers:
            for s in m.stats().connections:
                rtt = f"{s.last_ping_rtt * 1000:.1f}ms" if s.last_ping_rtt is not None else "-"
                print(f"  {m.local + ' -> ' + s.remote:<48} {s.state.name:<10} "
                      f"{s.messages_out:>9} {s.messages_in:>9} {s.bytes_out:>10} {rtt:>6}")
        logging.getLogger("grid").setLevel(logging.ERROR)  # quiet teardown
    print("\ndemo", "passed" if not failures else f"FAILED ({failures})")
    return 1 if failures else 0


# =========================================================================== bench


def find_benchmarks(directory: str | None) -> Path:
    """The benchmarks directory: ``directory`` if given, else the one next to
    the ``grid`` package in a source checkout.  Raises :class:`CliError` when
    it has no ``run_all.py`` (an installed wheel ships no benchmarks)."""
    if directory is not None:
        path = Path(directory).resolve()
        if not (path / "run_all.py").is_file():
            raise CliError(f"no benchmarks in {path} (run_all.py not found)")
        return path
    path = Path(grid.__file__).resolve().parent.parent / "benchmarks"
    if not (path / "run_all.py").is_file():
        raise CliError(
            f"no benchmarks found next to the grid package ({path}/run_all.py): they ship with "
            "the source checkout, not with an installed wheel.  Run `grid bench` from a "
            "checkout (pip install -e .) or pass --dir PATH/TO/benchmarks")
    return path


def _require_matplotlib() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise CliError(f"--plot needs matplotlib ({exc}); install it with "
                       "pip install 'grid[plot]' (or pip install matplotlib)") from None
    return plt


class ProgressBar:
    """A one-line text progress bar on a stream (stderr).

    On a terminal it redraws in place (``\\r``); otherwise it prints one line
    per :meth:`update` that changes the step, so logs stay readable.  Call
    :meth:`clear` before writing anything else to the terminal.
    """

    WIDTH = 24
    _SPIN = "|/-\\"

    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self.total = max(total, 1)
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.done = 0
        self.label = ""
        self.status = ""
        self.started = time.monotonic()
        self._step_started = self.started
        self._shown = 0  # characters of the bar on screen (tty)
        self._tick = 0
        self._last_plain = ""

    def line(self) -> str:
        """The bar as text, e.g. ``[######------] 2/5 requests 0:12 running grid``."""
        filled = int(self.WIDTH * self.done / self.total)
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        el = int(time.monotonic() - self._step_started)
        text = f"[{bar}] {self.done}/{self.total} {self.label} {el // 60}:{el % 60:02d}"
        if self.status:
            text += f"  {self.status}"
        return text

    def update(self, *, done: int | None = None, label: str | None = None,
               status: str | None = None) -> None:
        """Change what the bar shows and redraw it."""
        if done is not None:
            self.done = done
        if label is not None and label != self.label:
            self.label = label
            self._step_started = time.monotonic()
        if status is not None:
            self.status = status
        self.draw()

    def draw(self) -> None:
        """Redraw (terminal) or print a line if the step changed (otherwise)."""
        if self.tty:
            self._tick += 1
            width = shutil.get_terminal_size((100, 20)).columns - 1
            text = (self.line() + " " + self._SPIN[self._tick % 4])[:width]
            self.stream.write("\r" + text + " " * max(0, self._shown - len(text)))
            self._shown = len(text)
            self.stream.flush()
            return
        key = f"{self.done}/{self.label}"
        if key != self._last_plain:
            self._last_plain = key
            self.stream.write("grid bench: " + self.line() + "\n")
            self.stream.flush()

    def clear(self) -> None:
        """Erase the bar from a terminal line (no-op otherwise)."""
        if self.tty and self._shown:
            self.stream.write("\r" + " " * self._shown + "\r")
            self.stream.flush()
            self._shown = 0


def _pump(pipe: TextIO, tag: str, q: queue.Queue[tuple[str, str | None]]) -> None:
    for line in pipe:
        q.put((tag, line))
    q.put((tag, None))


def run_benchmarks(bdir: Path, extra: Sequence[str], json_dir: str,
                   out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run ``bdir/run_all.py --json json_dir *extra`` with a progress bar on
    ``err``, printing each benchmark's own output (its tables) to ``out`` as
    it finishes.  Returns run_all's exit status."""
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    run_all = str(bdir / "run_all.py")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    listing = subprocess.run([sys.executable, run_all, "--list", *extra], capture_output=True,
                             text=True, env=env, timeout=60)
    if listing.returncode != 0:
        raise CliError((listing.stderr or listing.stdout).strip() or "run_all.py --list failed")
    names = listing.stdout.split()
    if not names:
        raise CliError("no benchmark to run")
    bar = ProgressBar(len(names), err)
    bar.update(label=names[0], status="starting")
    # --frame-stderr: run_all marks each benchmark's start and end on stderr
    # too, which is how an error line is tied to its benchmark (the two pipes
    # are read by two threads, so their lines interleave in no fixed order).
    proc = subprocess.Popen([sys.executable, run_all, "--frame-stderr", "--json", json_dir, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            bufsize=1, env=env)
    assert proc.stdout is not None and proc.stderr is not None
    q: queue.Queue[tuple[str, str | None]] = queue.Queue()
    readers = [threading.Thread(target=_pump, args=(proc.stdout, "out", q), daemon=True),
               threading.Thread(target=_pump, args=(proc.stderr, "err", q), daemon=True)]
    for t in readers:
        t.start()
    section: list[str] = []
    errors: list[str] = []  # stderr lines since the last frame line on stderr
    err_tails: dict[str, list[str]] = {}  # a finished benchmark's last stderr lines
    unreported: set[str] = set()  # failed on stdout; its stderr not complete yet
    failed: list[str] = []
    done = 0
    open_pipes = 2

    def report(name: str) -> None:
        tail = err_tails.pop(name, None)
        if tail:
            err.write(f"grid bench: {name} failed; its last error output:\n")
            err.write("\n".join(tail) + "\n")

    try:
        while open_pipes:
            try:
                tag, line = q.get(timeout=0.25)
            except queue.Empty:
                bar.draw()
                continue
            if line is None:
                open_pipes -= 1
                continue
            text = line.rstrip("\n")
            frame = text.startswith("===== ") and text.endswith(" =====")
            name, sep, rest = text[6:-6].partition(": exit ") if frame else ("", "", "")
            if tag == "err":
                if frame:  # a benchmark starts or ends: its stderr lines are complete
                    if sep:
                        err_tails[name] = errors[-20:]
                        if name in unreported:
                            unreported.discard(name)
                            report(name)
                    errors = []
                    continue
                errors.append(text)
                if text.strip():
                    bar.update(status=text.strip())
                continue
            if frame:
                if not sep:  # a benchmark starts
                    if any(x.strip() for x in section):  # run_all's own notes
                        bar.clear()
                        out.write("\n".join(x for x in section if x.strip()) + "\n")
                        out.flush()
                    section = []
                    bar.update(label=name, status="")
                    continue
                done += 1
                status = rest.split(",", 1)[0].strip()
                bar.clear()
                out.write(f"\n== {name}: exit {rest.strip()} ==\n")
                out.write("\n".join(section).strip("\n") + "\n")
                out.flush()
                if status != "0":
                    failed.append(name)
                    if name in err_tails:
                        report(name)
                    else:
                        unreported.add(name)
                err_tails.pop(name, None)  # a success's error output is not shown
                section = []
                bar.update(done=done, status="")
                continue
            section.append(text)
            if text.startswith("  ") and text.strip().endswith("..."):
                bar.update(status=text.strip())  # "running grid (pure) ..."
        rc = proc.wait()
    except KeyboardInterrupt:
        bar.clear()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise
    bar.clear()
    leftover = "\n".join(section).strip()
    if leftover:
        out.write(leftover + "\n")
    if errors and not failed and rc != 0:
        err.write("\n".join(errors[-20:]) + "\n")
    err.write(f"grid bench: {done}/{len(names)} benchmarks run in "
              f"{time.monotonic() - bar.started:.1f} s"
              + (f"; failed: {', '.join(failed)}" if failed else "") + "\n")
    return rc


def _plot_codec(ax: Any, d: Mapping[str, Any]) -> None:
    rows = d["results"]
    labels = [f"{r['op']} [{r.get('unit', '')}]" for r in rows]
    y = list(range(len(rows)))
    ax.barh([v - 0.2 for v in y], [r.get("pure") or 0 for r in rows], 0.4, label="pure")
    ax.barh([v + 0.2 for v in y], [r.get("cython") or 0 for r in rows], 0.4, label="compiled")
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("throughput (log scale; unit per row)")
    ax.set_title("codec: pure vs compiled")
    ax.legend(fontsize=7)


def _plot_pool(ax: Any, d: Mapping[str, Any]) -> None:
    rows = d["pool"]
    x = list(range(len(rows)))
    for k, (key, label) in enumerate([("alloc_ns", "bytes alloc"), ("encode_ns", "encode_message"),
                                      ("pooled_copy_ns", "pooled + copy-out")]):
        ax.bar([v + (k - 1) * 0.27 for v in x], [r[key] for r in rows], 0.27, label=label)
    ax.set_xticks(x)
    ax.set_xticklabels([f"{r['size']:,} B" for r in rows], fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("ns per message")
    ax.set_title("buffer pool: what it could save")
    ax.legend(fontsize=7)


def _plot_lines(ax: Any, cells: Sequence[Mapping[str, Any]], key: str, title: str) -> None:
    series: dict[str, list[tuple[int, float]]] = {}
    for c in cells:
        if c.get("rps") is None or c.get("concurrency") is None:
            continue
        series.setdefault(str(c[key]), []).append((int(c["concurrency"]), float(c["rps"])))
    for name, pts in series.items():
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ticks = sorted({p[0] for pts in series.values() for p in pts})
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("concurrency")
    ax.set_ylabel("requests/s")
    ax.set_title(title)
    ax.legend(fontsize=7)


def _plot_requests(ax: Any, d: Mapping[str, Any]) -> None:
    _plot_lines(ax, d["results"], "system", "request/response echo")


def _plot_interop(ax: Any, d: Mapping[str, Any]) -> None:
    _plot_lines(ax, [c for c in d["results"] if c.get("kind") == "echo"], "pair",
                "interop echo (client -> server)")


def _plot_streams(ax: Any, d: Mapping[str, Any]) -> None:
    cells = [c for c in d["results"] if c.get("kind") in ("oneway", "echo")]
    labels = []
    values = []
    for c in cells:
        cap = c.get("capacity")
        what = "one-way" if c["kind"] == "oneway" else "echo"
        labels.append(f"{c['system']} {what} {c['size']} B" + (f" cap {cap}" if cap else ""))
        values.append(float(c.get("rate") or 0))
    y = list(range(len(values)))
    ax.barh(y, values)
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=6)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("messages or round trips per second (log scale)")
    ax.set_title("streams")


_PLOTTERS: dict[str, Callable[[Any, Mapping[str, Any]], None]] = {
    "codec": _plot_codec, "pool": _plot_pool, "requests": _plot_requests,
    "streams": _plot_streams, "interop": _plot_interop,
}


def plot_results(json_dir: str, path: str) -> list[str]:
    """Draw every benchmark JSON found in ``json_dir`` into one PNG at
    ``path``; returns the benchmarks drawn.  Needs matplotlib."""
    import json

    plt = _require_matplotlib()
    found: list[tuple[str, Any]] = []
    for name in _PLOTTERS:
        f = Path(json_dir) / f"{name}.json"
        if f.is_file():
            found.append((name, json.loads(f.read_text())))
    if not found:
        raise CliError(f"no benchmark results to plot in {json_dir}", EXIT_FAILED)
    cols = 1 if len(found) == 1 else 2
    rows = (len(found) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(7.5 * cols, 4.2 * rows), squeeze=False)
    drawn = []
    for ax, (name, data) in zip(axes.flat, found):
        try:
            _PLOTTERS[name](ax, data)
            drawn.append(name)
        except (KeyError, TypeError, ValueError) as exc:
            ax.set_axis_off()
            ax.set_title(f"{name}: cannot plot ({exc!r})")
    for ax in list(axes.flat)[len(found):]:
        ax.set_axis_off()
    fig.suptitle(f"grid benchmarks ({grid.IMPLEMENTATION} core, Python {platform.python_version()})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return drawn


def cmd_bench(args: argparse.Namespace) -> int:
    """``grid bench``."""
    bdir = find_benchmarks(args.dir)
    if args.plot:
        _require_matplotlib()  # fail now, not after minutes of benchmarks
    extra: list[str] = []
    if args.quick:
        extra.append("--quick")
    if args.only:
        extra += ["--only", args.only]
    if args.seconds is not None:
        extra += ["--seconds", str(args.seconds)]
    if args.pin is not None:
        extra += ["--pin", args.pin]
    json_dir = args.json or tempfile.mkdtemp(prefix="grid-bench-")
    try:
        rc = run_benchmarks(bdir, extra, json_dir)
        if args.plot:
            drawn = plot_results(json_dir, args.plot)
            print(f"\nplot of {', '.join(drawn)} written to {args.plot}")
        if args.json:
            print(f"JSON results in {args.json}")
    finally:
        if not args.json:
            shutil.rmtree(json_dir, ignore_errors=True)
    return EXIT_FAILED if rc else EXIT_OK


# =========================================================================== serve


#: Manager keyword options a configuration may set (its ``[manager]`` table).
MANAGER_OPTIONS: dict[str, type] = {
    name: (float if isinstance(p.default, float) else type(p.default))
    for name, p in inspect.signature(grid.Manager.__init__).parameters.items()
    if p.kind is inspect.Parameter.KEYWORD_ONLY and name != "client_ssl"
}
MANAGER_OPTIONS["route_path"] = str

_TOP_KEYS = {"local", "hosts", "token", "token_file", "handlers", "listen", "tls_cert", "tls_key",
             "tls_ca", "grace", "log_level", "manager"}


@dataclasses.dataclass
class NodeConfig:
    """Everything ``grid serve`` needs to run a node."""

    local: str = ""
    hosts: list[str] = dataclasses.field(default_factory=list)
    token: str | None = None
    handlers: list[str] = dataclasses.field(default_factory=list)
    listen: tuple[str, int] | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    grace: float = 5.0
    log_level: str = "info"
    manager: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: Directory that relative handler file paths are resolved against.
    base_dir: Path = dataclasses.field(default_factory=Path.cwd)


def _read_toml(path: Path) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on 3.10 only
        try:
            import tomli as tomllib  # type: ignore[import-not-found, no-redef, unused-ignore]
        except ImportError:
            raise CliError("reading a TOML configuration on Python 3.10 needs tomli "
                           "(pip install tomli)") from None
    try:
        with open(path, "rb") as f:
            return dict(tomllib.load(f))
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise CliError(f"{path}: {exc}") from None


def _read_token_file(path: Path) -> str:
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise CliError(f"cannot read token file {path}: {exc.strerror or exc}") from None
    if not token:
        raise CliError(f"token file {path} is empty")
    return token


def _parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise CliError(f"listen address {text!r} is not HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


def _split_hosts(values: Sequence[str]) -> list[str]:
    return [h.strip() for v in values for h in v.split(",") if h.strip()]


def _want(cond: bool, message: str) -> None:
    if not cond:
        raise CliError(message)


def load_config(path: str | None, args: argparse.Namespace | None = None) -> NodeConfig:
    """Build a :class:`NodeConfig` from a TOML file (if ``path``) with the
    command-line options in ``args`` overriding it.  Raises :class:`CliError`
    naming what is wrong."""
    cfg = NodeConfig()
    if path is not None:
        file = Path(path).resolve()
        data = _read_toml(file)
        base = file.parent
        cfg.base_dir = base
        unknown = sorted(set(data) - _TOP_KEYS)
        _want(not unknown, f"{file}: unknown key(s) {', '.join(unknown)}; known: "
              f"{', '.join(sorted(_TOP_KEYS))}")
        for key in ("local", "token", "token_file", "listen", "tls_cert", "tls_key", "tls_ca",
                    "log_level"):
            _want(key not in data or isinstance(data[key], str), f"{file}: {key} must be a string")
        cfg.local = data.get("local", "")
        hosts = data.get("hosts", [])
        _want(isinstance(hosts, list) and all(isinstance(h, str) for h in hosts),
              f"{file}: hosts must be a list of strings")
        cfg.hosts = list(hosts)
        handlers = data.get("handlers", [])
        if isinstance(handlers, str):
            handlers = [handlers]
        _want(isinstance(handlers, list) and all(isinstance(h, str) for h in handlers),
              f"{file}: handlers must be a list of strings")
        cfg.handlers = list(handlers)
        _want(not ("token" in data and "token_file" in data),
              f"{file}: give token or token_file, not both")
        if "token" in data:
            cfg.token = data["token"]
        if "token_file" in data:
            cfg.token = _read_token_file(base / data["token_file"])
        if "listen" in data:
            cfg.listen = _parse_listen(data["listen"])
        for key in ("tls_cert", "tls_key", "tls_ca"):
            if key in data:
                setattr(cfg, key, str(base / data[key]))
        if "grace" in data:
            _want(isinstance(data["grace"], (int, float)) and not isinstance(data["grace"], bool),
                  f"{file}: grace must be a number of seconds")
            cfg.grace = float(data["grace"])
        cfg.log_level = data.get("log_level", cfg.log_level)
        options = data.get("manager", {})
        _want(isinstance(options, dict), f"{file}: [manager] must be a table")
        for key, value in options.items():
            want = MANAGER_OPTIONS.get(key)
            _want(want is not None, f"{file}: [manager] has unknown option {key!r}; known: "
                  f"{', '.join(sorted(MANAGER_OPTIONS))}")
            ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
                  if want in (int, float) else isinstance(value, str))
            _want(ok and not (want is int and isinstance(value, float)),
                  f"{file}: [manager] {key} must be {want.__name__ if want else '?'}")
            cfg.manager[key] = value
    if args is not None:
        if args.local:
            cfg.local = args.local
        if args.hosts:
            cfg.hosts = _split_hosts(args.hosts)
        if args.token is not None and args.token_file is not None:
            raise CliError("give --token or --token-file, not both")
        if args.token is not None:
            cfg.token = args.token
        if args.token_file is not None:
            cfg.token = _read_token_file(Path(args.token_file))
        if args.handlers:
            cfg.handlers = list(args.handlers)
            cfg.base_dir = Path.cwd()
        if args.listen:
            cfg.listen = _parse_listen(args.listen)
        for key in ("tls_cert", "tls_key", "tls_ca"):
            if getattr(args, key):
                setattr(cfg, key, getattr(args, key))
        if args.grace is not None:
            cfg.grace = args.grace
        if args.log_level:
            cfg.log_level = args.log_level
    if cfg.token is None and os.environ.get("GRID_TOKEN"):
        cfg.token = os.environ["GRID_TOKEN"]
    _want(bool(cfg.local), "no local host: give --local URL or local = \"...\" in the config")
    _want(bool(cfg.hosts), "no hosts: give --hosts URL,URL,... or hosts = [...] in the config")
    _want(cfg.hosts.count(cfg.local) == 1,
          f"the local host {cfg.local} must appear exactly once in hosts {cfg.hosts} "
          "(spelled byte for byte as the other nodes spell it)")
    for h in cfg.hosts:
        try:
            _http.parse_host(h)
        except ValueError as exc:
            raise CliError(str(exc)) from None
    _want(bool(cfg.token), "no token: give --token-file FILE, --token TEXT, GRID_TOKEN in the "
          "environment, or token/token_file in the config")
    _want(cfg.log_level.upper() in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
          f"unknown log level {cfg.log_level!r}")
    _want((cfg.tls_cert is None) == (cfg.tls_key is None),
          "give both --tls-cert and --tls-key (or tls_cert and tls_key)")
    _want(not cfg.local.startswith(("https://", "wss://")) or cfg.tls_cert is not None,
          f"{cfg.local} is https: give --tls-cert and --tls-key")
    return cfg


def _import_spec(spec: str, base_dir: Path) -> tuple[ModuleType, str | None]:
    target, attr = spec, None
    head, sep, tail = spec.rpartition(":")
    if sep and tail.isidentifier() and head and not (len(head) == 1 and head.isalpha()):
        target, attr = head, tail
    is_file = target.endswith(".py") or os.sep in target or "/" in target
    if is_file:
        path = Path(target)
        if not path.is_absolute():
            path = base_dir / path
        if not path.is_file():
            raise CliError(f"handler module {spec!r}: no file {path}")
        name = "grid_handlers_" + path.stem
        mspec = importlib.util.spec_from_file_location(name, path)
        if mspec is None or mspec.loader is None:
            raise CliError(f"handler module {spec!r}: cannot load {path}")
        module = importlib.util.module_from_spec(mspec)
        sys.modules[name] = module  # dataclasses and pickling look modules up here
        try:
            mspec.loader.exec_module(module)
        except Exception:
            sys.modules.pop(name, None)
            raise
        return module, attr
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())  # as `python -m` would; the console script does not
    try:
        return importlib.import_module(target), attr
    except ModuleNotFoundError as exc:
        if exc.name and target.startswith(exc.name):
            raise CliError(f"handler module {spec!r}: no module named {exc.name!r} "
                           "(give a dotted module name on sys.path, or a file path)") from None
        raise


def _register_table(mgr: grid.Manager, table: Mapping[Any, Any], where: str) -> int:
    n = 0
    for key, value in table.items():
        if isinstance(key, tuple) and len(key) == 2:
            hid, route = key
        else:
            hid, route = key, None
        if not isinstance(hid, int) or isinstance(hid, bool) or not (route is None or
                                                                      isinstance(route, str)):
            raise CliError(f"{where}: key {key!r} is not a handler id or (id, \"sub/route\")")
        if isinstance(value, grid.StreamHandler):
            if route:
                raise CliError(f"{where}: stream handler {hid}: give its subroute as "
                               "StreamHandler(..., subroute=...), not in the key")
            mgr.register_stream(hid, value)
        elif callable(value):
            mgr.register_single(hid, value, *(route.split("/") if route else ()))
        else:
            raise CliError(f"{where}: handler {key!r} is {type(value).__name__}, want a "
                           "function or a grid.StreamHandler")
        n += 1
    return n


async def load_handlers(mgr: grid.Manager, spec: str, base_dir: Path | None = None) -> str:
    """Load the handler module ``spec`` (see the module docstring for the
    convention) and register its handlers on ``mgr``; returns a summary."""
    module, attr = _import_spec(spec, base_dir or Path.cwd())
    where = f"handler module {spec!r}"
    done = []
    if attr is not None:
        obj = getattr(module, attr, None)
        if obj is None:
            raise CliError(f"{where}: {module.__name__} has no attribute {attr!r}")
        table, register = (obj, None) if isinstance(obj, Mapping) else (None, obj)
        if register is not None and not callable(register):
            raise CliError(f"{where}: {attr} is neither a dict of handlers nor a function")
    else:
        table = getattr(module, "HANDLERS", None)
        register = getattr(module, "register", None)
        if table is None and register is None:
            raise CliError(f"{where}: defines neither HANDLERS (a dict) nor register(mgr)")
        if table is not None and not isinstance(table, Mapping):
            raise CliError(f"{where}: HANDLERS is {type(table).__name__}, want a dict")
        if register is not None and not callable(register):
            raise CliError(f"{where}: register is not a function")
    if table is not None:
        done.append(f"{_register_table(mgr, table, where)} from HANDLERS")
    if register is not None:
        result = register(mgr)
        if inspect.isawaitable(result):
            await result
        done.append(f"{getattr(register, '__name__', 'register')}(mgr)")
    return f"{spec}: " + ", ".join(done)


def _tls_contexts(cfg: NodeConfig) -> tuple[ssl.SSLContext | None, ssl.SSLContext | None]:
    server = client = None
    try:
        if cfg.tls_cert is not None:
            server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            server.load_cert_chain(cfg.tls_cert, cfg.tls_key)
        if any(h.startswith(("https://", "wss://")) for h in cfg.hosts):
            client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cfg.tls_ca)
    except (OSError, ssl.SSLError) as exc:
        raise CliError(f"TLS setup failed: {exc}") from None
    return server, client


def _token_checker(expected: str) -> Callable[[str], None]:
    want = expected.encode()

    def check(token: str) -> None:
        if not hmac.compare_digest(token.encode(), want):
            raise PermissionError("invalid token")

    return check


async def serve(cfg: NodeConfig, dry_run: bool = False) -> int:
    """Run the node described by ``cfg`` until SIGINT or SIGTERM, then close
    it (gracefully, up to ``cfg.grace`` seconds).  Returns the exit status."""
    server_ctx, client_ctx = _tls_contexts(cfg)
    token = cfg.token or ""
    try:
        mgr = grid.Manager(cfg.local, cfg.hosts, lambda: token, _token_checker(token),
                           ssl=server_ctx, client_ssl=client_ctx, **cfg.manager)
    except (ValueError, TypeError) as exc:
        raise CliError(f"bad node configuration: {exc}") from None
    loaded = []
    for spec in cfg.handlers:
        try:
            loaded.append(await load_handlers(mgr, spec, cfg.base_dir))
        except grid.GridError as exc:  # HandlerAlreadyExists, UnknownHandler
            raise CliError(f"handler module {spec!r}: {exc}") from None
    dials = [h for h in cfg.hosts if h != cfg.local and local_dials(cfg.local, h)]
    dialed_by = [h for h in cfg.hosts if h != cfg.local and h not in dials]
    where = f"{cfg.listen[0]}:{cfg.listen[1]}" if cfg.listen else cfg.local
    print(f"grid serve: node {cfg.local} ({grid.IMPLEMENTATION} core), listening on {where}")
    for line in loaded or ["no handler modules (--handlers): this node serves no calls"]:
        print(f"  handlers: {line}")
    print(f"  dials: {', '.join(dials) or '-'}")
    print(f"  dialed by: {', '.join(dialed_by) or '-'}")
    if dry_run:
        print("grid serve: configuration OK (dry run)")
        return EXIT_OK
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    caught: list[str] = []

    def on_signal(sig: signal.Signals) -> None:
        caught.append(sig.name)
        stop.set()

    sigs = [signal.SIGINT, signal.SIGTERM]
    for s in sigs:
        loop.add_signal_handler(s, on_signal, s)
    try:
        try:
            await mgr.start(listen=cfg.listen)
        except OSError as exc:
            await mgr.close()
            raise CliError(f"cannot listen on {where}: {exc.strerror or exc}", EXIT_FAILED) from None
        print(f"grid serve: serving {cfg.local}; stop with Ctrl-C or SIGTERM", flush=True)
        await stop.wait()
    finally:
        for s in sigs:  # a second Ctrl-C interrupts the graceful close
            loop.remove_signal_handler(s)
    print(f"grid serve: {caught[0] if caught else 'stop'}: closing (grace {cfg.grace:g} s)",
          flush=True)
    await mgr.close(grace=cfg.grace)
    print("grid serve: stopped", flush=True)
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    """``grid serve``."""
    cfg = load_config(args.config, args)
    logging.basicConfig(level=cfg.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(grid.run(serve(cfg, dry_run=args.dry_run)))


# =========================================================================== ping


@dataclasses.dataclass
class PingReport:
    """What :func:`ping` found out."""

    host: str
    local: str
    #: True once the node accepted our handshake.
    accepted: bool = False
    #: The node's refusal (HTTP status and text, or the grid rejection reason).
    rejected: str | None = None
    #: Why we could not talk to the node at all (unreachable, timeout, protocol).
    error: str | None = None
    #: The node's instance id (hex), once accepted.
    instance: str = ""
    #: Seconds: TCP (+TLS) connect, HTTP upgrade, grid handshake.
    connect_s: float = 0.0
    upgrade_s: float = 0.0
    handshake_s: float = 0.0
    sent: int = 0
    #: Round-trip seconds of the pings answered, in order.
    rtts: list[float] = dataclasses.field(default_factory=list)

    @property
    def status(self) -> int:
        """The exit status for this outcome."""
        if self.rejected is not None:
            return EXIT_FAILED
        if self.error is not None or not self.accepted:
            return EXIT_UNREACHABLE
        return EXIT_OK if len(self.rtts) == self.sent else EXIT_LOST


class _PingWire:
    """The dialing side of one grid WebSocket, reduced to the handshake and
    connection pings (reader task feeding frames to futures)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = FrameParser(False)
        self.first: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pongs: dict[int, asyncio.Future[float]] = {}
        self.closed: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._task: asyncio.Task[None] | None = None

    def send(self, payload: bytes, opcode: int = WS_BINARY) -> None:
        self.writer.write(encode_frame(payload, opcode, os.urandom(4)))

    def start(self, leftover: bytes) -> None:
        self._task = asyncio.ensure_future(self._read(leftover))

    def _end(self, why: str) -> None:
        if not self.closed.done():
            self.closed.set_result(why)
        for fut in [self.first, *self.pongs.values()]:
            if not fut.done():
                fut.set_exception(ConnectionError(why))
                fut.exception()

    async def _read(self, data: bytes) -> None:
        try:
            while True:
                if data:
                    for opcode, payload in self.parser.feed(data):
                        self._on_frame(opcode, payload)
                data = await self.reader.read(65536)
                if not data:
                    self._end("the node closed the connection")
                    return
        except (OSError, grid.ProtocolError) as exc:
            self._end(f"{type(exc).__name__}: {exc}")

    def _on_frame(self, opcode: int, payload: bytes | SplitFrame) -> None:
        if opcode == WS_PING:
            self.send(bytes(payload), WS_PONG)  # control frames are plain bytes: no copy
        elif opcode == WS_CLOSE:
            self._end("the node sent a WebSocket close")
        elif opcode == WS_BINARY:
            for m in decode_messages(payload):
                self._on_message(m)

    def _on_message(self, m: Any) -> None:
        if not self.first.done():
            self.first.set_result(m)
        elif m.mux_id == 0 and m.op == Op.PONG:
            pong = _payloads.Pong.decode(m.payload)
            fut = self.pongs.get(pong.time_ns)
            if fut is not None and not fut.done():
                fut.set_result(time.perf_counter())
        elif m.mux_id == 0 and m.op == Op.PING:  # the node's own keepalive
            t = _payloads.decode_ping(m.payload)
            self.send(encode_message(0, m.seq, m.deadline_ms, 0, int(Op.PONG), 0,
                                     _payloads.Pong(False, None, t).encode()))

    async def close(self) -> None:
        try:
            self.send(b"\x03\xe8", WS_CLOSE)  # 1000: normal closure
            self.writer.close()
            await asyncio.wait_for(self.writer.wait_closed(), 1.0)
        except (OSError, asyncio.TimeoutError):
            pass
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


async def _read_http_head(reader: asyncio.StreamReader) -> tuple[_http.HttpHead, bytes]:
    buf = bytearray()
    while True:
        split = _http.split_head(buf)
        if split is not None:
            return _http.parse_head(split[0]), split[1]
        chunk = await reader.read(4096)
        if not chunk:
            raise ConnectionError("the server closed the connection before answering the upgrade")
        buf += chunk


async def ping(host: str, local: str, token: str, count: int = 4, interval: float = 0.5,
               timeout: float = 2.0, ssl_context: ssl.SSLContext | None = None,
               route_path: str = ROUTE_PATH,
               on_pong: Callable[[int, float | None], Any] | None = None,
               on_accepted: Callable[[PingReport], Any] | None = None) -> PingReport:
    """Dial the node ``host`` claiming the identity ``local``, do the HTTP
    upgrade and the grid handshake with ``token``, then send ``count``
    connection pings (OpPing, mux id 0) ``interval`` seconds apart and time
    each pong.  ``timeout`` bounds the connect, the upgrade, the handshake
    and each pong.  ``on_accepted(report)`` is called once the node accepted
    the handshake, ``on_pong(i, rtt_or_None)`` after each ping.
    Never raises for a network outcome: see :class:`PingReport`."""
    rep = PingReport(host, local)
    addr = _http.parse_host(host)
    ctx = ssl_context if addr.tls else None
    if addr.tls and ctx is None:
        ctx = ssl.create_default_context()
    t0 = time.perf_counter()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(
            addr.host, addr.port, ssl=ctx, server_hostname=addr.host if ctx else None), timeout)
    except asyncio.TimeoutError:
        rep.error = f"unreachable: no TCP connection to {addr.host}:{addr.port} within {timeout:g} s"
        return rep
    except ssl.SSLError as exc:
        rep.error = f"TLS handshake with {addr.host}:{addr.port} failed: {exc}"
        return rep
    except OSError as exc:
        rep.error = f"unreachable: {addr.host}:{addr.port}: {exc.strerror or exc}"
        return rep
    t1 = time.perf_counter()
    rep.connect_s = t1 - t0
    wire: _PingWire | None = None
    try:
        key = _http.new_key()
        writer.write(_http.upgrade_request(addr, route_path, key, token, time.time_ns()))
        try:
            head, rest = await asyncio.wait_for(_read_http_head(reader), timeout)
        except asyncio.TimeoutError:
            rep.error = f"no answer to the HTTP upgrade within {timeout:g} s"
            return rep
        if len(head.start) < 2 or head.start[1] != "101":
            want = 0
            try:
                want = min(max(int(head.get("content-length", "0")), 0), 4096)
            except ValueError:
                pass
            body = bytearray(rest)
            try:
                while len(body) < want:
                    chunk = await asyncio.wait_for(reader.read(want - len(body)), timeout)
                    if not chunk:
                        break
                    body += chunk
            except (asyncio.TimeoutError, OSError):
                pass
            text = bytes(body[:want]).decode("utf-8", "replace").strip()
            rep.rejected = f"HTTP {' '.join(head.start[1:])}" + (f": {text}" if text else "")
            return rep
        if head.get("sec-websocket-accept") != _http.accept_key(key):
            rep.error = "not a grid node: bad Sec-WebSocket-Accept in the upgrade response"
            return rep
        t2 = time.perf_counter()
        rep.upgrade_s = t2 - t1
        wire = _PingWire(reader, writer)
        req = _payloads.ConnectRequest(os.urandom(16), local, time.time_ns(), token)
        wire.send(encode_message(0, 0, 0, 0, int(Op.CONNECT), 0, req.encode()))
        wire.start(rest)
        try:
            first = await asyncio.wait_for(asyncio.shield(wire.first), timeout)
        except asyncio.TimeoutError:
            rep.error = f"no handshake answer within {timeout:g} s"
            return rep
        if first.op != Op.CONNECT_RESPONSE:
            rep.error = f"not a grid node: first message has op {first.op}, want ConnectResponse"
            return rep
        resp = _payloads.ConnectResponse.decode(first.payload)
        if not resp.accepted:
            rep.rejected = resp.rejected_reason or "(no reason given)"
            return rep
        rep.accepted = True
        rep.instance = resp.instance_id.hex()
        rep.handshake_s = time.perf_counter() - t2
        if on_accepted is not None:
            on_accepted(rep)
        loop = asyncio.get_running_loop()
        for i in range(count):
            if i:
                await asyncio.sleep(interval)
            if wire.closed.done():
                rep.error = f"connection lost after {i} pings: {wire.closed.result()}"
                break
            t_ns = time.time_ns()
            while t_ns in wire.pongs:
                t_ns += 1
            fut: asyncio.Future[float] = loop.create_future()
            wire.pongs[t_ns] = fut
            sent = time.perf_counter()
            wire.send(encode_message(0, 0, 10000, 0, int(Op.PING), 0, _payloads.encode_ping(t_ns)))
            rep.sent += 1
            rtt: float | None
            try:
                rtt = await asyncio.wait_for(asyncio.shield(fut), timeout) - sent
                rep.rtts.append(rtt)
            except asyncio.TimeoutError:
                rtt = None
            except ConnectionError as exc:
                rep.error = f"connection lost after {i} pings: {exc}"
                if on_pong is not None:
                    on_pong(i, None)
                break
            if on_pong is not None:
                on_pong(i, rtt)
    except (ConnectionError, OSError) as exc:
        rep.error = rep.error or f"connection failed: {exc}"
    except grid.ProtocolError as exc:
        rep.error = f"protocol error: {exc}"
    finally:
        if wire is not None:
            await wire.close()
        else:
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), 1.0)
            except (OSError, asyncio.TimeoutError):
                pass
    return rep


def _rejection_hint(rep: PingReport) -> str:
    reason = rep.rejected or ""
    if "expected to be client side" in reason:
        return (f"the node dials {rep.local} itself: for each pair of hosts exactly one side "
                "dials (a hash of the two host strings decides), and the node refuses a "
                "connection from the side it dials.  Claim with --as a host of the node's list "
                "that dials it (`grid serve` prints them as 'dialed by').")
    if "unknown incoming host" in reason:
        return (f"{rep.local} is not in the node's hosts list: --as must name one of the node's "
                "hosts, spelled exactly as the node spells it.")
    if "auth token" in reason or "bearer token" in reason:
        return "the node did not accept the token: check --token/--token-file (or GRID_TOKEN)."
    if "clock skew" in reason or "time difference" in reason:
        return "the clocks of this machine and the node differ too much."
    if reason.startswith("HTTP 404"):
        return "this server has no grid at that path (--route-path)."
    return ""


def _ms(s: float) -> str:
    return f"{s * 1000:.3f} ms"


def cmd_ping(args: argparse.Namespace) -> int:
    """``grid ping``."""
    if args.token is not None and args.token_file is not None:
        raise CliError("give --token or --token-file, not both")
    if args.token_file is not None:
        token = _read_token_file(Path(args.token_file))
    elif args.token is not None:
        token = args.token
    else:
        token = os.environ.get("GRID_TOKEN", "")
        if not token:
            raise CliError("no token: give --token-file FILE, --token TEXT or GRID_TOKEN")
    for what, h in (("HOST", args.host), ("--as", args.as_)):
        try:
            _http.parse_host(h)
        except ValueError as exc:
            raise CliError(f"{what}: {exc}") from None
    _want(args.count >= 1, "--count must be at least 1")
    _want(args.timeout > 0 and args.interval >= 0, "--timeout must be > 0 and --interval >= 0")
    ctx = None
    if args.host.startswith(("https://", "wss://")):
        try:
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=args.tls_ca)
        except (OSError, ssl.SSLError) as exc:
            raise CliError(f"TLS setup failed: {exc}") from None
        if args.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
    print(f"PING {args.host} as {args.as_}")

    def on_pong(i: int, rtt: float | None) -> None:
        if rtt is None:
            print(f"ping {i + 1}: no pong within {args.timeout:g} s", flush=True)
        else:
            print(f"pong {i + 1} from {args.host}: time={_ms(rtt)}", flush=True)

    def on_accepted(rep: PingReport) -> None:
        print(f"handshake: accepted by node instance {rep.instance} (connect "
              f"{_ms(rep.connect_s)}, upgrade {_ms(rep.upgrade_s)}, handshake "
              f"{_ms(rep.handshake_s)})", flush=True)

    rep: PingReport = grid.run(ping(args.host, args.as_, token, args.count, args.interval,
                                    args.timeout, ctx, args.route_path, on_pong, on_accepted))
    if rep.rejected is not None:
        print(f"handshake: rejected by {args.host}: {rep.rejected}")
        hint = _rejection_hint(rep)
        if hint:
            print(f"  {hint}")
        return rep.status
    if rep.error is not None:
        print(f"error: {rep.error}", file=sys.stderr)
        if rep.accepted and "closed the connection" in rep.error:
            print(f"  if {args.as_} is a running node, it has probably reconnected and the node "
                  "dropped ping's connection in favour of it: ping as a host reserved for tools",
                  file=sys.stderr)
    if rep.sent:
        lost = rep.sent - len(rep.rtts)
        print(f"--- {args.host} ping statistics ---")
        print(f"{rep.sent} pings sent, {len(rep.rtts)} pongs received, "
              f"{100 * lost / rep.sent:.0f}% lost")
        if rep.rtts:
            r = rep.rtts
            print(f"rtt min/avg/max = {min(r) * 1000:.3f}/{sum(r) / len(r) * 1000:.3f}/"
                  f"{max(r) * 1000:.3f} ms")
    return rep.status


# =========================================================================== main


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="grid", description="grid: MinIO-compatible multiplexed RPC and streams between "
        "servers.  Run `grid COMMAND --help` for each command.",
        epilog="exit status: 0 ok, 1 failed/refused, 2 usage or configuration, "
               "3 unreachable, 4 pings lost")
    ap.add_argument("--version", action="version", version=_version())
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    d = sub.add_parser("demo", help="run a local grid on loopback and print a report",
                       description="Start a grid of NODES nodes on loopback in this process, "
                       "call every handler kind between every pair and print a report.")
    d.add_argument("--nodes", type=int, default=3, help="nodes in the grid (default 3)")
    d.add_argument("--requests", type=int, default=2000,
                   help="512-byte echo requests per pair for the rate figure (default 2000)")

    b = sub.add_parser(
        "bench", help="run the benchmarks and print their tables",
        description="Run benchmarks/run_all.py of a source checkout with a progress bar on "
        "stderr; print each benchmark's tables as it finishes.  The benchmarks are not part of "
        "an installed wheel: use a checkout, or --dir.")
    b.add_argument("--quick", action="store_true",
                   help="short runs with few cells (a smoke test; numbers are rough)")
    b.add_argument("--only", metavar="NAMES",
                   help="comma list of benchmarks: codec,pool,requests,streams,interop")
    b.add_argument("--seconds", type=float, help="measured seconds per cell (requests, streams, "
                   "interop)")
    b.add_argument("--pin", choices=["none", "split", "same"], help="CPU placement of client and "
                   "server processes")
    b.add_argument("--json", metavar="DIR", help="keep each benchmark's JSON results in DIR")
    b.add_argument("--plot", metavar="PNG", help="draw the results into this PNG (needs "
                   "matplotlib: pip install 'grid[plot]')")
    b.add_argument("--dir", metavar="PATH", help="the benchmarks directory (default: the one "
                   "next to the grid package)")

    s = sub.add_parser(
        "serve", help="run a node from a TOML file or options",
        description="Run one grid node until SIGINT or SIGTERM, then close it gracefully.  "
        "Handlers come from modules: each defines HANDLERS = {id or (id, 'sub/route'): fn or "
        "grid.StreamHandler} and/or register(mgr) (see examples/serve_handlers.py and "
        "examples/node.toml).  Command-line options override the file's.")
    s.add_argument("--config", metavar="TOML", help="configuration file (see examples/node.toml)")
    s.add_argument("--local", metavar="URL", help="this node's host string, e.g. "
                   "http://10.0.0.1:9000")
    s.add_argument("--hosts", metavar="URL,...", action="append",
                   help="every node of the grid, this one included (comma list; repeatable)")
    s.add_argument("--token", help="the grid's shared token (visible in process listings: "
                   "prefer --token-file or GRID_TOKEN)")
    s.add_argument("--token-file", metavar="FILE", help="read the token from FILE")
    s.add_argument("--handlers", metavar="MODULE[:ATTR]", action="append",
                   help="handler module: dotted name or .py path, optional :attr (repeatable)")
    s.add_argument("--listen", metavar="HOST:PORT", help="bind here instead of the local "
                   "host string's address (e.g. 0.0.0.0:9000)")
    s.add_argument("--tls-cert", metavar="PEM", help="certificate chain to serve https")
    s.add_argument("--tls-key", metavar="PEM", help="private key of --tls-cert")
    s.add_argument("--tls-ca", metavar="PEM", help="CA bundle to verify https peers "
                   "(default: the system's)")
    s.add_argument("--grace", type=float, help="seconds to let calls in flight finish on "
                   "shutdown (default 5)")
    s.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                   help="logging level on stderr (default info)")
    s.add_argument("--dry-run", action="store_true", help="check the configuration and load "
                   "the handlers, print what would be served, and exit")

    p = sub.add_parser(
        "ping", help="handshake with a node and time connection pings",
        description="Dial HOST as the host --as, do the HTTP upgrade and the grid handshake, "
        "report whether the node accepted it (or its reason for refusing), then time COUNT "
        "connection pings (OpPing/OpPong on mux 0).  The node accepts only a host of its own "
        "list, and only one it does not dial itself: `grid serve` prints those as 'dialed "
        "by'.  While connected, ping stands in for that host: if the real host is connected "
        "to the node, the node drops its connection in favour of ping's (the host redials "
        "within seconds), so prefer a host name reserved for tools.")
    p.add_argument("host", metavar="HOST", help="the node's host string, e.g. "
                   "http://127.0.0.1:9001")
    p.add_argument("--as", dest="as_", metavar="LOCAL", required=True,
                   help="the host string to claim (must be in the node's hosts list)")
    p.add_argument("--token", help="the grid's token")
    p.add_argument("--token-file", metavar="FILE", help="read the token from FILE")
    p.add_argument("-c", "--count", type=int, default=4, help="pings to send (default 4)")
    p.add_argument("-i", "--interval", type=float, default=0.5,
                   help="seconds between pings (default 0.5)")
    p.add_argument("--timeout", type=float, default=2.0, help="seconds allowed for the "
                   "connect, the upgrade, the handshake and each pong (default 2)")
    p.add_argument("--tls-ca", metavar="PEM", help="CA bundle to verify an https node")
    p.add_argument("--insecure", action="store_true", help="do not verify an https node's "
                   "certificate")
    p.add_argument("--route-path", default=ROUTE_PATH, help=f"grid path (default {ROUTE_PATH})")
    return ap


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "demo": lambda a: int(grid.run(demo(a.nodes, a.requests))),
    "bench": cmd_bench,
    "serve": cmd_serve,
    "ping": cmd_ping,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``grid`` and ``python -m grid``; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        return _COMMANDS[args.cmd](args)
    except CliError as exc:
        print(f"grid {args.cmd}: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        print(f"grid {args.cmd}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
