"""Seed corpus for fuzz/fuzz_codec.py, generated at run time (nothing binary is
committed): the spec's worked examples, random valid messages and containers,
and WebSocket streams in both roles, each wrapped in the harness's 2-byte
input header."""

from __future__ import annotations

import hashlib
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from grid import _codec_py as codec  # noqa: E402

SUB = codec.subroute_id("/mnt/disk1", 9)
TIME = bytes.fromhex("c70c05000000006776022507" "5bcd15")

# The argument tuples of docs/protocol.md §2.6 (E1-E10) and §5.4.
SPEC_MESSAGES = [
    (1, 0, 60000, 21, 14, 0x02, bytes.fromhex("81a161a162"), None),
    (2, 0, 30000, 9, 14, 0x22, None, SUB),
    (1, 0, 0, 0, 15, 0x03, bytes.fromhex("81a26f6bc3"), None),
    (300, 0, 60000, 9, 14, 0x23, None, SUB),
    (0, 0, 10000, 0, 3, 0x00, bytes.fromhex("81a174") + TIME, None),
    (0, 0, 10000, 0, 4, 0x01, bytes.fromhex("83a26e66c2a165c0a174") + TIME, None),
    (5, 3, 0, 0, 3, 0x01, None, None),
    (6, 0, 0, 9, 5, 0x33, b"", SUB),
    (6, 0, 0, 0, 13, 0x01, None, None),
    (1, 0, 0, 0, 15, 0x0B, b"file not found", None),
    (0, 0, 0, 0, 1, 0x00, bytes(80), None),
]

ENVELOPE, ENVELOPE_CRC, FRAMES = 0x00, 0x04, 0x03


def _random_message(rng: random.Random) -> bytes:
    flags = rng.choice([0, 1, 2, 3, 0x10, 0x11, 0x21, 0x23, 0x33, 0x0B, rng.randrange(256)])
    return codec.encode_message(
        rng.choice([0, 1, 127, 128, 300, 2**32, 2**64 - 1, rng.randrange(2**64)]),
        rng.choice([0, 1, 200, 2**32 - 1]), rng.choice([0, 10000, 60000, 2**32 - 1]),
        rng.randrange(80), rng.randrange(1, 18), flags,
        rng.randbytes(rng.choice([0, 1, 5, 255, 256, 300])),
        rng.randbytes(32) if flags & 0x20 else None,
    )


def _stream(rng: random.Random, server: bool, messages: list[bytes]) -> bytes:
    def key():
        return rng.randbytes(4) if server else None

    out = bytearray()
    for m in messages:
        if rng.random() < 0.3 and len(m) > 1:
            cut = rng.randrange(1, len(m))
            out += codec.encode_frame(m[:cut], 2, key(), False)
            out += codec.encode_frame(b"ping", 9, key())
            out += codec.encode_frame(m[cut:], 0, key(), True)
        else:
            out += codec.encode_frame(m, 2, key())
    out += codec.encode_frame(b"txt", 1, key()) + codec.encode_frame(b"\x03\xe8", 8, key())
    return bytes(out)


def seeds(count: int = 64, seed: int = 0) -> list[bytes]:
    """Harness inputs: a selector byte, a chunk-split seed byte, then the body."""
    rng = random.Random(seed)
    spec = [codec.encode_message(*m) for m in SPEC_MESSAGES]
    out = [bytes([ENVELOPE, 0]) + m for m in spec]
    out.append(bytes([ENVELOPE, 0]) + codec.encode_merged(spec[6:9]))
    for _ in range(count):
        msgs = [_random_message(rng) for _ in range(rng.randint(1, 4))]
        out.append(bytes([ENVELOPE, 0]) + msgs[0])
        body = codec.encode_message(1, 2, 3, 4, 9, 0x01, rng.randbytes(rng.randint(0, 40)))[:-4]
        out.append(bytes([ENVELOPE_CRC, 0]) + body)
        out.append(bytes([ENVELOPE, 0]) + codec.encode_merged(msgs))
        server = rng.random() < 0.5
        selector = FRAMES | (0x04 if server else 0) | (rng.randrange(4) << 3) | rng.choice([0, 0x20])
        out.append(bytes([selector, rng.randrange(256)]) + _stream(rng, server, msgs + spec[:2]))
    return out


def write_corpus(directory: Path, count: int = 64) -> int:
    """Write the seeds into ``directory`` (named by content hash); return how many."""
    directory.mkdir(parents=True, exist_ok=True)
    items = seeds(count)
    for data in items:
        (directory / hashlib.sha1(data).hexdigest()[:16]).write_bytes(data)
    return len(items)


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else ".fuzz/corpus")
    print(f"wrote {write_corpus(target)} seeds to {target}")
