"""Interop with MinIO's own Go grid (``interop/``: gridpeer runs the pinned
``github.com/minio/minio/internal/grid``).

Every scenario runs in both directions and with both dial roles:

* **Python calls Go**: a Python Manager calls the handlers of a gridpeer in
  server mode (``handlers.json``);
* **Go calls Python**: gridpeer in client mode runs its scenarios
  (``-remote <python host> -scenario ...``) against a Python Manager serving
  the same handlers (``interop/pynode.py``);
* ``role`` = ``py-dials`` / ``go-dials`` picks the host strings so that the
  Python node, or the Go node, is the WebSocket client (docs/protocol.md §1.2).

Plaintext connections carry the CRC; ``test_tls`` runs over TLS with a
generated CA (no CRC); ``test_keepalive`` (``slow``, ~33 s) idles long enough
for connection and stream pings to matter.  Skipped only when there is no Go
toolchain (or prebuilt peer); the peer is built once per session (cached
under ``~/.cache/grid-interop``).  Python nodes run on uvloop (one test also
on asyncio's loop); the suite's two runs cover the compiled and pure cores.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

import grid
from grid._consts import FLAG_CRC
from grid._impl import local_dials, subroute_id
from grid.testing import free_port
from interop import gopeer
from interop.pynode import HANDLERS, Observed, TypedMsg, hid, register, token_checker, typed_handler, \
    typed_transform
from support import WireTap, make_tls, run

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(not gopeer.go_available(),
                       reason="interop tests need the Go toolchain (`go` on PATH or GRID_INTEROP_GO) "
                              "or a prebuilt peer (GRID_INTEROP_PEER)"),
]

TOKEN = "interop-token"
ROLES = ["py-dials", "go-dials"]
LOOP = "uvloop"
#: Every case the Go client's default scenarios report against a Python node.
GO_SCENARIOS = ["echo", "error", "subroute", "typed", "concurrent", "stream-echo", "stream-noinput",
                "stream-fail", "stream-subroute", "stream-cancel", "deadline"]
EXPECTED_CASES = {
    ("echo", "absent"), ("echo", "empty"), ("echo", "size=512"), ("echo", "size=102400"),
    ("error", "fixed-text"), ("error", "unregistered-handler"), ("error", "unregistered-subroute"),
    ("subroute", "disk/1"), ("subroute", "disk/2"), ("subroute", "nested disk + 1"),
    ("typed", "basic"), ("typed", "empty-tags"), ("typed", "int16-count"), ("typed", "negative"),
    ("typed", "int64-count"), ("concurrent", "n=10000"), ("stream-echo", "n=10000"),
    ("stream-noinput", "n=100"), ("stream-noinput", "n=0"), ("stream-noinput", "missing-payload"),
    ("stream-fail", "k=5"), ("stream-fail", "k=0"), ("stream-subroute", "disk/1"),
    ("stream-subroute", "disk/2"), ("stream-cancel", "callback-error"),
    ("stream-cancel", "context-cancel"), ("stream-cancel", "deadline"),
    ("stream-cancel", "two-way-cancel"), ("deadline", "expires-on-callee"),
    ("deadline", "within-deadline"), ("deadline", "echo-after"),
}


# ------------------------------------------------------------------ fixtures and helpers


@pytest.fixture(scope="session")
def go_binary() -> Path:
    """The gridpeer binary, built once per session (cached across sessions)."""
    return gopeer.build_peer()


@pytest.fixture(params=ROLES)
def role(request: pytest.FixtureRequest) -> str:
    """Which node dials: ``py-dials`` or ``go-dials``."""
    return request.param


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, Any]:
    """(directory with ca.pem/node.pem/node.key, server ctx, client ctx)."""
    d = tmp_path_factory.mktemp("interop-tls")
    server, client = make_tls(d)
    return d, server, client


def peer_host(py_host: str, py_dials: bool) -> str:
    """A loopback host string for a Go node that ``py_host`` dials iff ``py_dials``."""
    scheme = py_host.split("://", 1)[0]
    for _ in range(500):
        g = f"{scheme}://127.0.0.1:{free_port()}"
        if g != py_host and bool(local_dials(py_host, g)) == py_dials:
            return g
    raise RuntimeError("no host found")


def host_pair(py_dials: bool, scheme: str = "http") -> tuple[str, str]:
    """(python host, go host) on loopback such that the Python node dials iff ``py_dials``."""
    py_host = f"{scheme}://127.0.0.1:{free_port()}"
    return py_host, peer_host(py_host, py_dials)


@contextlib.asynccontextmanager
async def py_node(local: str, hosts: list[str], *, token: str = TOKEN, accept: str = TOKEN,
                  ssl: Any = None, client_ssl: Any = None,
                  listen: tuple[str, int] | None = None,
                  **kw: Any) -> AsyncIterator[tuple[grid.Manager, Observed]]:
    """A Python Manager serving the interop handlers (quick redial for tests)."""
    obs = Observed()
    mgr = grid.Manager(local, hosts, auth_fn=lambda: token, validate_token=token_checker(accept, obs),
                       ssl=ssl, client_ssl=client_ssl, retry_base=0.2, **kw)
    register(mgr, obs)
    await mgr.start(listen=listen)
    try:
        yield mgr, obs
    finally:
        await mgr.close()


@contextlib.asynccontextmanager
async def go_server(binary: Path, local: str, hosts: list[str], **kw: Any) -> AsyncIterator[gopeer.GoPeer]:
    """A gridpeer in server mode (started and stopped off the event loop)."""
    peer = await asyncio.to_thread(gopeer.start_peer, local, hosts=hosts, binary=binary, **kw)
    try:
        yield peer
    finally:
        await asyncio.to_thread(peer.stop)


async def go_client(binary: Path, local: str, remote: str, scenarios: list[str], *,
                    hosts: list[str] | None = None, timeout: float = 120.0, **kw: Any) -> dict[str, Any]:
    """Run gridpeer's client scenarios against ``remote`` in a thread (the loop keeps serving)."""
    out = await asyncio.to_thread(
        gopeer.run_client_raw, local, remote, scenarios, hosts=hosts or [local, remote],
        binary=binary, timeout=timeout, **kw)
    return out


