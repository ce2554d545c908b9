"""``grid call``: call one single-request handler of a node from the command
line and print its reply.

Like ``grid ping`` (:mod:`grid.cli.ping`), call is an ordinary
:class:`grid.Manager` that claims the identity ``--as``, serves nothing and
has one peer, the node: the dial, TLS, the HTTP upgrade and the handshake are
the library's own.  The grid protocol has no anonymous clients: a node
accepts a connection only from a host string of its own list that it does
not dial itself (see the README's *Command line* section for choosing one).
"""

from __future__ import annotations

import argparse
import logging
import ssl
import sys
from pathlib import Path

import grid
from grid import _http
from grid.cli._common import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, CliError, want
from grid.cli.ping import (
    _REJECTED,
    PingReport,
    _dial_error,
    _first_dial,
    _rejection_hint,
    _token,
    check_hosts,
    client_context,
)

__all__ = ["call", "cmd_call", "read_payload"]


class CallFailed(Exception):
    """The call did not reach a handler: ``rejected`` holds the node's
    refusal, else the text says why the node could not be reached."""

    def __init__(self, message: str, rejected: str | None = None) -> None:
        super().__init__(message)
        #: The node's refusal of the handshake, if that is what failed.
        self.rejected = rejected


async def call(host: str, local: str, token: str, handler_id: int, payload: bytes | None, *,
               subroute: str = "", timeout: float = 10.0, ssl_context: ssl.SSLContext | None = None,
               route_path: str = grid.ROUTE_PATH) -> bytes | None:
    """Dial the node ``host`` as its peer ``local`` presenting ``token`` and
    call its handler ``handler_id`` (under ``subroute``) with ``payload``.

    :param timeout: bounds the dial and the handshake, and is the call's deadline.
    :returns: the handler's reply (None when it returned no payload).
    :raises grid.RemoteError: the handler failed (``.message`` is its text),
        or the node has no such handler.
    :raises CallFailed: the node refused the handshake or could not be reached.
    """
    addr = _http.parse_host(host)
    mgr = grid.Manager(local, [local, host], lambda: token, route_path=route_path,
                       client_ssl=ssl_context, dial_timeout=timeout, handshake_timeout=timeout, retry_base=3600.0)
    try:
        await mgr.start(serve=False)
        conn = mgr.connection(host)
        if not conn.dials:
            reason = "grid: expected to be client side, not server side"
            raise CallFailed(f"{host} would refuse {local} ({reason})", rejected=reason)
        failure = await _first_dial(conn, 2 * timeout + 1.0)
        if failure is not None:
            if failure.startswith(_REJECTED):
                reason = failure[len(_REJECTED):] or "(no reason given)"
                raise CallFailed(f"rejected by {host}: {reason}", rejected=reason)
            raise CallFailed(_dial_error(failure, addr, timeout))
        target = conn.subroute(subroute) if subroute else conn
        try:
            return await target.request(handler_id, payload, timeout=timeout)
        except TimeoutError:
            raise CallFailed(f"no reply within {timeout:g} s") from None
        except grid.Disconnected as exc:
            raise CallFailed(f"connection lost: {conn.last_error or exc}") from None
    finally:
        await mgr.close()


def read_payload(arg: str | None) -> bytes | None:
    """The payload named on the command line: none (absent), ``-`` (stdin),
    ``@FILE`` (the file's bytes) or the argument's UTF-8 bytes."""
    if arg is None:
        return None
    if arg == "-":
        return sys.stdin.buffer.read()
    if arg.startswith("@"):
        try:
            return Path(arg[1:]).read_bytes()
        except OSError as exc:
            raise CliError(f"cannot read payload file {arg[1:]}: {exc.strerror or exc}") from None
    return arg.encode()


def cmd_call(args: argparse.Namespace) -> int:
    """``grid call``: the reply on stdout; a handler's error on stderr, exit 1."""
    token = _token(args)
    check_hosts(args)
    want(1 <= args.id <= 255, f"ID must be a handler id 1..255, not {args.id}")
    want(args.timeout > 0, "--timeout must be > 0")
    payload = read_payload(args.payload)
    ctx = client_context(args.host, args.tls_ca, args.insecure)
    logging.getLogger("grid").setLevel(logging.ERROR)  # outcomes are printed below
    try:
        reply = grid.run(call(args.host, args.as_, token, args.id, payload,
                              subroute=args.subroute or "", timeout=args.timeout,
                              ssl_context=ctx, route_path=args.route_path))
    except grid.RemoteError as exc:
        print(f"grid call: remote error: {exc.message}", file=sys.stderr)
        return EXIT_FAILED
    except CallFailed as exc:
        print(f"grid call: {exc}", file=sys.stderr)
        if exc.rejected is not None:
            hint = _rejection_hint(PingReport(args.host, args.as_, rejected=exc.rejected))
            if hint:
                print(f"  {hint}", file=sys.stderr)
            return EXIT_FAILED
        return EXIT_UNREACHABLE
    if reply is not None:
        sys.stdout.buffer.write(reply)
        if sys.stdout.isatty() and not reply.endswith(b"\n"):
            sys.stdout.buffer.write(b"\n")
        sys.stdout.flush()
    return EXIT_OK
