"""``grid ping``: dial a node as one of its peers, report the handshake, time
round trips.

Ping is an ordinary :class:`grid.Manager` that claims the identity ``--as``,
serves nothing and has one peer, the node: the dial, TLS, the HTTP upgrade
and the grid handshake are the library's own, so ping sees exactly what a
real peer of the node would see.

Each round trip is a connection-level ping (OpPing on mux 0,
:meth:`grid.Connection.ping`), the same message keepalive sends; the node
answers it from its connection layer and runs no handler.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import ssl
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grid
from grid import _http
from grid.cli._common import (
    EXIT_FAILED,
    EXIT_LOST,
    EXIT_OK,
    EXIT_UNREACHABLE,
    CliError,
    read_token_file,
    want,
)

__all__ = ["ping", "PingReport", "cmd_ping"]

# How often ping looks for the outcome of the first dial attempt.  The
# library reports a failed attempt only through Connection.last_error.
_POLL = 0.01
# grid.Rejected's text before the node's reason ("connection rejected: ").
_REJECTED = str(grid.Rejected(""))


@dataclasses.dataclass
class PingReport:
    """What :func:`ping` found out."""

    host: str
    local: str
    #: False when the dial rule makes the node the dialer: nothing is sent
    #: and :attr:`rejected` holds the refusal the node would answer with.
    dialed: bool = True
    #: True once the node accepted our handshake.
    accepted: bool = False
    #: The node's refusal (HTTP status and text, or the grid rejection reason).
    rejected: str | None = None
    #: Why we could not talk to the node at all (unreachable, timeout, protocol).
    error: str | None = None
    #: Seconds from the start of the dial to the accepted handshake: TCP
    #: connect, TLS, HTTP upgrade and grid handshake together.
    connect_s: float = 0.0
    #: Round trips attempted.
    sent: int = 0
    #: Round-trip seconds of the round trips answered, in order.
    rtts: list[float] = dataclasses.field(default_factory=list)

    @property
    def status(self) -> int:
        """The exit status for this outcome."""
        if self.rejected is not None:
            return EXIT_FAILED
        if self.error is not None or not self.accepted:
            return EXIT_UNREACHABLE
        return EXIT_OK if len(self.rtts) == self.sent else EXIT_LOST


def _dial_error(text: str, addr: _http.HostAddr, timeout: float) -> str:
    """A dial failure (``Connection.last_error``) worded for the user."""
    where = f"{addr.host}:{addr.port}"
    if "timed out" in text:
        return (f"no answer within {timeout:g} s (TCP connect, TLS, HTTP upgrade or grid "
                f"handshake): {text}")
    if "SSL" in text or "certificate" in text:
        return f"TLS handshake with {where} failed: {text}"
    if text.startswith("[Errno") or "refused" in text.lower() or "unreachable" in text.lower():
        return f"unreachable: {where}: {text}"
    return f"connection failed: {text}"


async def _first_dial(conn: grid.Connection, limit: float) -> str | None:
    """Wait for the outcome of the connection's first dial attempt: None once
    it is up, else the reason it failed (or did not end within ``limit``)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while True:
        try:
            await conn.wait_for_connect(timeout=_POLL)
            return None
        except TimeoutError:
            if conn.last_error is not None:
                return conn.last_error
            if loop.time() > deadline:
                return f"dial {conn.remote}: timed out"


async def ping(host: str, local: str, token: str, count: int = 4, interval: float = 0.5,
               timeout: float = 2.0, ssl_context: ssl.SSLContext | None = None,
               route_path: str = grid.ROUTE_PATH,
               on_pong: Callable[[int, float | None], Any] | None = None,
               on_accepted: Callable[[PingReport], Any] | None = None) -> PingReport:
    """Dial the node ``host`` as its peer ``local`` presenting ``token``, then
    time ``count`` round trips ``interval`` seconds apart.

    :param timeout: bounds the dial (TCP, TLS and HTTP upgrade), the grid
        handshake, and each round trip.
    :param ssl_context: verifies an ``https`` node (default: the system's CAs).
    :param on_accepted: called with the report once the node accepted us.
    :param on_pong: called as ``on_pong(i, rtt)`` after each round trip;
        ``rtt`` is None when no answer came within ``timeout``.
    :returns: the report; network outcomes never raise (see :class:`PingReport`).
    :raises ValueError: ``host`` or ``local`` is not a host string, or they are equal.
    """
    rep = PingReport(host, local)
    addr = _http.parse_host(host)
    if addr.tls and ssl_context is None:
        ssl_context = ssl.create_default_context()
    # One peer, no listener.  A failed dial is not retried (ping reports it);
    # the Manager's own keepalive answers and sends connection pings.
    mgr = grid.Manager(local, [local, host], lambda: token, route_path=route_path,
                       client_ssl=ssl_context, dial_timeout=timeout, handshake_timeout=timeout,
                       retry_base=3600.0)
    try:
        t0 = time.perf_counter()
        await mgr.start(serve=False)
        conn = mgr.connection(host)
        if not conn.dials:
            # By the dial rule the node dials `local` itself, and refuses it as
            # a dialer: Go's text for that refusal, without a round trip.
            rep.dialed = False
            rep.rejected = "grid: expected to be client side, not server side"
            return rep
        failure = await _first_dial(conn, 2 * timeout + 1.0)
        if failure is not None:
            if failure.startswith(_REJECTED):
                rep.rejected = failure[len(_REJECTED):] or "(no reason given)"
            else:
                rep.error = _dial_error(failure, addr, timeout)
            return rep
        rep.accepted = True
        rep.connect_s = time.perf_counter() - t0
        if on_accepted is not None:
            on_accepted(rep)
        for i in range(count):
            if i:
                await asyncio.sleep(interval)
            if not conn.connected or conn.stats().reconnects:
                rep.error = f"connection lost after {i} pings: {conn.last_error or 'closed'}"
                break
            rep.sent += 1
            rtt: float | None
            try:
                rtt = await conn.ping(timeout=timeout)
            except TimeoutError:
                rtt = None
            except grid.Disconnected as exc:
                rep.error = f"connection lost after {i} pings: {conn.last_error or exc}"
                if on_pong is not None:
                    on_pong(i, None)
                break
            if rtt is not None:
                rep.rtts.append(rtt)
            if on_pong is not None:
                on_pong(i, rtt)
    finally:
        await mgr.close()
    return rep


