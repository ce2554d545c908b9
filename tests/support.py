"""Helpers for the connection-level tests: event-loop parametrisation, a peer
node in its own process, a node with a well-behaved peer for the reliability
tests, and a wire tap that records grid frames in flight.

The ``loop_kind`` fixture (conftest.py) runs a test on both asyncio's default
loop and uvloop.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import uvloop

import grid
from grid import _codec_py
from grid._http import split_head
from grid._impl import local_dials
from grid.testing import free_port, free_ports

T = TypeVar("T")
N = TypeVar("N", bound="NodeWithGoodPeer")
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def run(kind: str, coro_fn: Callable[[], Awaitable[T]], timeout: float = 60.0) -> T:
    """Run ``coro_fn()`` to completion on a fresh loop of ``kind``, bounded by
    ``timeout`` so that a hang fails the test instead of the suite."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro_fn(), timeout)

    if kind == "uvloop":
        return uvloop.run(bounded())
    return asyncio.run(bounded())


def hosts_where_first_dials(n_tries: int = 200) -> tuple[str, str]:
    """Two loopback host strings (a, b) such that a dials b."""
    for _ in range(n_tries):
        a, b = (f"http://127.0.0.1:{port}" for port in free_ports(2))
        if a != b and local_dials(a, b):
            return a, b
    raise RuntimeError("no dialing pair found")


def host_where(pred: Callable[[str], bool], n_tries: int = 200) -> str:
    """A loopback host string on a free port for which ``pred`` holds."""
    for _ in range(n_tries):
        h = f"http://127.0.0.1:{free_port()}"
        if pred(h):
            return h
    raise RuntimeError("no such host")


class NodeWithGoodPeer:
    """A node (``mgr``, a :class:`grid.Manager` at ``host``) and a
    well-behaved peer (``good``, a second Manager at ``good_host``) connected
    to it, both presenting and accepting ``token``.

    ``peer`` is one more host in the node's list, one that dials the node: the
    identity a hand-driven or flooding client presents.  Subclasses add hosts
    to the node's list (:meth:`more_hosts`) and register the handlers of both
    managers (:meth:`setup`); ``kwargs`` go to the node's Manager.

    ``async with`` starts both managers (both listen before either dials, as
    TestGrid does) and waits until the good peer is connected; its exit shuts
    every connection down and closes both managers.
    """

    def __init__(self, token: str, **kwargs: Any) -> None:
        self.token = token
        self.host = f"http://127.0.0.1:{free_port()}"
        self.port = int(self.host.rsplit(":", 1)[1])
        self.good_host = host_where(lambda h: h != self.host)
        self.peer = host_where(lambda h: h not in (self.host, self.good_host)
                               and local_dials(h, self.host))
        hosts = [self.host, self.good_host, self.peer, *self.more_hosts()]
        self.mgr = grid.Manager(self.host, hosts, lambda: token, self.validate, **kwargs)
        self.good = grid.Manager(self.good_host, [self.host, self.good_host], lambda: token,
                                 self.validate)
        for m in (self.mgr, self.good):
            self.setup(m)

    def more_hosts(self) -> list[str]:
        """Hosts the node's list holds besides its own, the good peer's and
        ``peer`` (called once, after those three are chosen)."""
        return []

    def setup(self, m: grid.Manager) -> None:
        """Register handlers on ``m`` (called for the node, then the good peer)."""

    def validate(self, token: str) -> None:
        """Both managers' token check: ``token`` or PermissionError."""
        if token != self.token:
            raise PermissionError("invalid token")

    async def __aenter__(self: N) -> N:
        await self.mgr.start(dial=False)
        await self.good.start(dial=False)
        self.mgr.start_dialing()
        self.good.start_dialing()
        await self.good_conn.wait_for_connect(5)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for m in (self.mgr, self.good):
            for c in m.connections.values():
                c._shutting_down()
        await self.good.close()
        await self.mgr.close()

    @property
    def good_conn(self) -> Any:
        """The good peer's Connection to the node."""
        return self.good.connection(self.host)


class PeerProcess:
    """A grid node in a child process (tests/peer_node.py)."""

    def __init__(self, local: str, hosts: list[str], token: str = "grid-test-token",
                 extra: list[str] | None = None) -> None:
        self.local = local
        self.hosts = hosts
        self.token = token
        self.extra = extra or []
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, str(HERE / "peer_node.py"), "--local", self.local,
            "--hosts", ",".join(self.hosts), "--token", self.token, *self.extra,
            stdout=subprocess.PIPE, env=env,
        )
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 30)
        if line.strip() != b"ready":
            raise RuntimeError(f"peer did not start: {line!r}")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()

    async def __aenter__(self) -> PeerProcess:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGCONT)
        await self.kill()


