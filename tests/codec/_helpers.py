"""Helpers shared by the codec tests: an RFC 6455 frame writer independent of
grid, and a FrameParser driver that logs every event and error."""

from __future__ import annotations

import struct

from grid.errors import ProtocolError

BINARY, TEXT, CONT, CLOSE, PING, PONG = 2, 1, 0, 8, 9, 10


def mask(data: bytes, key: bytes) -> bytes:
    """RFC 6455 masking, written independently of grid (whole-integer XOR)."""
    n = len(data)
    stream = (bytes(key) * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")


def frame(payload: bytes = b"", opcode: int = BINARY, *, fin: bool = True, key: bytes | None = None,
          rsv: int = 0, length: int | None = None) -> bytes:
    """An RFC 6455 frame written independently of grid (``length`` overrides
    the announced length, for malformed headers)."""
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | rsv | opcode])
    m = 0x80 if key is not None else 0
    if n < 126:
        head += bytes([m | n])
    elif n < 0x10000:
        head += bytes([m | 126]) + struct.pack(">H", n)
    else:
        head += bytes([m | 127]) + struct.pack(">Q", n)
    if key is None:
        return head + payload
    return head + key + mask(payload, key)


def run_parser(codec, server: bool, data: bytes, cuts: list[int], max_size,
               split_large: bool = False) -> list:
    p = (codec.FrameParser(server, split_large=split_large) if max_size is None
         else codec.FrameParser(server, max_size, split_large=split_large))
    log = []
    bounds = [0, *cuts, len(data)]
    for lo, hi in zip(bounds, bounds[1:]):
        try:
            log.append(("ok", p.feed(data[lo:hi])))
        except ProtocolError as exc:
            log.append(("ProtocolError", str(exc)))
            break
    log.append(("failed", p.failed))
    if p.failed:
        try:
            p.feed(b"")
        except ProtocolError as exc:
            log.append(("after", str(exc)))
    return log