def _rejection_hint(rep: PingReport) -> str:
    reason = rep.rejected or ""
    if "expected to be client side" in reason:
        return (f"the node dials {rep.local} itself: for each pair of hosts exactly one side "
                "dials (a hash of the two host strings decides), and the node refuses a "
                "connection from the side it dials.  Claim with --as a host of the node's list "
                "that dials it (`grid serve` prints them as 'dialed by').")
    if "unknown incoming host" in reason:
        return (f"{rep.local} is not in the node's hosts list: --as must name one of the node's "
                "hosts, spelled exactly as the node spells it.")
    if "auth token" in reason or "bearer token" in reason:
        return "the node did not accept the token: check --token/--token-file (or GRID_TOKEN)."
    if "clock skew" in reason or "time difference" in reason:
        return "the clocks of this machine and the node differ too much."
    if reason.startswith("HTTP 404"):
        return "this server has no grid at that path (--route-path)."
    return ""


def _ms(s: float) -> str:
    return f"{s * 1000:.3f} ms"


def _token(args: argparse.Namespace) -> str:
    if args.token is not None and args.token_file is not None:
        raise CliError("give --token or --token-file, not both")
    if args.token_file is not None:
        return read_token_file(Path(args.token_file))
    if args.token is not None:
        return str(args.token)
    token = os.environ.get("GRID_TOKEN", "")
    if not token:
        raise CliError("no token: give --token-file FILE, --token TEXT or GRID_TOKEN")
    return token


def client_context(host: str, cafile: str | None, insecure: bool) -> ssl.SSLContext | None:
    """The TLS context for dialing ``host`` (None for ``http``): verified
    against ``cafile`` (default: the system's CAs), or not at all if ``insecure``."""
    if not host.startswith(("https://", "wss://")):
        return None
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise CliError(f"TLS setup failed: {exc}") from None
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def check_hosts(args: argparse.Namespace) -> None:
    """HOST and --as are host strings, and name two different hosts."""
    for what, h in (("HOST", args.host), ("--as", args.as_)):
        try:
            _http.parse_host(h)
        except ValueError as exc:
            raise CliError(f"{what}: {exc}") from None
    want(args.host != args.as_, "--as must name another host than HOST")


def cmd_ping(args: argparse.Namespace) -> int:
    """``grid ping``: print the handshake's outcome, each round trip and a summary."""
    token = _token(args)
    check_hosts(args)
    want(args.count >= 1, "--count must be at least 1")
    want(args.timeout > 0 and args.interval >= 0, "--timeout must be > 0 and --interval >= 0")
    ctx = client_context(args.host, args.tls_ca, args.insecure)
    # Ping prints every outcome itself; the library's warnings about the
    # same events (refused dial, dropped connection) would repeat them.
    logging.getLogger("grid").setLevel(logging.ERROR)
    print(f"PING {args.host} as {args.as_}")

    def on_pong(i: int, rtt: float | None) -> None:
        if rtt is None:
            print(f"ping {i + 1}: no pong within {args.timeout:g} s", flush=True)
        else:
            print(f"pong {i + 1} from {args.host}: time={_ms(rtt)}", flush=True)

    def on_accepted(rep: PingReport) -> None:
        print(f"handshake: accepted by {args.host} (connect, upgrade and handshake "
              f"{_ms(rep.connect_s)})", flush=True)

    rep: PingReport = grid.run(ping(args.host, args.as_, token, args.count, args.interval,
                                    args.timeout, ctx, args.route_path, on_pong, on_accepted))
    if rep.rejected is not None:
        if rep.dialed:
            print(f"handshake: rejected by {args.host}: {rep.rejected}")
        else:
            print(f"handshake: not attempted: {args.host} would refuse {args.as_} "
                  f"({rep.rejected})")
        hint = _rejection_hint(rep)
        if hint:
            print(f"  {hint}")
        return rep.status
    if rep.error is not None:
        print(f"error: {rep.error}", file=sys.stderr)
        if rep.accepted and rep.error.startswith("connection lost"):
            print(f"  if {args.as_} is a running node, it has probably reconnected and the node "
                  "dropped ping's connection in favour of it: ping as a host reserved for tools",
                  file=sys.stderr)
    if rep.sent:
        lost = rep.sent - len(rep.rtts)
        print(f"--- {args.host} ping statistics ---")
        print(f"{rep.sent} pings sent, {len(rep.rtts)} pongs received, "
              f"{100 * lost / rep.sent:.0f}% lost")
        if rep.rtts:
            r = rep.rtts
            print(f"rtt min/avg/max = {min(r) * 1000:.3f}/{sum(r) / len(r) * 1000:.3f}/"
                  f"{max(r) * 1000:.3f} ms")
    return rep.status
