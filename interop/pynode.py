"""The Python side of the interop handlers: the handlers of ``handlers.json``
implemented with the public ``grid`` API, registered with the same ids,
subroutes and capacities as the Go peer (``handlers.go``) registers them.

Used by ``tests/interop/test_interop.py`` and ``benchmarks/interop.py``; also a small
server program::

    python -m interop.pynode --local http://127.0.0.1:9001 \\
        --hosts http://127.0.0.1:9001,http://127.0.0.1:9002 [--token T]

prints ``READY <local> <implementation>`` once listening and runs until
SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

import msgpack

import grid

from interop import gopeer

__all__ = ["TypedMsg", "Observed", "HANDLERS", "hid", "register", "typed_handler", "main"]

#: handlers.json, parsed once.
HANDLERS: dict[str, Any] = gopeer.load_handlers()["handlers"]


def hid(name: str) -> int:
    """The handler id of ``name`` in handlers.json."""
    return int(HANDLERS[name]["id"])


@dataclasses.dataclass
class TypedMsg:
    """Mirrors the Go ``TypedMsg`` struct (msgp map layout, keys in this order)."""

    Name: str = ""
    Count: int = 0
    Tags: list[str] = dataclasses.field(default_factory=list)


def typed_handler() -> grid.SingleHandler[TypedMsg, TypedMsg]:
    """The typed handler id with its request/response type (caller and callee)."""
    return grid.SingleHandler(hid("typed"), TypedMsg, TypedMsg)


def typed_transform(req: TypedMsg) -> TypedMsg:
    """What the typed handler computes (the same as the Go peer's)."""
    return TypedMsg(req.Name, req.Count + 1, list(req.Tags) + ["ok"])


@dataclasses.dataclass
class Observed:
    """What the Python handlers saw; ``stats`` reports the first three like Go."""

    started: int = 0
    active: int = 0
    cancelled: int = 0
    #: (remaining seconds of the call's deadline when it started, or None) per slow call
    slow_deadlines: list[float | None] = dataclasses.field(default_factory=list)
    slow_done: int = 0
    #: slow calls whose handler task was cancelled (grid cancels async
    #: handlers once the caller's deadline has passed)
    slow_cancelled: int = 0
    tokens_rejected: list[str] = dataclasses.field(default_factory=list)

    def stats_payload(self) -> bytes:
        return msgpack.packb({"Started": self.started, "Active": self.active,
                              "Cancelled": self.cancelled})


def _read_count(payload: bytes | None) -> int:
    if payload is None:
        raise grid.RemoteError("interop: missing count payload")
    try:
        n = msgpack.unpackb(payload)
    except Exception as exc:
        raise grid.RemoteError(f"interop: bad count payload: {exc}") from None
    if not isinstance(n, int):
        raise grid.RemoteError(f"interop: bad count payload: {n!r}")
    return n


def register(mgr: grid.Manager, obs: Observed | None = None) -> Observed:
    """Register every handler of handlers.json on ``mgr``; returns the observer."""
    obs = obs if obs is not None else Observed()

    def counted(fn: Any) -> Any:
        async def handle(ctx: grid.StreamContext, payload: bytes | None,
                         inbound: AsyncIterator[bytes] | None, out: grid.StreamOut) -> None:
            obs.started += 1
            obs.active += 1
            try:
                await fn(ctx, payload, inbound, out)
            except asyncio.CancelledError:
                obs.cancelled += 1
                raise
            finally:
                obs.active -= 1
        return handle

    mgr.register_single(hid("echo"), lambda p: p)

    err_text = HANDLERS["error"]["error_text"]

    def fail(p: bytes | None) -> bytes:
        raise grid.RemoteError(err_text)

    mgr.register_single(hid("error"), fail)

    for sub in HANDLERS["subroute"]["subroutes"]:
        prefix = (sub + ":").encode()
        mgr.register_single(hid("subroute"), lambda p, prefix=prefix: prefix + (p or b""),
                            subroute=sub)

    typed_handler().register(mgr, typed_transform)
    mgr.register_single(hid("stats"), lambda p: obs.stats_payload())

    async def slow(p: bytes | None) -> bytes | None:
        call = grid.current_call()
        loop = asyncio.get_running_loop()
        obs.slow_deadlines.append(None if call is None or call.deadline is None
                                  else call.deadline - loop.time())
        try:
            await asyncio.sleep(_read_count(p) / 1000)
        except asyncio.CancelledError:
            obs.slow_cancelled += 1
            raise
        obs.slow_done += 1
        return p

    mgr.register_single(hid("slow"), slow)

    async def echo(ctx: grid.StreamContext, payload: bytes | None,
                   inbound: AsyncIterator[bytes] | None, out: grid.StreamOut) -> None:
        assert inbound is not None
        async for item in inbound:
            await out.send(item)

    async def noinput(ctx: grid.StreamContext, payload: bytes | None, inbound: None,
                      out: grid.StreamOut) -> None:
        n = _read_count(payload)
        i = 0
        while n < 0 or i < n:
            await out.send(msgpack.packb(i))
            i += 1

    fail_format = HANDLERS["stream-fail"]["error_format"]

    async def stream_fail(ctx: grid.StreamContext, payload: bytes | None, inbound: None,
                          out: grid.StreamOut) -> None:
        k = _read_count(payload)
        for i in range(k):
            await out.send(msgpack.packb(i))
        raise grid.RemoteError(fail_format % k)

    async def bench(ctx: grid.StreamContext, payload: bytes | None, inbound: None,
                    out: grid.StreamOut) -> None:
        item = os.urandom(max(0, _read_count(payload)))
        send = out.send
        while True:
            await send(item)

    def stream(name: str, fn: Any, subroute: str = "") -> grid.StreamHandler:
        h = HANDLERS[name]
        return grid.StreamHandler(fn, subroute=subroute, in_capacity=h["in_capacity"],
                                  out_capacity=h["out_capacity"])

    mgr.register_stream(hid("stream-echo"), stream("stream-echo", counted(echo)))
    mgr.register_stream(hid("stream-noinput"), stream("stream-noinput", counted(noinput)))
    mgr.register_stream(hid("stream-fail"), stream("stream-fail", counted(stream_fail)))
    mgr.register_stream(hid("stream-bench"), stream("stream-bench", bench))
    for sub in HANDLERS["stream-subroute"]["subroutes"]:
        async def gen(ctx: grid.StreamContext, payload: bytes | None, inbound: None,
                      out: grid.StreamOut, prefix: str = sub + ":") -> None:
            for i in range(_read_count(payload)):
                await out.send(f"{prefix}{i}".encode())

        mgr.register_stream(hid("stream-subroute"), stream("stream-subroute", counted(gen), sub))
    return obs


def token_checker(accept: str, obs: Observed | None = None) -> Any:
    """A ``validate_token`` that accepts only ``accept`` (Go's error text)."""

    def check(token: str) -> None:
        if token != accept:
            if obs is not None:
                obs.tokens_rejected.append(token)
            raise PermissionError("Authentication failed, check your access credentials")

    return check


async def _serve(args: argparse.Namespace) -> None:
    mgr = grid.Manager(args.local, args.hosts.split(","), auth_fn=lambda: args.token,
                       validate_token=token_checker(args.token))
    register(mgr)
    await mgr.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"READY {args.local} {grid.IMPLEMENTATION}", flush=True)
    await stop.wait()
    await mgr.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="a Python grid node serving the interop handlers")
    ap.add_argument("--local", required=True)
    ap.add_argument("--hosts", required=True, help="comma separated, including --local")
    ap.add_argument("--token", default="interop-token")
    args = ap.parse_args(argv)
    grid.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
