"""Codec micro-benchmarks: the pure twin against the compiled one, in one process.

    python benchmarks/codec.py [--json PATH] [--repeat N] [--min-time S] [--check]

Both twins are imported directly (``grid._codec_py`` and ``grid._codec``;
``GRID_PURE`` plays no part) and run identical workloads back to back
(msgpack's ``benchmark.py`` style).  Each cell is the best of ``--repeat``
timed rounds (``time.perf_counter``), each round calibrated to take about
``--min-time`` seconds.  Prints a table with a cy/py ratio column and whether
the performance targets are met; ``--check`` also turns a missed target into
exit status 1.  Without a compiled twin the cython column stays empty.

A second table times the receive of one 64 MiB frame in 64 KiB reads (the
longest single event-loop step, the final one with its decode, the median and
the total), compiled with and without ``split_large`` and pure.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import random
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _p in (ROOT, HERE):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from _report import print_table, write_json  # noqa: E402

from grid import _codec_py  # noqa: E402

PAYLOAD_SIZE = 512
MERGED_COUNT = 50
CHUNK = 64 * 1024
STREAM_BYTES = 4 * 1024 * 1024
FLAGS_CRC = 0x01 | 0x10  # CRC + PayloadIsZero, like a stream item on plaintext
KEY = b"\x11\x22\x33\x44"

# (op name, workload id, minimum cy/py ratio)
TARGETS = [
    ("WS parse+unmask stream (buffer_updated)", "ws_parse_buffer", 5.0),
    ("envelope encode+decode", "envelope_roundtrip", 2.0),
]


def load_cython():
    try:
        return importlib.import_module("grid._codec")
    except ImportError as exc:
        print(f"codec.py: compiled twin not available ({exc}); pure column only", file=sys.stderr)
        return None


# ---------------------------------------------------------------- workloads
#
# Each workload factory takes a twin and returns (run, units_per_run, unit):
# ``run()`` does the work once; the result is reported as units per second.


def _payload() -> bytes:
    return random.Random(1).randbytes(PAYLOAD_SIZE)


def envelope_encode(c) -> Tuple[Callable[[], Any], float, str]:
    enc, p = c.encode_message, _payload()
    return (lambda: enc(123456, 42, 60000, 9, 10, FLAGS_CRC, p)), 1, "msg/s"


def envelope_decode(c) -> Tuple[Callable[[], Any], float, str]:
    wire = _codec_py.encode_message(123456, 42, 60000, 9, 10, FLAGS_CRC, _payload())
    dec = c.decode_message
    return (lambda: dec(wire)), 1, "msg/s"


def envelope_roundtrip(c) -> Tuple[Callable[[], Any], float, str]:
    enc, dec, p = c.encode_message, c.decode_message, _payload()
    return (lambda: dec(enc(123456, 42, 60000, 9, 10, FLAGS_CRC, p))), 1, "msg/s"


def _inner() -> List[bytes]:
    rng = random.Random(2)
    return [_codec_py.encode_message(i + 1, i, 0, 0, 10, FLAGS_CRC, rng.randbytes(PAYLOAD_SIZE))
            for i in range(MERGED_COUNT)]


def merged_build(c) -> Tuple[Callable[[], Any], float, str]:
    inner, build = _inner(), c.encode_merged
    return (lambda: build(inner)), MERGED_COUNT, "msg/s"


def merged_iterate(c) -> Tuple[Callable[[], Any], float, str]:
    container, it = _codec_py.encode_merged(_inner()), c.iter_merged
    return (lambda: it(container)), MERGED_COUNT, "msg/s"


def _client_stream() -> Tuple[bytes, int]:
    """~4 MiB of masked binary frames, one 512-byte-payload grid message each."""
    rng = random.Random(3)
    payload = _payload()
    frames = []
    total = 0
    seq = 0
    while total < STREAM_BYTES:
        msg = _codec_py.encode_message(7, seq, 0, 0, 9, FLAGS_CRC, payload)
        f = _codec_py.encode_frame(msg, 2, rng.randbytes(4))
        frames.append(f)
        total += len(f)
        seq += 1
    return b"".join(frames), seq


_STREAM: Optional[Tuple[bytes, int]] = None


def _stream() -> Tuple[bytes, int]:
    global _STREAM
    if _STREAM is None:
        _STREAM = _client_stream()
    return _STREAM


def ws_parse_feed(c) -> Tuple[Callable[[], Any], float, str]:
    data, count = _stream()
    chunks = [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)]

    def run():
        p = c.FrameParser(True)
        n = 0
        for ch in chunks:
            n += len(p.feed(ch))
        assert n == count, (n, count)

    return run, len(data) / 1e6, "MB/s"


def ws_parse_buffer(c) -> Tuple[Callable[[], Any], float, str]:
    data, count = _stream()
    view = memoryview(data)

    def run():
        p = c.FrameParser(True)
        n = 0
        pos = 0
        end = len(data)
        while pos < end:
            buf = p.get_buffer(CHUNK)
            k = min(len(buf), CHUNK, end - pos)
            buf[:k] = view[pos:pos + k]
            n += len(p.buffer_updated(k))
            pos += k
        assert n == count, (n, count)

    return run, len(data) / 1e6, "MB/s"


def mask_64k(c) -> Tuple[Callable[[], Any], float, str]:
    data, m = random.Random(4).randbytes(CHUNK), c.apply_mask
    return (lambda: m(data, KEY)), CHUNK / 1e6, "MB/s"


def crc_512(c) -> Tuple[Callable[[], Any], float, str]:
    data, crc = _payload(), c.crc32
    return (lambda: crc(data)), 1, "ops/s"


# ---------------------------------------------------------------- large frame receive
#
# One 64 MiB grid message (CRC on), masked, arriving in 64 KiB reads through
# get_buffer()/buffer_updated() as a socket would deliver it.  A "step" is
# what one event-loop callback does per read: the socket's copy into the
# buffer get_buffer() handed out, then buffer_updated(); the final step also
# decodes the message (decode_messages), as MuxCore does in the same call.

LARGE_SIZE = 64 * 1024 * 1024


def _large_frame() -> bytes:
    payload = random.Random(5).randbytes(LARGE_SIZE)
    return _codec_py.encode_frame(_codec_py.encode_message(5, 0, 0, 9, 10, FLAGS_CRC, payload), 2, KEY)


def large_receive(c, split: bool, data: bytes) -> Dict[str, float]:
    """Receive ``data`` once; return the step times in ms."""
    clock = time.perf_counter
    p = c.FrameParser(True, split_large=split)
    view = memoryview(data)
    steps: List[float] = []
    events: List[Any] = []
    pos = 0
    start = clock()
    while pos < len(data):
        t0 = clock()
        buf = p.get_buffer(-1)
        n = min(len(buf), CHUNK, len(data) - pos)
        buf[:n] = view[pos:pos + n]
        got = p.buffer_updated(n)
        if got:
            decoded = c.decode_messages(got[0][1])
        steps.append(clock() - t0)
        events += got
        pos += n
    total = clock() - start
    assert len(events) == 1 and len(decoded[0].payload) == LARGE_SIZE, events
    return {"max_step_ms": max(steps) * 1e3, "final_step_ms": steps[-1] * 1e3,
            "median_step_ms": sorted(steps)[len(steps) // 2] * 1e3, "total_ms": total * 1e3,
            "steps": len(steps)}


def large_frame_section(twins: Dict[str, Any], repeat: int) -> List[Dict[str, Any]]:
    """Best of ``repeat`` receives per configuration (each metric on its own)."""
    data = _large_frame()
    configs = [("cython", True), ("cython", False), ("pure", True)]
    out: List[Dict[str, Any]] = []
    for name, split in configs:
        twin = twins[name]
        row: Dict[str, Any] = {"twin": name, "split_large": split}
        if twin is not None:
            runs = [large_receive(twin, split, data) for _ in range(max(1, min(repeat, 3)))]
            for key in ("max_step_ms", "final_step_ms", "median_step_ms", "total_ms"):
                row[key] = min(r[key] for r in runs)
            row["steps"] = runs[0]["steps"]
        out.append(row)
        print(f"  large frame receive, {name} split_large={split}: done", file=sys.stderr, flush=True)
    return out


WORKLOADS: List[Tuple[str, str, Callable]] = [
    ("envelope encode (512 B, CRC)", "envelope_encode", envelope_encode),
    ("envelope decode (512 B, CRC)", "envelope_decode", envelope_decode),
    ("envelope encode+decode", "envelope_roundtrip", envelope_roundtrip),
    (f"merged build ({MERGED_COUNT} msgs)", "merged_build", merged_build),
    (f"merged iterate ({MERGED_COUNT} msgs)", "merged_iterate", merged_iterate),
    ("WS parse+unmask stream (feed)", "ws_parse_feed", ws_parse_feed),
    ("WS parse+unmask stream (buffer_updated)", "ws_parse_buffer", ws_parse_buffer),
    ("mask 64 KiB", "mask_64k", mask_64k),
    ("CRC 512 B", "crc_512", crc_512),
]


# ---------------------------------------------------------------- timing


def measure(run: Callable[[], Any], repeat: int, min_time: float) -> float:
    """Best seconds per call: calibrate a loop count to ~min_time, then
    take the fastest of ``repeat`` rounds."""
    n = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            run()
        dt = time.perf_counter() - t0
        if dt >= min_time / 2 or n >= 1 << 24:
            break
        n = n * 2 if dt == 0 else max(n * 2, int(n * min_time / dt))
    best = dt / n
    for _ in range(repeat - 1):
        t0 = time.perf_counter()
        for _ in range(n):
            run()
        best = min(best, (time.perf_counter() - t0) / n)
    return best


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="grid codec: pure vs cython")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    ap.add_argument("--repeat", type=int, default=5, help="timed rounds per cell (best is kept)")
    ap.add_argument("--min-time", type=float, default=0.2, help="seconds per timed round")
    ap.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = ap.parse_args(argv)

    twins = {"pure": _codec_py, "cython": load_cython()}
    results: List[Dict[str, Any]] = []
    rows = []
    for title, key, factory in WORKLOADS:
        cell: Dict[str, Any] = {"op": title, "id": key}
        for name, twin in twins.items():
            if twin is None:
                cell[name] = None
                continue
            run, units, unit = factory(twin)
            run()  # warm up (and let the workload's own asserts run once)
            cell[name] = units / measure(run, args.repeat, args.min_time)
            cell["unit"] = unit
        ratio = cell["cython"] / cell["pure"] if cell["cython"] else None
        cell["ratio"] = ratio
        results.append(cell)
        rows.append([f"{title} [{cell['unit']}]", cell["pure"], cell["cython"],
                     None if ratio is None else f"{ratio:.2f}x"])
        print(f"  {title}: done", file=sys.stderr, flush=True)

    print_table("grid codec, pure vs cython (higher is better; best of "
                f"{args.repeat})", ["op", "pure", "cython", "cy/py"], rows)
    # Where the compiled codec's message CRCs come from (the envelope rows
    # depend on it): "xxh3-inline" or "xxhash-package" (tools/buildcfg.py).
    crc_backend = getattr(twins["cython"], "CRC_BACKEND", None)
    if crc_backend is not None:
        print(f"compiled codec message CRC: {crc_backend}")

    large = large_frame_section(twins, args.repeat)
    print_table(f"large frame receive: {LARGE_SIZE >> 20} MiB in {CHUNK >> 10} KiB reads, masked, CRC "
                "(ms, lower is better; a step = one read: copy into get_buffer(), buffer_updated(), "
                "and for the last one decode_messages())",
                ["twin", "max single step", "final step", "median step", "total"],
                [[f"{r['twin']} split_large={r['split_large']}", r.get("max_step_ms"),
                  r.get("final_step_ms"), r.get("median_step_ms"), r.get("total_ms")] for r in large])

    by_id = {r["id"]: r for r in results}
    targets = []
    missed = False
    print()
    for title, key, need in TARGETS:
        ratio = by_id[key]["ratio"]
        met = ratio is not None and ratio >= need
        missed |= not met
        state = "n/a (no compiled twin)" if ratio is None else ("met" if met else "MISSED")
        shown = "" if ratio is None else f"{ratio:.2f}x, "
        print(f"target {title} >= {need:g}x: {shown}{state}")
        targets.append({"op": title, "id": key, "need": need, "ratio": ratio, "met": met})

    if args.json:
        write_json(args.json, {
            "benchmark": "codec",
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cython_twin": twins["cython"] is not None,
            "crc_backend": crc_backend,
            "repeat": args.repeat,
            "min_time": args.min_time,
            "results": results,
            "targets": targets,
            "large_frame_receive": {"bytes": LARGE_SIZE, "read": CHUNK, "rows": large},
        })
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
