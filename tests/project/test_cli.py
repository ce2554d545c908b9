"""The command line (grid/cli/): real processes over 127.0.0.1.

``grid serve`` runs as a child process (from a TOML file and from flags, with
handler modules); an in-test Manager calls it, and ``grid ping`` (another
child process) handshakes with it and times round trips.  Every child
inherits ``GRID_PURE`` from the test run, so both modes are covered.  The
benchmark runner is tested in tests/project/test_bench_runner.py.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import grid
from grid._impl import local_dials
from grid.testing import free_port

from support import ROOT, hosts_where_first_dials, make_tls, run

TOKEN = "cli-test-token"
EXAMPLES = ROOT / "examples"


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("GRID_TOKEN", None)
    env.update(extra)
    return env


def cli(*args: str, timeout: float = 60.0, cwd: Path | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m grid ARGS`` to completion."""
    return subprocess.run([sys.executable, "-m", "grid", *args], capture_output=True, text=True,
                          env=env or _env(), timeout=timeout, cwd=cwd)


async def acli(*args: str, timeout: float = 30.0) -> tuple[int, str, str]:
    """Run ``python -m grid ARGS`` without blocking the loop (the node under
    test may be a Manager on this very loop)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "grid", *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=_env())
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


class ServeProcess:
    """``python -m grid serve ARGS`` as a child; :meth:`start` returns once it
    prints that it is serving, :meth:`stop` sends SIGTERM and waits."""

    def __init__(self, *args: str, cwd: Path | None = None) -> None:
        self.args = args
        self.cwd = cwd
        self.proc: asyncio.subprocess.Process | None = None
        self.out: list[str] = []

    async def start(self, timeout: float = 30.0) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "grid", "serve", *self.args, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env=_env(), cwd=self.cwd)
        assert self.proc.stdout is not None

        async def ready() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            while True:
                line = (await self.proc.stdout.readline()).decode()
                if not line:
                    err = await self.proc.stderr.read() if self.proc.stderr else b""
                    raise RuntimeError(f"serve exited: {''.join(self.out)}{err.decode()}")
                self.out.append(line)
                if line.startswith("grid serve: serving"):
                    return

        await asyncio.wait_for(ready(), timeout)

    async def stop(self, sig: int | None = signal.SIGTERM,
                   timeout: float = 15.0) -> tuple[int, str, str]:
        """Send ``sig`` (None: none), wait for the exit, return (exit status,
        all of stdout, stderr)."""
        assert self.proc is not None
        if self.proc.returncode is None and sig is not None:
            self.proc.send_signal(sig)
        out, err = await asyncio.wait_for(self.proc.communicate(), timeout)
        assert self.proc.returncode is not None
        return self.proc.returncode, "".join(self.out) + out.decode(), err.decode()

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()

    async def __aenter__(self) -> ServeProcess:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.kill()


async def _call_example_handlers(mgr: grid.Manager, node: str) -> None:
    """Exercise every handler of examples/serve_handlers.py on ``node``."""
    conn = mgr.connection(node)
    await conn.wait_for_connect(timeout=10.0)
    assert await conn.request(1, b"hello", timeout=5.0) == b"hello"
    assert await conn.subroute("text").request(2, b"shout", timeout=5.0) == b"SHOUT"
    assert await conn.request(3, timeout=5.0) == f"{node} serves {mgr.local}".encode()
    with pytest.raises(grid.RemoteError) as info:
        await conn.request(4, b"nope", timeout=5.0)
    assert info.value.message == "refused: nope"
    stream = await conn.new_stream(10, in_capacity=8, out_capacity=8)
    words = [b"a%d" % i for i in range(50)]

    async def feed() -> None:
        for w in words:
            await stream.send(w)
        await stream.close_send()

    feeder = asyncio.ensure_future(feed())
    assert [x async for x in stream] == [w.upper() for w in words]
    await feeder


def _dialer_of(node: str) -> str:
    """A loopback host string that dials ``node`` (ping only dials as one)."""
    port = 1
    while not local_dials(f"http://127.0.0.1:{port}", node):
        port += 1
    return f"http://127.0.0.1:{port}"


def _example_module() -> object:
    spec = importlib.util.spec_from_file_location("cli_test_example", EXAMPLES / "serve_handlers.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["cli_test_example"] = mod
    spec.loader.exec_module(mod)
    return mod


# ----------------------------------------------------------------------- help, version


def test_help_and_version() -> None:
    out = cli("--help", timeout=30)
    assert out.returncode == 0, out.stderr
    for cmd in ("demo", "serve", "ping"):
        assert cmd in out.stdout
    for cmd, words in (("demo", "--nodes"), ("serve", "--config"), ("ping", "--as")):
        sub = cli(cmd, "--help", timeout=30)
        assert sub.returncode == 0, sub.stderr
        assert words in sub.stdout
    ver = cli("--version", timeout=30)
    assert ver.returncode == 0
    assert ver.stdout.startswith(f"grid {grid.__version__} (")
    bad = cli("nosuchcommand", timeout=30)
    assert bad.returncode == 2
    gone = cli("bench", "--quick", timeout=30)  # the benchmarks live in benchmarks/
    assert gone.returncode == 2 and "invalid choice: 'bench'" in gone.stderr


def test_main_returns_status_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    from grid.cli import main

    assert main(["serve", "--local", "http://127.0.0.1:1", "--hosts", "http://127.0.0.1:1",
                 "--token", "t", "--dry-run"]) == 0
    assert "configuration OK" in capsys.readouterr().out
    assert main(["ping", "not-a-url", "--as", "http://127.0.0.1:1", "--token", "t"]) == 2
    assert "not of the form" in capsys.readouterr().err


# ----------------------------------------------------------------------- serve


def test_serve_from_toml_called_by_manager(loop_kind: str, tmp_path: Path) -> None:
    node, caller = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
    (tmp_path / "token.txt").write_text(TOKEN + "\n")
    (tmp_path / "node.toml").write_text(textwrap.dedent(f"""\
        local = "{node}"
        hosts = ["{node}", "{caller}"]
        token_file = "token.txt"
        handlers = ["{EXAMPLES / 'serve_handlers.py'}"]
        grace = 2
        log_level = "warning"

        [manager]
        max_streams = 1
        default_timeout = 5.0
        """))
    example = _example_module()

    async def main() -> None:
        async with ServeProcess("--config", str(tmp_path / "node.toml")) as srv:
            mgr = grid.Manager(caller, [node, caller], lambda: TOKEN)
            example.register(mgr)  # type: ignore[attr-defined]  # typed handler, caller side
            await mgr.start()
            try:
                await _call_example_handlers(mgr, node)
                usage_t = example.Usage  # type: ignore[attr-defined]
                got = await example.USAGE.call(mgr.connection(node), usage_t("/mnt/d1"))  # type: ignore[attr-defined]
                assert got == usage_t("/mnt/d1", 40, 100)
                # [manager] max_streams = 1 reached the node: a second open stream is refused
                conn = mgr.connection(node)
                first = await conn.new_stream(10, in_capacity=8, out_capacity=8)
                await first.send(b"held")
                assert await first.__anext__() == b"HELD"
                with pytest.raises(grid.RemoteError, match="too many open streams"):
                    await conn.new_stream(10, in_capacity=8, out_capacity=8)
                await first.close_send()
                assert [x async for x in first] == []
            finally:
                await mgr.close()
            rc, out, err = await srv.stop()
            assert rc == 0, out + err
            assert "handlers: " in out and "4 from HANDLERS, register(mgr)" in out
            assert "SIGTERM: closing" in out and "grid serve: stopped" in out

    run(loop_kind, main, 60)


def test_serve_from_flags_with_module_name(loop_kind: str, tmp_path: Path) -> None:
    """Flags only; handlers as a dotted module name with a HANDLERS dict, and a
    second module given as ``module:attr`` (a register function)."""
    (tmp_path / "cli_handlers_a.py").write_text(textwrap.dedent("""\
        import grid

        async def double(payload):
            return (payload or b"") * 2

        HANDLERS = {5: double, (6, "x/y"): lambda p: b"sub:" + (p or b"")}
        """))
    (tmp_path / "cli_handlers_b.py").write_text(textwrap.dedent("""\
        def setup(mgr):
            mgr.register_single(7, lambda p: mgr.local.encode())

        def register(mgr):
            raise AssertionError("only setup() is named on the command line")
        """))
    node, caller = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"

    async def main() -> None:
        srv = ServeProcess("--local", node, "--hosts", f"{node},{caller}", "--token", TOKEN,
                           "--handlers", "cli_handlers_a", "--handlers", "cli_handlers_b:setup",
                           "--log-level", "warning", "--grace", "1", cwd=tmp_path)
        async with srv:
            async with grid.Manager(caller, [node, caller], lambda: TOKEN) as mgr:
                conn = mgr.connection(node)
                await conn.wait_for_connect(timeout=10.0)
                assert await conn.request(5, b"ab", timeout=5.0) == b"abab"
                assert await conn.subroute("x", "y").request(6, b"q", timeout=5.0) == b"sub:q"
                assert await conn.request(7, timeout=5.0) == node.encode()
                with pytest.raises(grid.RemoteUnknownHandler):
                    await conn.request(1, timeout=5.0)
            rc, out, err = await srv.stop()
            assert rc == 0, out + err
            assert "cli_handlers_a: 2 from HANDLERS" in out
            assert "cli_handlers_b:setup: setup(mgr)" in out

    run(loop_kind, main, 60)


def test_serve_sigint_closes_gracefully(tmp_path: Path) -> None:
    """SIGINT (Ctrl-C) stops the node like SIGTERM: a clean exit 0."""
    node = f"http://127.0.0.1:{free_port()}"

    async def main() -> None:
        async with ServeProcess("--local", node, "--hosts", node, "--token", TOKEN) as srv:
            rc, out, err = await srv.stop(signal.SIGINT)
            assert rc == 0, out + err
            assert "SIGINT: closing" in out and "grid serve: stopped" in out
            assert "Traceback" not in err

    run("asyncio", main, 30)


def test_example_config_dry_run() -> None:
    out = cli("serve", "--config", str(EXAMPLES / "node.toml"), "--dry-run", timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "serve_handlers.py: 4 from HANDLERS, register(mgr)" in out.stdout
    assert "dialed by: http://127.0.0.1:9090" in out.stdout  # the identity node.toml reserves
    assert "configuration OK" in out.stdout


@pytest.mark.parametrize("toml, flags, message", [
    ('local = "http://127.0.0.1:1"\nhosts = ["http://127.0.0.1:1"]\ntoken = "t"\ncolour = 1\n',
     [], "unknown key(s) colour"),
    ('local = "http://127.0.0.1:1"\nhosts = ["http://127.0.0.1:1"]\n', [], "no token"),
    ('local = "http://127.0.0.1:1"\nhosts = ["http://127.0.0.1:2"]\ntoken = "t"\n', [],
     "must appear exactly once in hosts"),
    ('local = "http://127.0.0.1:1"\nhosts = ["http://127.0.0.1:1"]\ntoken = "t"\n'
     '[manager]\nping_intervall = 1\n', [], "unknown option 'ping_intervall'"),
    ('local = "http://127.0.0.1:1"\nhosts = ["http://127.0.0.1:1"]\ntoken = "t"\n'
     '[manager]\nmax_streams = "many"\n', [], "max_streams must be int"),
    ('local = "http://127.0.0.1:1"\nhosts = ["http://127.0.0.1:1"]\ntoken = "t"\n',
     ["--handlers", "no_such_module_for_grid"], "no module named 'no_such_module_for_grid'"),
    ('local = "http://127.0.0.1:1"\nhosts = ["http://127.0.0.1:1"]\ntoken = "t"\n',
     ["--handlers", "json"], "defines neither HANDLERS"),
    ('local = "https://127.0.0.1:1"\nhosts = ["https://127.0.0.1:1"]\ntoken = "t"\n', [],
     "is https: give --tls-cert"),
    ('local = [1]\n', [], "local must be a string"),
    ('local = \n', [], "node.toml"),
])
def test_serve_config_errors(tmp_path: Path, toml: str, flags: list[str], message: str) -> None:
    (tmp_path / "node.toml").write_text(toml)
    out = cli("serve", "--config", str(tmp_path / "node.toml"), "--dry-run", *flags, timeout=30)
    assert out.returncode == 2, out.stdout + out.stderr
    assert message in out.stderr
    assert "Traceback" not in out.stderr


def test_serve_port_in_use_fails_cleanly() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        node = f"http://127.0.0.1:{s.getsockname()[1]}"
        out = cli("serve", "--local", node, "--hosts", node, "--token", "t", timeout=30)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "cannot listen on" in out.stderr


# ----------------------------------------------------------------------- ping


def test_ping_against_served_node(tmp_path: Path) -> None:
    """Success (RTTs and min/avg/max), then every kind of refusal, against one
    `grid serve` node."""
    me, node = hosts_where_first_dials()  # me dials node: the node accepts me
    other = f"http://127.0.0.1:{free_port()}"
    while local_dials(other, node):  # a host the node dials: it refuses that one from us
        other = f"http://127.0.0.1:{free_port()}"
    (tmp_path / "tok").write_text(TOKEN)

    async def main() -> None:
        async with ServeProcess("--local", node, "--hosts", f"{node},{me},{other}",
                                "--token-file", str(tmp_path / "tok"), "--log-level", "error"):
            rc, out, err = await acli("ping", node, "--as", me, "--token-file",
                                      str(tmp_path / "tok"), "-c", "3", "-i", "0.05")
            assert rc == 0, out + err
            assert f"handshake: accepted by {node} (connect, upgrade and handshake " in out
            assert sum(line.startswith(f"pong {i} from {node}: time=") for i in (1, 2, 3)
                       for line in out.splitlines()) == 3
            assert "3 pings sent, 3 pongs received, 0% lost" in out
            assert "rtt min/avg/max = " in out

            rc, out, err = await acli("ping", node, "--as", me, "--token", "wrong", "-c", "1")
            assert rc == 1, out + err
            assert "rejected by" in out and "HTTP 403" in out and "invalid token" in out
            assert "check --token" in out

            rc, out, err = await acli("ping", node, "--as", other, "--token", TOKEN, "-c", "1")
            assert rc == 1, out + err
            assert f"handshake: not attempted: {node} would refuse {other}" in out
            assert "expected to be client side" in out
            assert f"the node dials {other} itself" in out

            stranger = f"http://127.0.0.1:{free_port()}"
            while not local_dials(stranger, node):  # ping dials only as a host that dials
                stranger = f"http://127.0.0.1:{free_port()}"
            rc, out, err = await acli("ping", node, "--as", stranger, "--token", TOKEN, "-c", "1")
            assert rc == 1, out + err
            assert f"unknown incoming host: {stranger}" in out
            assert "not in the node's hosts list" in out

            rc, out, err = await acli("ping", node, "--as", me, "--token", TOKEN, "-c", "1",
                                      "--route-path", "/elsewhere")
            assert rc == 1, out + err
            assert "HTTP 404" in out

    run("asyncio", main, 90)


def test_ping_against_in_test_manager(loop_kind: str) -> None:
    """ping's handshake and pings against a library Manager on this loop; the
    Manager sees the ping identity connect and then leave."""
    me, node = hosts_where_first_dials()

    async def main() -> None:
        seen: list[str] = []

        def check(token: str) -> None:
            seen.append(token)
            if token != TOKEN:
                raise PermissionError("invalid token")

        async with grid.Manager(node, [node, me], lambda: TOKEN, check) as mgr:
            rc, out, err = await acli("ping", node, "--as", me, "--token", TOKEN, "-c", "2",
                                      "-i", "0")
            assert rc == 0, out + err
            assert "2 pings sent, 2 pongs received" in out
            assert seen == [TOKEN, TOKEN]  # the HTTP upgrade and the grid handshake
            conn = mgr.connection(me)
            assert conn.stats().messages_in >= 2  # the pings
            assert conn.stats().reconnects == 0

    run(loop_kind, main, 60)


def test_ping_unreachable_is_quick() -> None:
    port = free_port()  # nothing listens there
    import time

    t0 = time.monotonic()
    node = f"http://127.0.0.1:{port}"
    out = cli("ping", node, "--as", _dialer_of(node), "--token", "t",
              timeout=30)
    assert out.returncode == 3, out.stdout + out.stderr
    assert "unreachable" in out.stderr and "refused" in out.stderr.lower()
    assert time.monotonic() - t0 < 10


def test_ping_silent_server_times_out(tmp_path: Path) -> None:
    """A listener that never answers the upgrade: exit 3 once the dial's
    --timeout has passed."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        node = f"http://127.0.0.1:{s.getsockname()[1]}"
        out = cli("ping", node, "--as", _dialer_of(node),
                  "--token", "t", "--timeout", "0.5", timeout=30)
    assert out.returncode == 3, out.stdout + out.stderr
    assert "no answer within 0.5 s (TCP connect, TLS, HTTP upgrade or grid handshake)" in out.stderr