def check_results(out: dict[str, Any], expected: set[tuple[str, str]]) -> list[dict[str, Any]]:
    """Assert the Go client reported every expected case, all passing."""
    results = [ln for ln in out["lines"] if "scenario" in ln]
    failed = [r for r in results if not r.get("ok")]
    assert not failed, "Go client failures:\n" + "\n".join(map(str, failed)) + \
        "\nstderr tail:\n" + out["stderr"][-3000:]
    seen = {(r["scenario"], r.get("case", "")) for r in results}
    assert expected <= seen, f"missing cases: {sorted(expected - seen)}"
    assert out["returncode"] == 0, out["stderr"][-3000:]
    return results


async def go_stats(conn: grid.Connection) -> dict[str, int]:
    """The Go peer's stream handler counters (the ``stats`` handler)."""
    reply = await conn.request(hid("stats"), timeout=5)
    return msgpack.unpackb(reply)  # type: ignore[no-any-return]


async def wait_go_cancelled(conn: grid.Connection, before: dict[str, int]) -> dict[str, int]:
    """Wait until a stream handler the Go peer started after ``before`` returned
    after its context was cancelled (the callee saw the cancellation)."""
    deadline = time.monotonic() + 10
    while True:
        now = await go_stats(conn)
        if (now["Started"] > before["Started"] and now["Cancelled"] > before["Cancelled"]
                and now["Active"] <= before["Active"]):
            return now
        assert time.monotonic() < deadline, f"Go handler not cancelled: before {before}, now {now}"
        await asyncio.sleep(0.02)


async def connected_pair(mgr: grid.Manager, peer: gopeer.GoPeer, go_host: str, py_host: str,
                         py_dials: bool) -> grid.Connection:
    conn = mgr.connection(go_host)
    await conn.wait_for_connect(timeout=10)
    await asyncio.to_thread(peer.wait_state, py_host, "Connected", 10)
    assert conn.dials is py_dials
    return conn


