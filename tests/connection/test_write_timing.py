"""When messages leave: a lone message on a quiet connection is written the
moment it is sent; the messages of a busy loop iteration are written
together at its end; and a connection returns to writing at once after a
burst.  Observed through ``Connection.stats().messages_out``, which counts a
message when it is handed to the socket."""

from __future__ import annotations

import asyncio

import grid
from grid.testing import TestGrid
from support import run

ECHO = 1


def _setup(m: grid.Manager) -> None:
    m.register_single(ECHO, lambda p: p)


def _sent(conn: grid.Connection) -> int:
    return conn.stats().messages_out


def test_lone_call_written_at_once_burst_batched_then_at_once_again(loop_kind: str) -> None:
    async def main() -> None:
        async with TestGrid(2, setup=_setup) as g:
            conn = g.conn(0, 1)
            assert await conn.request(ECHO, b"warm") == b"warm"

            # Quiet connection: the request is on the socket before request() returns.
            before = _sent(conn)
            fut = conn.request(ECHO, b"lone")
            assert _sent(conn) == before + 1
            assert await fut == b"lone"

            # A burst: the first leaves at once, the rest wait for the end of
            # the iteration and leave together.
            before = _sent(conn)
            futs = [conn.request(ECHO, b"%d" % i) for i in range(50)]
            assert _sent(conn) == before + 1
            assert await asyncio.gather(*futs) == [b"%d" % i for i in range(50)]
            assert _sent(conn) == before + 50

            # After the burst the next lone call waits for its iteration's end
            # (the connection was busy); that iteration sent one message, so
            # the call after it is written at once again.
            before = _sent(conn)
            fut = conn.request(ECHO, b"after")
            assert _sent(conn) == before
            assert await fut == b"after"
            before = _sent(conn)
            fut = conn.request(ECHO, b"quiet")
            assert _sent(conn) == before + 1
            assert await fut == b"quiet"

    run(loop_kind, main)

