"""The receive-window pool (grid/_ws_parser_py.py's module docstring), over
real sockets: idle connections hold no read window, a partly received frame
waits in its parser while the window serves other connections, and what the
pool keeps stays within its bound.

``recv_pool_stats()`` counts the windows of the whole process, so each test
collects the garbage of earlier tests first and compares with what was lent
out before it started.
"""

from __future__ import annotations

import gc

import pytest

from grid._consts import WS_BINARY, Op
from grid._impl import encode_frame, recv_pool_stats
from grid.testing import TestGrid
from support import run
from test_hostile import ECHO, Node, mask, request
from test_hostile_bounds import until

_LARGE = 1 << 20  # the node's max_message_size when a large frame is sent


def _echo(m: grid.Manager) -> None:
    m.register_single(ECHO, lambda p: p)


def _lent_before() -> int:
    gc.collect()  # parsers of earlier tests give their windows back as they go
    return recv_pool_stats()["in_use"]


def test_stats_shape() -> None:
    s = recv_pool_stats()
    assert set(s) == {"in_use", "free", "window", "keep"}
    assert s["window"] == 262144 and s["keep"] == 64
    assert 0 <= s["free"] <= s["keep"] and s["in_use"] >= 0


def test_idle_mesh_holds_no_window(loop_kind: str) -> None:
    async def body() -> None:
        lent = _lent_before()
        free = recv_pool_stats()["free"]
        async with TestGrid(6, setup=_echo) as g:
            # Traffic on every one of the 15 connections, both ways.
            for a, me in zip(g.managers, g.hosts):
                for h in g.hosts:
                    if h != me:
                        want = f"{me}->{h}".encode() * 100
                        assert await a.connection(h).request(ECHO, want, timeout=5) == want
            s = recv_pool_stats()
            # 30 parsers are alive and idle between reads: none holds a window.
            assert s["in_use"] == lent, s
            # One loop reads one socket at a time: the pool needed few windows
            # (an earlier test may have left it holding more).
            assert s["free"] <= max(free, 4), s
        assert recv_pool_stats()["in_use"] == lent

    run(loop_kind, body)


@pytest.mark.parametrize("size", [20000, 600000], ids=["small-frame", "large-frame"])
def test_partly_received_frame_waits_in_its_parser(loop_kind: str, size: int) -> None:
    """Half a request frame arrives; the node's parser keeps those bytes (a
    frame below LARGE_FRAME in its own buffer, a large one in its final
    buffer), gives the window back, the window serves the other connection,
    and the rest of the frame completes the request with the right payload."""

    async def body() -> None:
        lent = _lent_before()
        async with Node(max_message_size=_LARGE) as node:
            r = await node.peer_raw()
            await r.roundtrip(1)
            assert recv_pool_stats()["in_use"] == lent
            payload = bytes(range(256)) * (size // 256)
            frame = encode_frame(request(7, payload), WS_BINARY, mask(), True)
            half = len(frame) // 2
            seen = node.peer_conn.stats().bytes_in
            r.send(frame[:half])
            await until(lambda: node.peer_conn.stats().bytes_in >= seen + half, 5,
                        "the node read the first half of the frame")
            assert recv_pool_stats()["in_use"] == lent  # the window went back
            await node.check_good()  # reads on the other connection borrow it meanwhile
            assert recv_pool_stats()["in_use"] == lent
            r.send(frame[half:])
            resp, _ = await r.until(7, Op.RESPONSE, timeout=5)
            assert resp.payload == payload
            await r.roundtrip(8)
            assert recv_pool_stats()["in_use"] == lent
        assert recv_pool_stats()["in_use"] == lent

    run(loop_kind, body)

