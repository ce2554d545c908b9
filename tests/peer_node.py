"""A grid node in its own process, for tests that kill, freeze or restart a
peer.  Prints ``ready`` once serving.  Handlers: 1 echo, 2 hold (never
answers until the process dies), 3 identity of this process (its pid),
stream 10 two-way echo (capacities 1/1)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

import grid


async def main(args: argparse.Namespace) -> None:
    hosts = args.hosts.split(",")
    mgr = grid.Manager(args.local, hosts, lambda: args.token,
                       lambda t: None if t == args.token else (_ for _ in ()).throw(
                           PermissionError("invalid token")),
                       ping_interval=args.ping_interval,
                       stream_ping_interval=args.stream_ping_interval)
    never = asyncio.get_running_loop().create_future()

    async def hold(payload: bytes | None) -> bytes | None:
        await never
        return payload

    mgr.register_single(1, lambda p: p)
    mgr.register_single(2, hold)
    mgr.register_single(3, lambda p: str(os.getpid()).encode())

    async def echo_stream(ctx: grid.StreamContext, payload: bytes | None, inbound: object,
                          out: grid.StreamOut) -> None:
        async for item in inbound:  # type: ignore[attr-defined]
            await out.send(item)

    mgr.register_stream(10, grid.StreamHandler(echo_stream, in_capacity=1, out_capacity=1))
    await mgr.start()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    await never


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--local", required=True)
    ap.add_argument("--hosts", required=True)
    ap.add_argument("--token", default="grid-test-token")
    ap.add_argument("--ping-interval", type=float, default=10.0)
    ap.add_argument("--stream-ping-interval", type=float, default=15.0)
    grid.run(main(ap.parse_args()))