def test_serve_and_ping_over_tls(tmp_path: Path) -> None:
    """https: serve with --tls-cert/--tls-key, ping with --tls-ca; a ping
    without the CA fails certificate verification."""
    make_tls(tmp_path)
    me, node = hosts_where_first_dials()
    me, node = me.replace("http://", "https://"), node.replace("http://", "https://")
    if not local_dials(me, node):  # the dial rule hashes the whole string, scheme included
        me, node = node, me

    async def main() -> None:
        async with ServeProcess("--local", node, "--hosts", f"{node},{me}", "--token", TOKEN,
                                "--tls-cert", str(tmp_path / "node.pem"),
                                "--tls-key", str(tmp_path / "node.key"),
                                "--tls-ca", str(tmp_path / "ca.pem"), "--log-level", "error"):
            rc, out, err = await acli("ping", node, "--as", me, "--token", TOKEN, "-c", "2",
                                      "-i", "0", "--tls-ca", str(tmp_path / "ca.pem"))
            assert rc == 0, out + err
            assert "2 pongs received" in out
            rc, out, err = await acli("ping", node, "--as", me, "--token", TOKEN, "-c", "1")
            assert rc == 3, out + err
            assert "TLS handshake" in err and "certificate verify failed" in err

    run("asyncio", main, 60)


