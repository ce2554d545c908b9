"""WebSocket framing and masking, pure-Python twin (RFC 6455 §5.2, §5.3), for
the writer side: single frames, one grid message as one frame, and queued
messages batched into frames as the Go writer does (docs/protocol.md §4).
Part of :mod:`grid._codec_py`, which re-exports the public names; the frame
parser is in ``_ws_parser_py``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from grid._consts import MERGE_MAX_BYTES, MERGE_MAX_MESSAGES, WS_BINARY
from grid._envelope_py import (
    _U16, _U64, Buffer, SplitFrame, _index, _joined, _view, encode_merged, encode_message,
)

def apply_mask(data: Buffer, key: Buffer) -> bytes:
    """XOR ``data`` with the repeating 4-byte ``key`` (RFC 6455 §5.3)."""
    key = _view(key)
    if len(key) != 4:
        raise ValueError("a WebSocket mask key is 4 bytes")
    data = _view(data)
    n = len(data)
    if n == 0:
        return b""
    # One big-integer XOR beats a per-byte loop by two orders of magnitude.
    full = bytes(key) * (n // 4 + 1)
    x = int.from_bytes(data, "little") ^ int.from_bytes(full[:n], "little")
    return x.to_bytes(n, "little")


# Client mask keys (RFC 6455 §5.3, §10.3: unpredictable to the network),
# cut from a pool of the OS's randomness (os.urandom, the kernel's CSPRNG)
# refilled in one call every _MASK_POOL // 4 keys.
_MASK_POOL = 4096
_mask_pool = b""  # the pool's bytes
_mask_pos = 0  # the next key's offset in it


def mask_key() -> bytes:
    """A fresh 4-byte client mask key (RFC 6455 §5.3), from a pool of
    ``os.urandom`` bytes refilled a few thousand bytes at a time."""
    global _mask_pool, _mask_pos
    pos = _mask_pos
    if pos + 4 > len(_mask_pool):
        _mask_pool, pos = os.urandom(_MASK_POOL), 0
    _mask_pos = pos + 4
    return _mask_pool[pos:pos + 4]


_draw_key = mask_key  # for the functions below, whose argument shadows the name


def encode_frame(
    payload: Buffer,
    opcode: int = WS_BINARY,
    mask_key: Buffer | None = None,
    fin: bool = True,
) -> bytes:
    """Encode one WebSocket frame.  With ``mask_key`` (4 bytes) the frame is
    masked, as a client must; without it, unmasked, as a server must.
    ``mask_key=b""`` draws a random key."""
    opcode = _index(opcode)
    if not 0 <= opcode <= 0xF:
        raise ValueError(f"opcode {opcode} is outside 0..15")
    payload = _view(payload)
    n = len(payload)
    first = (0x80 if fin else 0) | opcode
    masked = 0x80 if mask_key is not None else 0
    if n < 126:
        head = bytes((first, masked | n))
    elif n < 0x10000:
        head = bytes((first, masked | 126)) + _U16.pack(n)
    else:
        head = bytes((first, masked | 127)) + _U64.pack(n)
    if mask_key is None:
        return head + bytes(payload)
    mask_key = _view(mask_key)
    if len(mask_key) == 0:
        mask_key = _draw_key()
    return head + bytes(mask_key) + apply_mask(payload, mask_key)


def encode_frames(
    messages: Sequence[Buffer | SplitFrame],
    mask_key: Buffer | None = None,
    max_messages: int = MERGE_MAX_MESSAGES,
    max_bytes: int = MERGE_MAX_BYTES,
) -> bytes:
    """Encode queued grid messages as binary WebSocket frames, ready to write.

    Messages are batched as the Go writer does (§4): a message joins the
    current batch while fewer than ``max_messages`` precede it and the batch
    stays below ``max_bytes``; a batch of one leaves as a plain message, a
    larger one as an OpMerged container.  With ``mask_key`` (4 bytes) every
    frame is masked with it, as a client must.  A message may be a
    :class:`SplitFrame` (its parts joined, as ``bytes(frame)``).
    """
    if mask_key is not None and len(mask_key) != 4:
        raise ValueError("a WebSocket mask key is 4 bytes")
    if len(messages) == 0:
        return b""
    out = [encode_frame(body, WS_BINARY, mask_key)
           for body in encode_batches(messages, max_messages, max_bytes)]
    return out[0] if len(out) == 1 else b"".join(out)


def encode_batches(
    messages: Sequence[Buffer | SplitFrame],
    max_messages: int = MERGE_MAX_MESSAGES,
    max_bytes: int = MERGE_MAX_BYTES,
) -> list[Buffer]:
    """The WebSocket message payloads :func:`encode_frames` frames, for a
    server that does the WebSocket framing itself: ``messages`` batched as
    the Go writer does (§4), each batch of one as that message (a
    :class:`SplitFrame` joined into bytes), each larger batch as an OpMerged
    container."""
    n = len(messages)
    out: list[Buffer] = []
    start = 0
    size = 0
    for i in range(n):
        ln = len(messages[i])
        if i + 1 < n and i - start < max_messages and size + ln < max_bytes:
            size += ln
            continue
        out.append(_joined(messages[start]) if i == start
                   else encode_merged(messages[start:i + 1]))
        start = i + 1
        size = 0
    return out


def encode_message_frame(
    mux_id: int,
    seq: int,
    deadline_ms: int,
    handler: int,
    op: int,
    flags: int,
    payload: Buffer | None = None,
    subroute: Buffer | None = None,
    mask_key: Buffer | None = None,
) -> bytes:
    """One grid message as one complete binary WebSocket frame:
    ``encode_frame(encode_message(...), WS_BINARY, mask_key)`` in a single
    buffer.  Meant for large messages on a worker thread: the payload copy,
    the CRC and the mask run with the GIL released, so the caller's event
    loop keeps going.  ``mask_key`` as for :func:`encode_frame` (``b""``
    draws a random key)."""
    return encode_frame(encode_message(mux_id, seq, deadline_ms, handler, op, flags, payload,
                                       subroute), WS_BINARY, mask_key)
