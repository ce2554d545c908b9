"""Routing helpers, pure-Python twin: the public XXH3 functions, subroute ids
(docs/protocol.md §6.2) and which side of a pair dials (§1.2).  Part of
:mod:`grid._codec_py`, which re-exports them.
"""

from __future__ import annotations

import hashlib

from xxhash import xxh3_64_intdigest

from grid._envelope_py import Buffer

def xxh3_64(data: Buffer) -> int:
    """XXH3-64 with seed 0 (§2.3)."""
    return xxh3_64_intdigest(data)


def crc32(data: Buffer) -> int:
    """The grid CRC: the low 32 bits of XXH3-64 (§2.2)."""
    return xxh3_64_intdigest(data) & 0xFFFFFFFF


def subroute_id(route: str, handler: int = 0) -> bytes:
    """The 32-byte subroute id (§6.2): SHA-256 of ``route`` with byte 0 set to
    ``handler`` and byte 1 to zero.  Join multi-segment routes with ``/`` first."""
    if not 0 <= handler <= 255:
        raise ValueError(f"handler {handler} is outside 0..255")
    digest = bytearray(hashlib.sha256(route.encode()).digest())
    digest[0] = handler
    digest[1] = 0
    return bytes(digest)


def local_dials(local: str, remote: str) -> bool:
    """True if ``local`` is the side that dials ``remote`` (§1.2)."""
    lb, rb = local.encode(), remote.encode()
    a = xxh3_64_intdigest(lb + rb)
    b = xxh3_64_intdigest(rb + lb)
    if a != b:
        return a < b
    return lb < rb