# ------------------------------------------------------------------ Python calls Go


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_py_calls_go_requests(go_binary: Path, role: str, loop_kind: str) -> None:
    """Handshake, payload sizes, remote errors, subroutes, typed calls and a
    deadline that expires on the Go callee."""
    py_dials = role == "py-dials"
    py_host, go_host = host_pair(py_dials)
    hosts = [py_host, go_host]

    async def main() -> None:
        async with py_node(py_host, hosts) as (mgr, _), go_server(go_binary, go_host, hosts) as peer:
            conn = await connected_pair(mgr, peer, go_host, py_host, py_dials)
            assert conn._base == FLAG_CRC  # plaintext: every queued message carries the CRC
            echo = hid("echo")
            assert await conn.request(echo) is None
            assert await conn.request(echo, b"") == b""
            for size in (512, 100 * 1024):
                body = bytes(range(256)) * (size // 256)
                assert await conn.request(echo, body) == body

            with pytest.raises(grid.RemoteError) as ei:
                await conn.request(hid("error"), b"x")
            assert ei.value.message == HANDLERS["error"]["error_text"]
            assert not isinstance(ei.value, grid.RemoteUnknownHandler)
            with pytest.raises(grid.RemoteUnknownHandler) as ei:
                await conn.request(1)  # LockLock: valid id, not registered on the peer
            assert ei.value.message == "Invalid Handler for type: LockLock"
            unreg = conn.subroute("disk", "unregistered")
            with pytest.raises(grid.RemoteUnknownHandler) as ei:
                await unreg.request(hid("subroute"), b"x")
            want = "Invalid Handler for type: [" + " ".join(
                str(b) for b in subroute_id("disk/unregistered", hid("subroute"))) + "]"
            assert ei.value.message == want

            for sub in HANDLERS["subroute"]["subroutes"]:
                first, rest = sub.split("/", 1)
                for view in (conn.subroute(sub), conn.subroute(first, rest),
                             conn.subroute(first).subroute(rest)):
                    assert await view.request(hid("subroute"), b"hello") == f"{sub}:hello".encode()

            th = typed_handler()
            for req in (TypedMsg("grid", 41, ["a", "b"]), TypedMsg("", 0, []),
                        TypedMsg("n", 200, ["x"]), TypedMsg("négatif ✓", -1000, ["", "z"]),
                        TypedMsg("big", 1 << 40, ["t" * 309])):
                assert await th.call(conn, req) == typed_transform(req)

            # A deadline that expires while the Go handler still sleeps: the
            # caller gives up on time; Go drops the late reply (§7 step 3).
            slow = hid("slow")
            t0 = time.monotonic()
            with pytest.raises(TimeoutError):
                await conn.request(slow, msgpack.packb(1000), timeout=0.15)
            assert time.monotonic() - t0 < 0.8  # well before the handler's 1 s
            assert await conn.request(slow, msgpack.packb(20), timeout=5) == msgpack.packb(20)
            # The late reply (if any) would have arrived by now.
            await asyncio.sleep(max(0.0, t0 + 1.2 - time.monotonic()))
            assert await conn.request(echo, b"after") == b"after"
            st = conn.stats()
            assert st.outstanding_requests == 0 and st.reconnects == 0
            assert conn.state is grid.State.CONNECTED

    run(loop_kind, main)


def test_py_calls_go_concurrent(go_binary: Path, role: str) -> None:
    """10,000 requests in flight at once; a tap between the nodes sees merged
    containers (OpMerged) flowing both ways."""
    py_dials = role == "py-dials"
    py_host, go_host = host_pair(py_dials)
    hosts = [py_host, go_host]
    real_port = free_port()
    # The tap listens on the acceptor's advertised port and forwards to where
    # the acceptor really listens.
    acceptor = go_host if py_dials else py_host
    tap = WireTap(real_port)

    async def main() -> None:
        await tap.start(int(acceptor.rsplit(":", 1)[1]))
        go_kw: dict[str, Any] = {"extra": ["-listen", f"127.0.0.1:{real_port}"]} if py_dials else {}
        py_listen = None if py_dials else ("127.0.0.1", real_port)
        try:
            async with py_node(py_host, hosts, listen=py_listen) as (mgr, _), \
                    go_server(go_binary, go_host, hosts, **go_kw) as peer:
                conn = await connected_pair(mgr, peer, go_host, py_host, py_dials)
                n = 10_000
                bodies = [i.to_bytes(8, "big") + bytes((i + j) & 0xFF for j in range(56))
                          for i in range(n)]
                before = conn.stats()
                replies = await asyncio.gather(*(conn.request(hid("echo"), b, timeout=60)
                                                 for b in bodies))
                assert replies == bodies
                after = conn.stats()
                assert after.messages_in - before.messages_in >= n
                assert after.messages_out - before.messages_out >= n
                assert after.reconnects == 0
        finally:
            await tap.close()
        py_to_go, go_to_py = ("c2s", "s2c") if py_dials else ("s2c", "c2s")
        for direction in (py_to_go, go_to_py):
            frames = tap.frames[direction]
            merged = [f for f in frames if f[0] == 17]
            assert merged, f"no merged container {direction}"
            assert sum(len(f) - 1 for f in merged) >= n // 2, (direction, len(merged))

    run(LOOP, main, timeout=120)


def test_py_calls_go_streams(go_binary: Path, role: str) -> None:
    """Two-way echo of 10,000 items, no-input streams, a stream failing
    midway, subroutes, and cancellations the Go callee sees."""
    py_dials = role == "py-dials"
    py_host, go_host = host_pair(py_dials)
    hosts = [py_host, go_host]

    async def main() -> None:
        async with py_node(py_host, hosts) as (mgr, _), go_server(go_binary, go_host, hosts) as peer:
            conn = await connected_pair(mgr, peer, go_host, py_host, py_dials)

            # two-way echo; item 0 is present-but-empty (PayloadIsZero both ways)
            n = 10_000
            items = [b""] + [b"item-%d" % i for i in range(1, n)]
            s = await conn.new_stream(hid("stream-echo"))

            async def sender() -> None:
                for it in items:
                    await s.send(it)
                await s.close_send()

            task = asyncio.ensure_future(sender())
            got = [x async for x in s]
            await task
            assert got == items

            # no input: N items then EOF; zero items; no payload -> remote error
            noinput = hid("stream-noinput")
            for count in (100, 0):
                s = await conn.new_stream(noinput, msgpack.packb(count))
                assert [msgpack.unpackb(x) async for x in s] == list(range(count))
            s = await conn.new_stream(noinput)
            with pytest.raises(grid.RemoteError) as ei:
                async for _ in s:
                    pass
            assert ei.value.message == "interop: missing count payload"

            # failing midway: the Python caller gets every item, then the exact error
            fmt = HANDLERS["stream-fail"]["error_format"]
            for k in (5, 0):
                s = await conn.new_stream(hid("stream-fail"), msgpack.packb(k))
                seen: list[int] = []
                with pytest.raises(grid.RemoteError) as ei:
                    async for x in s:
                        seen.append(msgpack.unpackb(x))
                assert ei.value.message == fmt % k
                assert seen == list(range(k))

            for sub in HANDLERS["stream-subroute"]["subroutes"]:
                s = await conn.subroute(sub).new_stream(hid("stream-subroute"), msgpack.packb(10))
                assert [x async for x in s] == [f"{sub}:{i}".encode() for i in range(10)]

            # cancellations: Stream.cancel, cancelling the reading task, a
            # stream deadline and a two-way stream; each time the Go handler
            # must return with its context cancelled.
            before = await go_stats(conn)
            s = await conn.new_stream(noinput, msgpack.packb(-1))
            k = 0
            async for _ in s:
                k += 1
                if k == 10:
                    break
            s.cancel()
            before = await wait_go_cancelled(conn, before)

            s = await conn.new_stream(noinput, msgpack.packb(-1))
            ten = asyncio.Event()

            async def reader() -> None:
                k = 0
                async for _ in s:
                    k += 1
                    if k == 10:
                        ten.set()

            rt = asyncio.ensure_future(reader())
            await ten.wait()
            rt.cancel()
            with pytest.raises(asyncio.CancelledError):
                await rt
            before = await wait_go_cancelled(conn, before)

            s = await conn.new_stream(noinput, msgpack.packb(-1), timeout=0.3)
            t0 = time.monotonic()
            # Either side's deadline may end it first: our TimeoutError, or the
            # Go callee's DisconnectClientMux (Disconnected).
            with pytest.raises((TimeoutError, grid.Disconnected)):
                async for _ in s:
                    pass
            assert time.monotonic() - t0 < 2
            before = await wait_go_cancelled(conn, before)

            s = await conn.new_stream(hid("stream-echo"))

            async def pump() -> None:
                i = 0
                while True:
                    await s.send(b"x%d" % i)
                    i += 1

            pt = asyncio.ensure_future(pump())
            k = 0
            async for _ in s:
                k += 1
                if k == 10:
                    break
            s.cancel()
            with pytest.raises(grid.GridError):
                await pt
            await wait_go_cancelled(conn, before)

            assert await conn.request(hid("echo"), b"still alive") == b"still alive"
            assert conn.stats().reconnects == 0
            assert conn.stats().outstanding_streams == 0

    run(LOOP, main, timeout=120)


# ------------------------------------------------------------------ Go calls Python


def test_go_calls_py(go_binary: Path, role: str) -> None:
    """Every gridpeer client scenario against a Python node: requests, errors,
    subroutes, typed calls, 10,000 concurrent requests, streams (echo of
    10,000, no input, failing, subroutes, cancellations), deadlines."""
    py_dials = role == "py-dials"
    py_host, go_host = host_pair(py_dials)

    async def main() -> None:
        async with py_node(py_host, [py_host, go_host]) as (mgr, obs):
            out = await go_client(go_binary, go_host, py_host, GO_SCENARIOS)
            results = check_results(out, EXPECTED_CASES)
            conn = mgr.connection(go_host)
            assert conn.dials is py_dials
            by_case = {(r["scenario"], r.get("case", "")): r for r in results}
            # Python's text for an unknown handler / subroute is Go's
            assert by_case[("error", "unregistered-handler")]["detail"]["matches_go_text"] is True
            assert by_case[("error", "unregistered-subroute")]["detail"]["matches_go_text"] is True
            # the Python callee saw every cancellation (also checked by Go through "stats")
            for case in ("callback-error", "context-cancel", "deadline", "two-way-cancel"):
                assert by_case[("stream-cancel", case)]["detail"]["remote_check"] == "ok"
            assert obs.cancelled >= 4 and obs.active == 0
            # the Go caller's deadline reached the Python handler as DeadlineMS (150 ms)
            first = obs.slow_deadlines[0]
            assert first is not None and 0.1 < first <= 0.151, obs.slow_deadlines
            # The expired call's handler either finished late (its reply then
            # dropped, as Go does) or was cancelled at the deadline; the Go
            # caller got DeadlineExceeded, not a late reply, either way.
            assert obs.slow_done + obs.slow_cancelled == 2 and obs.slow_done >= 1, obs
            assert obs.tokens_rejected == []

    run(LOOP, main, timeout=150)


# ------------------------------------------------------------------ auth


def test_bad_token_rejected(go_binary: Path, role: str, caplog: pytest.LogCaptureFixture) -> None:
    """A wrong token is refused by the accepting side, whichever it is, and
    the reason is visible: HTTP 403 in the Python dialer's ``last_error``, or
    a failed Go client plus the Python acceptor's log."""
    py_dials = role == "py-dials"
    py_host, go_host = host_pair(py_dials)
    hosts = [py_host, go_host]

    async def main() -> None:
        if py_dials:
            # Python presents a token the Go acceptor does not accept.
            async with py_node(py_host, hosts, token="wrong-token") as (mgr, _), \
                    go_server(go_binary, go_host, hosts, accept_token=TOKEN) as peer:
                conn = mgr.connection(go_host)
                assert conn.dials
                with pytest.raises(TimeoutError):
                    await conn.wait_for_connect(timeout=1.5)
                assert conn.state is not grid.State.CONNECTED
                assert conn.last_error is not None and "HTTP 403" in conn.last_error, conn.last_error
                assert peer.state(py_host) != "Connected"
            # Control: the right token connects the same pair (the Python node's
            # accept token plays no part, it only dials).
            async with py_node(py_host, hosts, accept="python-only") as (mgr, _), \
                    go_server(go_binary, go_host, hosts, accept_token=TOKEN) as peer:
                conn = await connected_pair(mgr, peer, go_host, py_host, py_dials)
                assert await conn.request(hid("echo"), b"ok") == b"ok"
        else:
            # Go presents a token the Python acceptor does not accept.
            with caplog.at_level(logging.INFO, logger="grid"):
                async with py_node(py_host, hosts, accept=TOKEN) as (mgr, obs):
                    # Long enough for Go to log a refused dial even when it starts slowly
                    # (at 2 s its log was sometimes still empty on a loaded machine).
                    out = await go_client(go_binary, go_host, py_host, ["echo"], token="wrong-token",
                                          connect_timeout=5.0, timeout=30)
                    assert out["returncode"] == 1
                    connect = [ln for ln in out["lines"] if ln.get("scenario") == "connect"]
                    assert connect and connect[0]["ok"] is False, out["lines"]
                    assert mgr.connection(go_host).state is not grid.State.CONNECTED
                    assert "wrong-token" in obs.tokens_rejected
            assert any("HTTP 403" in r.getMessage() for r in caplog.records), \
                [r.getMessage() for r in caplog.records]
            assert "403" in out["stderr"], out["stderr"][-2000:]

    run(LOOP, main, timeout=60)


# ------------------------------------------------------------------ restart


def test_go_peer_restart(go_binary: Path, role: str) -> None:
    """The Go peer is killed (SIGKILL) and restarted on the same address: the
    Python side notices, fails calls with Disconnected meanwhile, reconnects
    (or is reconnected to) and calls succeed again."""
    py_dials = role == "py-dials"
    py_host, go_host = host_pair(py_dials)
    hosts = [py_host, go_host]

    async def main() -> None:
        async with py_node(py_host, hosts) as (mgr, _):
            async with go_server(go_binary, go_host, hosts) as peer:
                conn = await connected_pair(mgr, peer, go_host, py_host, py_dials)
                assert await conn.request(hid("echo"), b"one") == b"one"
                s = await conn.new_stream(hid("stream-noinput"), msgpack.packb(-1))
                await s.__anext__()
                pending = asyncio.ensure_future(conn.request(hid("slow"), msgpack.packb(5000)))
                await asyncio.sleep(0.05)
                peer.proc.kill()
                with pytest.raises(grid.Disconnected):
                    await asyncio.wait_for(pending, 5)
                with pytest.raises(grid.Disconnected):
                    async for _ in s:
                        pass
                assert conn.state is not grid.State.CONNECTED
                with pytest.raises(grid.Disconnected):
                    await conn.request(hid("echo"), b"down")
            async with go_server(go_binary, go_host, hosts) as peer:
                await conn.wait_for_connect(timeout=10)
                assert await conn.request(hid("echo"), b"two") == b"two"
                s = await conn.new_stream(hid("stream-noinput"), msgpack.packb(3))
                assert [msgpack.unpackb(x) async for x in s] == [0, 1, 2]
                assert conn.stats().reconnects >= 1
                await asyncio.to_thread(peer.wait_state, py_host, "Connected", 10)

    run(LOOP, main, timeout=60)


# ------------------------------------------------------------------ TLS


def test_tls(go_binary: Path, role: str, tls_files: tuple[Path, Any, Any]) -> None:
    """https on both ends (no CRC): handshake, a request and a stream in both
    directions, with certificates from a generated CA."""
    d, server_ctx, client_ctx = tls_files
    py_dials = role == "py-dials"
    py_host, go_host = host_pair(py_dials, "https")
    go_client_host = peer_host(py_host, py_dials)
    tls = dict(tls_cert=d / "node.pem", tls_key=d / "node.key", tls_ca=d / "ca.pem")

    async def main() -> None:
        hosts = [py_host, go_host, go_client_host]
        async with py_node(py_host, hosts, ssl=server_ctx, client_ssl=client_ctx) as (mgr, obs), \
                go_server(go_binary, go_host, [py_host, go_host], **tls) as peer:
            assert peer.ready is not None and peer.ready["tls"] is True
            conn = await connected_pair(mgr, peer, go_host, py_host, py_dials)
            assert conn._base == 0  # TLS on both ends: no CRC (§1.6)
            assert await conn.request(hid("echo"), b"over tls") == b"over tls"
            s = await conn.new_stream(hid("stream-echo"))
            items = [b"%d" % i for i in range(100)]

            async def sender() -> None:
                for it in items:
                    await s.send(it)
                await s.close_send()

            task = asyncio.ensure_future(sender())
            assert [x async for x in s] == items
            await task

            out = await go_client(go_binary, go_client_host, py_host, ["echo", "stream-echo"],
                                  hosts=[go_client_host, py_host], n=100, **tls)
            check_results(out, {("echo", "absent"), ("echo", "empty"), ("echo", "size=512"),
                                ("echo", "size=102400"), ("stream-echo", "n=100")})
            c2 = mgr.connection(go_client_host)
            assert c2.dials is py_dials and c2._base == 0

    run(LOOP, main, timeout=60)


# ------------------------------------------------------------------ keepalive


@pytest.mark.slow
def test_keepalive(go_binary: Path) -> None:
    """Connection and stream pings across languages, over ~32 idle seconds,
    for both dial roles at once (they run concurrently to save time).

    * Go calls Python: gridpeer's ``stream-ping`` keeps a two-way stream idle
      for 32 s.  Go pings the connection every 10 s and drops it at the 30 s
      tick unless Python answered; it pings the stream at 15 s and 30 s, and
      those pings take sequence numbers the Python callee must count, or the
      item sent after the idle time fails with a sequence mismatch.
    * Python calls Go at the same time, from a second Python node with short
      intervals (connection ping every 1.5 s, dropped after 3 s without pong;
      stream ping every 3 s, failed after 6 s unheard): the Go node's
      connection and stream pongs keep that idle stream alive.
    """
    idle = 32

    async def one_role(py_dials: bool) -> None:
        py_a = f"http://127.0.0.1:{free_port()}"
        go_c = peer_host(py_a, py_dials)
        py_b, go_s = host_pair(py_dials)
        async with py_node(py_a, [py_a, go_c]) as (mgr_a, _), \
                py_node(py_b, [py_b, go_s], ping_interval=1.5, stream_ping_interval=3.0) as (mgr_b, _), \
                go_server(go_binary, go_s, [py_b, go_s]) as peer:
            go_run = asyncio.ensure_future(go_client(go_binary, go_c, py_a, ["stream-ping"], n=idle,
                                                     timeout=idle + 90))
            conn = await connected_pair(mgr_b, peer, go_s, py_b, py_dials)
            s = await conn.new_stream(hid("stream-echo"))
            await s.send(b"before")
            assert await s.__anext__() == b"before"
            waited = 0.0
            while not go_run.done() and waited < idle + 60:
                await asyncio.sleep(0.5)
                waited += 0.5
            assert waited >= 8, "the Go scenario ended early"
            await s.send(b"after")
            assert await s.__anext__() == b"after"
            await s.close_send()
            assert [x async for x in s] == []
            st = conn.stats()
            assert st.reconnects == 0 and st.state is grid.State.CONNECTED
            assert st.last_ping_rtt is not None  # Go's connection pongs arrived and decoded

            out = await go_run
            check_results(out, {("stream-ping", f"idle={idle}s")})
            a = mgr_a.connection(go_c)
            assert a.stats().reconnects == 0 and a.dials is py_dials

    async def main() -> None:
        await asyncio.gather(one_role(True), one_role(False))

    run(LOOP, main, timeout=idle + 120)
