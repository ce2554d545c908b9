"""A flooding peer in its own process, for tests/reliability/test_fairness.py.

It completes the HTTP upgrade and the grid handshake as a legitimate peer,
then for ``--seconds`` writes one kind of valid traffic as fast as the node's
socket takes it (blocking writes: TCP flow control is what slows it down),
while a reader thread counts the node's answers.  Kinds:

``ping``    connection pings (OpPing on mux 0), answered by OpPong;
``wsping``  WebSocket ping frames, answered by pong frames;
``echo``    echo requests (handler 1, sync), each its own frame;
``merged``  OpMerged containers of ``--per-container`` echo requests.

Once the time is up it stops writing, waits (at most ``--drain`` seconds) for
an answer to everything it sent, and prints one JSON line:
``{"sent": N, "answered": M, "errors": E}`` (E: error replies).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import threading
import time

from grid import _codec_py, _payloads
from grid._consts import FLAG_CRC, FLAG_EOF, FLAG_PAYLOAD_IS_ERR, WS_BINARY, WS_PING, WS_PONG, Op
from grid._impl import FrameParser, decode_messages, encode_frame, encode_message

ECHO = 1
MASK = b"\x11\x22\x33\x44"


def handshake(port: int, host: str, token: str) -> tuple[socket.socket, bytes]:
    """Upgrade and OpConnect as ``host``; return the socket and bytes read past
    the ConnectResponse's frame start (fed to the reader's parser)."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall((
        f"GET /minio/grid/v1 HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Bearer {token}\r\n"
        f"X-Minio-Time: {time.time_ns()}\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        data = sock.recv(65536)
        if not data:
            raise SystemExit("flooder: node closed during the upgrade")
        head += data
    raw, rest = head.split(b"\r\n\r\n", 1)
    if b" 101 " not in raw.split(b"\r\n", 1)[0] + b" ":
        raise SystemExit(f"flooder: upgrade refused: {raw!r}")
    req = _payloads.ConnectRequest(os.urandom(16), host, time.time_ns(), token)
    sock.sendall(encode_frame(encode_message(0, 0, 0, 0, int(Op.CONNECT), 0, req.encode()),
                              WS_BINARY, MASK))
    return sock, rest


def chunk(kind: str, per_container: int) -> tuple[bytes, int]:
    """The bytes written per step and how many answers they ask for."""
    if kind == "ping":
        m = encode_message(0, 0, 0, 0, int(Op.PING), FLAG_CRC, _payloads.encode_ping(time.time_ns()))
        return encode_frame(m, WS_BINARY, MASK) * 500, 500
    if kind == "wsping":
        return encode_frame(b"flood", WS_PING, MASK) * 500, 500
    req = encode_message(7, 0, 30000, ECHO, int(Op.REQUEST), FLAG_CRC | FLAG_EOF, b"flood")
    if kind == "echo":
        return encode_frame(req, WS_BINARY, MASK) * 500, 500
    if kind == "merged":
        return encode_frame(_codec_py.encode_merged([req] * per_container), WS_BINARY,
                            MASK), per_container
    raise SystemExit(f"flooder: unknown kind {kind}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--kind", required=True)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--drain", type=float, default=30.0)
    ap.add_argument("--per-container", type=int, default=100_000)
    a = ap.parse_args()

    sock, rest = handshake(a.port, a.host, a.token)
    counts = {"answered": 0, "errors": 0, "connected": False}
    lock = threading.Condition()
    parser = FrameParser(False, 1 << 30)

    def on_events(events: list) -> None:
        n = e = 0
        for opcode, payload in events:
            if opcode == WS_PONG:
                n += a.kind == "wsping"
            elif opcode == WS_BINARY:
                for m in decode_messages(payload):
                    if m.op == Op.CONNECT_RESPONSE:
                        ok = _payloads.ConnectResponse.decode(m.payload).accepted
                        with lock:
                            counts["connected"] = ok
                            lock.notify_all()
                    elif m.op == Op.PONG and a.kind == "ping":
                        n += 1
                    elif m.op == Op.RESPONSE:
                        n += 1
                        e += bool(m.flags & FLAG_PAYLOAD_IS_ERR)
        if n:
            with lock:
                counts["answered"] += n
                counts["errors"] += e
                lock.notify_all()

    def reader() -> None:
        on_events(parser.feed(rest))
        while True:
            try:
                data = sock.recv(1 << 18)
            except OSError:
                data = b""
            if not data:
                with lock:
                    counts["eof"] = True
                    lock.notify_all()
                return
            on_events(parser.feed(data))

    threading.Thread(target=reader, daemon=True).start()
    with lock:
        if not lock.wait_for(lambda: counts["connected"], 10):
            raise SystemExit("flooder: handshake not accepted")
    print("flooding", flush=True)
    data, per = chunk(a.kind, a.per_container)
    sent = 0
    end = time.monotonic() + a.seconds
    while time.monotonic() < end:
        sock.sendall(data)
        sent += per
    with lock:
        lock.wait_for(lambda: counts["answered"] >= sent or counts.get("eof"), a.drain)
        answered, errors = counts["answered"], counts["errors"]
    print(json.dumps({"sent": sent, "answered": answered, "errors": errors}), flush=True)
    sock.close()


if __name__ == "__main__":
    sys.exit(main())