class ControlPeer(PeerProcess):
    """A :class:`PeerProcess` started with ``--control`` (commands on stdin,
    JSON answers on stdout; see tests/peer_node.py), optionally under a
    command ``prefix`` such as ``["ip", "netns", "exec", "ns1"]`` (which
    execs, so :attr:`proc` is the node itself and signals reach it)."""

    def __init__(self, local: str, hosts: list[str], token: str = "grid-test-token",
                 extra: list[str] | None = None, prefix: list[str] | None = None) -> None:
        super().__init__(local, hosts, token, extra)
        self.prefix = prefix or []
        self._answers: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next_id = 0
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        self._answers = {}
        self.proc = await asyncio.create_subprocess_exec(
            *self.prefix, sys.executable, str(HERE / "peer_node.py"), "--local", self.local,
            "--hosts", ",".join(self.hosts), "--token", self.token, "--control", *self.extra,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
        )
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 30)
        if line.strip() != b"ready":
            raise RuntimeError(f"peer did not start: {line!r}")
        self._reader = asyncio.ensure_future(self._read(self.proc))

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        import json

        assert proc.stdout is not None
        while True:
            line = await proc.stdout.readline()
            if not line:
                break
            answer = json.loads(line)
            fut = self._answers.pop(answer.get("id"), None)
            if fut is not None and not fut.done():
                fut.set_result(answer)
        for fut in self._answers.values():  # the process died
            if not fut.done():
                fut.set_exception(ConnectionError("peer process exited"))
        self._answers = {}

    async def command(self, op: str, *, answer_within: float = 60.0,
                      **args: Any) -> dict[str, Any]:
        """Send one control command (``args`` are its fields) and wait at most
        ``answer_within`` seconds for its answer."""
        import json

        assert self.proc is not None and self.proc.stdin is not None
        self._next_id += 1
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._answers[self._next_id] = fut
        self.proc.stdin.write(json.dumps({"op": op, "id": self._next_id, **args}).encode()
                              + b"\n")
        await self.proc.stdin.drain()
        answer = await asyncio.wait_for(fut, answer_within)
        if "exception" in answer:
            raise RuntimeError(f"peer command {op} failed: {answer['exception']}")
        return answer

    async def kill(self) -> None:
        await super().kill()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
            self._reader = None


class WireTap:
    """A TCP proxy on loopback that forwards bytes unchanged and records the
    grid messages it sees in each direction (after the HTTP upgrade).

    ``frames[direction]`` lists, per WebSocket message, the ops inside it:
    ``[14]`` for a plain request, ``[17, 14, 14, ...]`` for a merged container.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.frames: dict[str, list[list[int]]] = {"c2s": [], "s2c": []}
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self, port: int) -> None:
        self.port = port
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        ur, uw = await asyncio.open_connection("127.0.0.1", self.target_port)
        a = asyncio.ensure_future(self._pump(r, uw, "c2s", server_parser=True))
        b = asyncio.ensure_future(self._pump(ur, w, "s2c", server_parser=False))
        self._tasks |= {a, b}
        try:
            await asyncio.gather(a, b, return_exceptions=True)
        finally:
            w.close()
            uw.close()

    async def _pump(self, r: asyncio.StreamReader, w: asyncio.StreamWriter, direction: str,
                    server_parser: bool) -> None:
        head = bytearray()
        parser = None
        while True:
            data = await r.read(65536)
            if not data:
                w.close()
                return
            w.write(data)
            await w.drain()
            if parser is None:
                head += data
                split = split_head(head)
                if split is None:
                    continue
                parser = _codec_py.FrameParser(server=server_parser)
                data = split[1]
            for opcode, payload in parser.feed(data):
                if opcode != 2:
                    continue
                outer = _codec_py.decode_message(payload)
                ops = [outer.op]
                if outer.op == 17:
                    ops += [m.op for m in _codec_py.iter_merged(payload)]
                self.frames[direction].append(ops)


def make_tls(tmp: Path) -> tuple[Any, Any]:
    """A CA and a certificate for 127.0.0.1 signed by it, made with the
    openssl command line; returns (server_ctx, client_ctx).

    Both carry the extensions a real CA issues (a critical basicConstraints
    and keyUsage, key identifiers, the leaf's extendedKeyUsage and
    subjectAltName), so they pass strict X.509 verification
    (``ssl.VERIFY_X509_STRICT``, on in Python 3.13's default contexts) as well
    as the default one.  The files are ca.pem, node.pem and node.key in
    ``tmp``."""
    import ssl

    def sh(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=tmp)

    (tmp / "ca.cnf").write_text(
        "[req]\n"
        "distinguished_name = dn\n"
        "x509_extensions = ca_ext\n"
        "prompt = no\n"
        "[dn]\n"
        "CN = grid-test-ca\n"
        "[ca_ext]\n"
        "basicConstraints = critical, CA:true\n"
        "keyUsage = critical, keyCertSign, cRLSign\n"
        "subjectKeyIdentifier = hash\n"
    )
    (tmp / "node.cnf").write_text(
        "basicConstraints = critical, CA:false\n"
        "keyUsage = critical, digitalSignature, keyEncipherment\n"
        "extendedKeyUsage = serverAuth, clientAuth\n"
        "subjectAltName = IP:127.0.0.1\n"
        "subjectKeyIdentifier = hash\n"
        "authorityKeyIdentifier = keyid:always\n"
    )
    sh("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-config", "ca.cnf",
       "-keyout", "ca.key", "-out", "ca.pem")
    sh("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
       "-keyout", "node.key", "-out", "node.csr")
    sh("x509", "-req", "-in", "node.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
       "-days", "2", "-extfile", "node.cnf", "-out", "node.pem")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(tmp / "node.pem", tmp / "node.key")
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tmp / "ca.pem"))
    return server, client