# ----------------------------------------------------------------------- call


async def acli_in(stdin: bytes, *args: str, timeout: float = 30.0) -> tuple[int, bytes, str]:
    """``python -m grid ARGS`` with ``stdin`` as its input; stdout as bytes."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "grid", *args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, env=_env())
    out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    assert proc.returncode is not None
    return proc.returncode, out, err.decode()


def test_call_against_in_test_manager(loop_kind: str, tmp_path: Path) -> None:
    """``grid call``: payload from the argument, @file, stdin or none; the
    reply's exact bytes on stdout; a handler's error, an unknown handler and
    a refused identity exit 1 with the text on stderr."""
    me, node = hosts_where_first_dials()
    (tmp_path / "blob").write_bytes(bytes(range(256)))

    async def main() -> None:
        def fail(p: bytes | None) -> bytes:
            raise grid.RemoteError(f"refused: {(p or b'').decode()}")

        def check(token: str) -> None:
            if token != TOKEN:
                raise PermissionError("invalid token")

        async with grid.Manager(node, [node, me], lambda: TOKEN, check) as mgr:
            mgr.register_single(1, lambda p: b"absent" if p is None else b"got:" + p)
            mgr.register_single(2, fail)
            mgr.register_single(3, lambda p: (p or b"").upper(), subroute="disk/1")
            base = ("--as", me, "--token", TOKEN)
            assert await acli_in(b"", "call", node, "1", "hello", *base) == (0, b"got:hello", "")
            assert await acli_in(b"", "call", node, "1", *base) == (0, b"absent", "")
            rc, out, _ = await acli_in(b"", "call", node, "1", f"@{tmp_path / 'blob'}", *base)
            assert (rc, out) == (0, b"got:" + bytes(range(256)))
            rc, out, _ = await acli_in(b"from\nstdin", "call", node, "1", "-", *base)
            assert (rc, out) == (0, b"got:from\nstdin")
            rc, out, _ = await acli_in(b"", "call", node, "3", "x", "--subroute", "disk/1", *base)
            assert (rc, out) == (0, b"X")
            rc, out, err = await acli_in(b"", "call", node, "2", "nope", *base)
            assert (rc, out) == (1, b"") and err == "grid call: remote error: refused: nope\n"
            rc, out, err = await acli_in(b"", "call", node, "99", *base)
            assert rc == 1 and "remote error:" in err and "99" in err, err
            rc, out, err = await acli_in(b"", "call", node, "1", "--as", me, "--token", "bad")
            assert rc == 1 and "rejected by" in err and "check --token" in err, err
            stranger = f"http://127.0.0.1:{free_port()}"
            rc, out, err = await acli_in(b"", "call", node, "1", "--as", stranger,
                                         "--token", TOKEN)
            assert rc == 1 and ("unknown incoming host" in err or "would refuse" in err), err
            assert mgr.connection(me).stats().reconnects >= 1  # each call was a connection

    run(loop_kind, main, 90)


def test_call_usage_errors(tmp_path: Path) -> None:
    node = f"http://127.0.0.1:{free_port()}"
    out = cli("call", node, "0", "--as", _dialer_of(node), "--token", "t")
    assert out.returncode == 2 and "ID must be a handler id 1..255, not 0" in out.stderr
    out = cli("call", node, "1", f"@{tmp_path / 'missing'}", "--as", _dialer_of(node),
              "--token", "t")
    assert out.returncode == 2 and "cannot read payload file" in out.stderr
    out = cli("call", node, "1", "--as", _dialer_of(node), "--token", "t", "--timeout", "2")
    assert out.returncode == 3 and "unreachable" in out.stderr, out.stderr
