"""Smoke test of an installed grid, as a user meets it: run by tools/wheels.py
in a fresh virtual environment holding only the installed wheel (or sdist)
and its runtime dependencies, from a directory outside the checkout.

Checks, in order: ``import grid`` (from site-packages), the implementation
(``grid.ACCELERATED`` and the compiled codec's CRC path), ``py.typed`` and the
``.pyi`` stubs, a two-node grid on 127.0.0.1 answering a request and a
two-way stream, the typed layer round-tripping a dataclass (locally and over
the grid), and ``python -m grid --help``.  Prints one line per check and
exits non-zero at the first failure.

    python wheel_smoke.py --accelerated --crc xxh3-inline
    python wheel_smoke.py --pure
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

STUBS = ("_codec.pyi", "_mux.pyi", "_struct.pyi")
ECHO, UPPER, TYPED = 1, 2, 3
TOKEN = "wheel-smoke"


def ok(what: str) -> None:
    print(f"  ok  {what}", flush=True)


def fail(what: str) -> None:
    print(f"  FAIL  {what}", flush=True)
    raise SystemExit(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclasses.dataclass
class Usage:
    Disk: str
    Used: int = 0
    Total: int = 0
    Tags: list[str] = dataclasses.field(default_factory=list)


async def two_nodes(grid: Any) -> None:
    def check(token: str) -> None:
        if token != TOKEN:
            raise PermissionError("invalid token")

    async def upper(ctx: Any, payload: bytes | None, inbound: AsyncIterator[bytes] | None,
                    out: Any) -> None:
        assert inbound is not None
        async for item in inbound:
            await out.send((payload or b"") + item.upper())

    usage = grid.SingleHandler(TYPED, Usage, Usage)
    hosts = [f"http://127.0.0.1:{free_port()}" for _ in range(2)]
    managers = []
    for host in hosts:
        m = grid.Manager(host, hosts, lambda: TOKEN, check)
        m.register_single(ECHO, lambda p: p)
        m.register_stream(UPPER, grid.StreamHandler(upper, in_capacity=4, out_capacity=4))
        usage.register(m, lambda u: Usage(u.Disk, 40, 100, [*u.Tags, "seen"]))
        managers.append(m)
    try:
        for m in managers:
            await m.start()
        conn = managers[0].connection(hosts[1])
        if conn is None:
            fail("the first node has no connection to the second")
        await conn.wait_for_connect(timeout=10.0)
        reply = await conn.request(ECHO, b"ping", timeout=10.0)
        if reply != b"ping":
            fail(f"request: echo answered {reply!r}")
        ok("two-node grid on 127.0.0.1: request answered")
        stream = await conn.new_stream(UPPER, b"> ", timeout=10.0)
        for item in (b"a", b"b", b"c"):
            await stream.send(item)
        await stream.close_send()
        got = [item async for item in stream]
        if got != [b"> A", b"> B", b"> C"]:
            fail(f"stream: got {got!r}")
        ok("two-node grid on 127.0.0.1: two-way stream of 3 items")
        answer = await usage.call(conn, Usage("/mnt/disk1", Tags=["a"]))
        if answer != Usage("/mnt/disk1", 40, 100, ["a", "seen"]):
            fail(f"typed call: got {answer!r}")
        ok("typed layer: dataclass request and response over the grid")
    finally:
        for m in managers:
            await m.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--accelerated", action="store_true", help="expect the compiled core")
    mode.add_argument("--pure", action="store_true", help="expect the pure-Python twins")
    ap.add_argument("--crc", help="expected grid._impl.codec.CRC_BACKEND of the compiled codec")
    args = ap.parse_args()

    import grid
    import grid._impl
    from grid.types import decode_payload, encode_payload

    pkg = Path(grid.__file__).resolve().parent
    if "site-packages" not in pkg.parts:
        fail(f"grid imported from {pkg}, not from an installed copy")
    ok(f"import grid {grid.__version__} from {pkg}")
    if grid.ACCELERATED != args.accelerated:
        fail(f"grid.ACCELERATED is {grid.ACCELERATED} (implementation {grid.IMPLEMENTATION})")
    ok(f"grid.ACCELERATED is {grid.ACCELERATED} ({grid.IMPLEMENTATION})")
    if args.accelerated:
        compiled = sorted(p.name for p in pkg.glob("_*.so")) + sorted(p.name for p in pkg.glob("_*.pyd"))
        if len(compiled) != 3:
            fail(f"compiled modules: {compiled}")
        crc = getattr(grid._impl.codec, "CRC_BACKEND", None)
        if args.crc and crc != args.crc:
            fail(f"CRC backend is {crc}, expected {args.crc}")
        ok(f"compiled modules {', '.join(compiled)}; CRC backend {crc}")
    missing = [name for name in ("py.typed", *STUBS) if not (pkg / name).is_file()]
    if missing:
        fail(f"not installed: {missing}")
    ok("py.typed and the .pyi stubs are installed")

    value = Usage("/mnt/disk2", 7, 9, ["x", "y"])
    back = decode_payload(Usage, encode_payload(Usage, value))
    if back != value:
        fail(f"typed codec round trip: {back!r}")
    ok("typed layer: dataclass encodes and decodes to an equal value")

    asyncio.run(asyncio.wait_for(two_nodes(grid), 60))

    out = subprocess.run([sys.executable, "-m", "grid", "--help"], capture_output=True, text=True,
                         timeout=60)
    if out.returncode != 0 or "usage" not in out.stdout.lower():
        fail(f"python -m grid --help: exit {out.returncode}\n{out.stdout}{out.stderr}")
    ok("python -m grid --help")


if __name__ == "__main__":
    main()
