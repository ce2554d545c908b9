"""Differential fuzz harness for the grid codec twins (atheris / libFuzzer).

Every input goes through the pure twin and, when it is built, the compiled
twin; the harness fails (and libFuzzer saves the input) when

* anything other than :class:`grid.ProtocolError` escapes a decoder or a
  :class:`FrameParser`,
* the twins disagree: different results, or different exception text,
* a decoded message does not survive re-encoding,
* a failed parser accepts more input.

Input layout (so libFuzzer mutations keep their meaning):

====== ===================================================================
byte 0 selector. bits 0-1 = 3: WebSocket frames, else grid envelopes.
       envelopes: bit 2 appends the XXH3 CRC of the body (so mutated
       messages with FlagCRC still get past the check).
       frames: bit 2 server role (frames must be masked), bits 3-4 the
       max_message_size (default, 0, 16, 1024), bit 5 feed through
       get_buffer()/buffer_updated() instead of feed().
byte 1 seed of the chunk splits (frames).
rest   the bytes under test.
====== ===================================================================

Run it through ``fuzz/run.py``; ``check_one`` is also used by
``tests/codec/test_fuzz_smoke.py`` without atheris.
"""

from __future__ import annotations

import importlib
import random
import sys
from types import ModuleType

TWINS: list[ModuleType] = []
ProtocolError: type[Exception] = Exception
_MAX_SIZES = (None, 0, 16, 1024)
_CHUNKS = (1, 2, 3, 5, 8, 13, 64, 1000, 65536)


def load_twins() -> list[ModuleType]:
    """Import the twins (call inside ``atheris.instrument_imports()`` to fuzz
    with coverage of the pure twin)."""
    global ProtocolError
    if not TWINS:
        from grid import _codec_py
        from grid.errors import ProtocolError as PE

        ProtocolError = PE
        TWINS.append(_codec_py)
        try:
            TWINS.append(importlib.import_module("grid._codec"))
        except ImportError:
            pass
    return TWINS


def _fields(m) -> tuple:
    return (m.mux_id, m.seq, m.deadline_ms, m.handler, m.op, m.flags, m.payload, m.subroute)


def _outcome(fn, data):
    try:
        r = fn(data)
    except ProtocolError as exc:
        return ("error", str(exc))
    return ("ok", [_fields(m) for m in r] if isinstance(r, list) else _fields(r))


def check_envelope(body: bytes) -> None:
    ref = TWINS[0]
    for name in ("decode_message", "decode_messages", "iter_merged"):
        first = _outcome(getattr(ref, name), body)
        for twin in TWINS[1:]:
            other = _outcome(getattr(twin, name), body)
            if other != first:
                raise AssertionError(f"{name} differs: py={first!r} {twin.__name__}={other!r}")
        if name == "decode_message" and first[0] == "ok":
            fields = first[1]
            for twin in TWINS:
                again = _fields(ref.decode_message(twin.encode_message(*fields)))
                if again != fields:
                    raise AssertionError(f"{twin.__name__} re-encode changed {fields!r} to {again!r}")


def _run_parser(codec, server: bool, max_size, data: bytes, seed: int, via_buffer: bool) -> list:
    p = codec.FrameParser(server) if max_size is None else codec.FrameParser(server, max_size)
    rng = random.Random(seed)
    log: list = []
    pos = 0
    try:
        while pos < len(data):
            n = rng.choice(_CHUNKS)
            if via_buffer:
                buf = p.get_buffer(n)
                n = min(n, len(buf), len(data) - pos)
                buf[:n] = data[pos:pos + n]
                log.append(p.buffer_updated(n))
            else:
                log.append(p.feed(data[pos:pos + n]))
            pos += n
    except ProtocolError as exc:
        log.append(("error", str(exc)))
        if not p.failed:
            raise AssertionError("parser raised but does not report failed")
        try:
            p.feed(b"")
        except ProtocolError:
            pass
        else:
            raise AssertionError("a failed parser accepted more input")
    return log


def check_frames(selector: int, seed: int, data: bytes) -> None:
    server = bool(selector & 0x04)
    max_size = _MAX_SIZES[(selector >> 3) & 3]
    via_buffer = bool(selector & 0x20)
    first = _run_parser(TWINS[0], server, max_size, data, seed, via_buffer)
    for twin in TWINS[1:]:
        other = _run_parser(twin, server, max_size, data, seed, via_buffer)
        if other != first:
            raise AssertionError(f"FrameParser differs: py={first!r} {twin.__name__}={other!r}")
    # Complete binary messages go on to the envelope decoders, as on a connection.
    for chunk in first:
        if isinstance(chunk, list):
            for opcode, payload in chunk:
                if opcode == 2:
                    check_envelope(payload)


def check_one(data: bytes) -> None:
    """Run one fuzz input through every twin; raise on any finding."""
    if not TWINS:
        load_twins()
    if len(data) < 2:
        return
    selector, seed, body = data[0], data[1], data[2:]
    if selector & 3 == 3:
        check_frames(selector, seed, body)
        return
    if selector & 0x04:
        body = body + TWINS[0].crc32(body).to_bytes(4, "little")
    check_envelope(body)


def main(argv: list[str]) -> None:
    import atheris

    with atheris.instrument_imports(include=["grid"]):
        load_twins()
    print("fuzzing twins:", ", ".join(t.__name__ for t in TWINS), file=sys.stderr)
    atheris.Setup(argv, check_one)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
