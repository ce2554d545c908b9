"""The blocking-socket floor: one call at a time over plain blocking sockets.

The same framing as ``raw_echo.py`` (4-byte big-endian length of what follows,
8-byte request id, payload), no event loop, no futures: the client writes a
request with ``sendall`` and reads the reply with ``recv_into``; the server
does the reverse, one thread per connection.  With one call in flight this is
the least a Python client/server pair on this machine can take per round
trip, so it is the floor the other systems' c=1 latency is compared with.

Standalone smoke test::

    python benchmarks/baselines/blocking_echo.py [--seconds S] [--size N]
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from typing import Callable, List, Optional, Tuple

_HDR = struct.Struct(">IQ")  # length (of id + payload), request id
_HDR_SIZE = _HDR.size
_ID_SIZE = 8
#: Refuse frames bigger than this (a corrupt length would otherwise read forever).
MAX_FRAME = 64 * 1024 * 1024


def _read_exact(sock: socket.socket, view: memoryview, n: int) -> bool:
    """Fill ``view[:n]``; False at EOF."""
    got = 0
    while got < n:
        k = sock.recv_into(view[got:n])
        if k == 0:
            return False
        got += k
    return True


def _read_frame(sock: socket.socket, buf: bytearray) -> Optional[Tuple[int, bytes]]:
    """One frame as (request id, payload); None at EOF."""
    view = memoryview(buf)
    if not _read_exact(sock, view, _HDR_SIZE):
        return None
    length, rid = _HDR.unpack_from(buf)
    if length < _ID_SIZE or length > MAX_FRAME:
        raise ValueError(f"bad frame length {length}")
    size = length - _ID_SIZE
    if size > len(buf):
        buf.extend(bytes(size - len(buf)))
        view = memoryview(buf)
    if not _read_exact(sock, view, size):
        return None
    return rid, bytes(view[:size])


def _serve_conn(conn: socket.socket, handler: Callable[[bytes], bytes]) -> None:
    buf = bytearray(64 * 1024)
    with conn:
        while True:
            try:
                frame = _read_frame(conn, buf)
            except (OSError, ValueError):
                return
            if frame is None:
                return
            rid, payload = frame
            reply = handler(payload)
            conn.sendall(_HDR.pack(_ID_SIZE + len(reply), rid) + reply)


def _identity(payload: bytes) -> bytes:
    return payload


class BlockingServer:
    """Accepts connections on a thread, one more thread per connection."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0,
                 handler: Callable[[bytes], bytes] = _identity) -> None:
        self._sock = socket.create_server((host, port))
        self.port: int = self._sock.getsockname()[1]
        self._handler = handler
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=_serve_conn, args=(conn, self._handler), daemon=True).start()

    def close(self) -> None:
        self._sock.close()


class BlockingClient:
    """One connection; ``client.request(payload)`` blocks for the reply."""

    def __init__(self, host: str, port: int) -> None:
        self._sock = socket.create_connection((host, port))
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buf = bytearray(64 * 1024)
        self._next_id = 1

    def request(self, payload: bytes) -> bytes:
        rid = self._next_id
        self._next_id = rid + 1
        self._sock.sendall(_HDR.pack(_ID_SIZE + len(payload), rid) + payload)
        frame = _read_frame(self._sock, self._buf)
        if frame is None:
            raise ConnectionResetError("blocking echo connection closed")
        if frame[0] != rid:
            raise ValueError(f"reply for request {frame[0]}, expected {rid}")
        return frame[1]

    def close(self) -> None:
        self._sock.close()


def measure(client: BlockingClient, payload: bytes, seconds: float, warmup: float) -> List[int]:
    """Round-trip latencies (ns) of back-to-back requests during ``seconds``
    after ``warmup`` seconds of the same."""
    pc = time.perf_counter_ns
    request = client.request
    end_warm = pc() + int(warmup * 1e9)
    while pc() < end_warm:
        request(payload)
    lat: List[int] = []
    append = lat.append
    end = pc() + int(seconds * 1e9)
    while True:
        t0 = pc()
        if request(payload) != payload:
            raise AssertionError("echo mismatch")
        t1 = pc()
        append(t1 - t0)
        if t1 >= end:
            return lat


def main() -> None:
    import argparse
    import os

    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--size", type=int, default=512)
    args = ap.parse_args()
    server = BlockingServer()
    client = BlockingClient("127.0.0.1", server.port)
    lat = sorted(measure(client, os.urandom(args.size), args.seconds, 0.2))
    print(f"blocking echo (threads, one process): {len(lat) / args.seconds:,.0f} req/s, "
          f"p50 {lat[len(lat) // 2] / 1000:.1f} us, p99 {lat[int(len(lat) * 0.99)] / 1000:.1f} us")
    client.close()
    server.close()


if __name__ == "__main__":
    main()
