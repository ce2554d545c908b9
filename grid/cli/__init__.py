"""The ``grid`` command line (``python -m grid``, or ``grid`` once installed).

Subcommands, one module each:

``grid demo`` (:mod:`grid.cli.demo`)
    a three-node grid on loopback, exercised end to end (``make demo``).
``grid serve --config node.toml`` or ``grid serve --local URL --hosts URL,URL --token-file F --handlers MOD``
    (:mod:`grid.cli.serve`) runs one node until SIGINT or SIGTERM, then
    closes it gracefully.
``grid ping HOST --as LOCAL --token-file F [-c N]`` (:mod:`grid.cli.ping`)
    dials a node as one of its peers, reports the handshake (accepted, or
    the node's reason for refusing) and the times of N round trips.
``grid call HOST ID [PAYLOAD] --as LOCAL --token-file F`` (:mod:`grid.cli.call`)
    dials a node the same way, calls its single-request handler ID with
    PAYLOAD (text, ``@FILE`` or ``-`` for stdin; none when omitted) and
    writes the reply to stdout; a handler's error goes to stderr (exit 1).

Exit status: 0 success; 1 the node refused us (ping, call), the handler
failed (call), the node could not start (serve), or a demo check failed; 2 bad usage or configuration; 3 the node
was unreachable or broke the protocol, or no reply came in time (ping, call); 4 some pings went unanswered
(ping).

The benchmarks are not part of the command line: they ship with the source
checkout (``make bench``, ``benchmarks/run_all.py``).
"""

from __future__ import annotations

import argparse
import platform
import sys
from collections.abc import Callable, Sequence

import grid
from grid.cli._common import (
    EXIT_FAILED,
    EXIT_LOST,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    CliError,
)
from grid.cli.call import call, cmd_call
from grid.cli.demo import demo
from grid.cli.ping import PingReport, cmd_ping, ping
from grid.cli.serve import NodeConfig, cmd_serve, load_config, load_handlers, serve

__all__ = ["main", "CliError", "NodeConfig", "load_config", "load_handlers", "serve", "ping",
           "PingReport", "call", "demo", "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_UNREACHABLE",
           "EXIT_LOST"]


def _version() -> str:
    return (f"grid {grid.__version__} ({grid.IMPLEMENTATION} core, "
            f"Python {platform.python_version()})")


def _add_claim(p: argparse.ArgumentParser) -> None:
    """The options of a command that dials a node as one of its peers: the
    host it claims (``--as``) and the token it presents."""
    p.add_argument("--as", dest="as_", metavar="LOCAL", required=True,
                   help="the host string to claim (must be in the node's hosts list)")
    p.add_argument("--token", help="the grid's token")
    p.add_argument("--token-file", metavar="FILE", help="read the token from FILE")


def _add_dial_options(p: argparse.ArgumentParser) -> None:
    """How such a command reaches the node: TLS verification and the grid path."""
    p.add_argument("--tls-ca", metavar="PEM", help="CA bundle to verify an https node")
    p.add_argument("--insecure", action="store_true", help="do not verify an https node's "
                   "certificate")
    p.add_argument("--route-path", default=grid.ROUTE_PATH,
                   help=f"grid path (default {grid.ROUTE_PATH})")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="grid", description="grid: MinIO-compatible multiplexed RPC and streams between "
        "servers.  Run `grid COMMAND --help` for each command.",
        epilog="exit status: 0 ok, 1 failed/refused, 2 usage or configuration, "
               "3 unreachable, 4 pings lost")
    ap.add_argument("--version", action="version", version=_version())
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    d = sub.add_parser("demo", help="run a local grid on loopback and print a report",
                       description="Start a grid of NODES nodes on loopback in this process, "
                       "call every handler kind between every pair and print a report.")
    d.add_argument("--nodes", type=int, default=3,
                   help="nodes in the grid, at least 2 (default 3)")
    d.add_argument("--requests", type=int, default=2000,
                   help="512-byte echo requests per pair for the rate figure (default 2000)")

    s = sub.add_parser(
        "serve", help="run a node from a TOML file or options",
        description="Run one grid node until SIGINT or SIGTERM, then close it gracefully.  "
        "Handlers come from modules: each defines HANDLERS = {id or (id, 'sub/route'): fn or "
        "grid.StreamHandler} and/or register(mgr) (see examples/serve_handlers.py and "
        "examples/node.toml).  Command-line options override the file's.")
    s.add_argument("--config", metavar="TOML", help="configuration file (see examples/node.toml)")
    s.add_argument("--local", metavar="URL", help="this node's host string, e.g. "
                   "http://10.0.0.1:9000")
    s.add_argument("--hosts", metavar="URL,...", action="append",
                   help="every node of the grid, this one included (comma list; repeatable)")
    s.add_argument("--token", help="the grid's shared token (visible in process listings: "
                   "prefer --token-file or GRID_TOKEN)")
    s.add_argument("--token-file", metavar="FILE", help="read the token from FILE")
    s.add_argument("--handlers", metavar="MODULE[:ATTR]", action="append",
                   help="handler module: dotted name or .py path, optional :attr (repeatable)")
    s.add_argument("--listen", metavar="HOST:PORT", help="bind here instead of the local "
                   "host string's address (e.g. 0.0.0.0:9000)")
    s.add_argument("--tls-cert", metavar="PEM", help="certificate chain to serve https")
    s.add_argument("--tls-key", metavar="PEM", help="private key of --tls-cert")
    s.add_argument("--tls-ca", metavar="PEM", help="CA bundle to verify https peers "
                   "(default: the system's)")
    s.add_argument("--grace", type=float, help="seconds to let calls in flight finish on "
                   "shutdown (default 5)")
    s.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                   help="logging level on stderr (default info)")
    s.add_argument("--dry-run", action="store_true", help="check the configuration and load "
                   "the handlers, print what would be served, and exit")

    p = sub.add_parser(
        "ping", help="handshake with a node and time round trips",
        description="Dial HOST as the host --as, as a grid peer does (TCP, TLS, HTTP upgrade, "
        "grid handshake), report whether the node accepted it (or its reason for refusing), "
        "then time COUNT round trips (a request to a handler no node registers, which the node "
        "answers at once with an unknown-handler error).  The node accepts only a host of its own "
        "list, and only one it does not dial itself: `grid serve` prints those as 'dialed "
        "by'.  While connected, ping stands in for that host: if the real host is connected "
        "to the node, the node drops its connection in favour of ping's (the host redials "
        "within seconds), so prefer a host name reserved for tools.")
    p.add_argument("host", metavar="HOST", help="the node's host string, e.g. "
                   "http://127.0.0.1:9001")
    _add_claim(p)
    p.add_argument("-c", "--count", type=int, default=4, help="pings to send (default 4)")
    p.add_argument("-i", "--interval", type=float, default=0.5,
                   help="seconds between pings (default 0.5)")
    p.add_argument("--timeout", type=float, default=2.0, help="seconds allowed for the "
                   "dial (connect, TLS, upgrade), the handshake and each round trip (default 2)")
    _add_dial_options(p)
    c = sub.add_parser(
        "call", help="call a node's single-request handler and print the reply",
        description="Dial HOST as the host --as (as `grid ping` does: a host of the node's "
        "list that the node does not dial), call the handler ID (1..255) with PAYLOAD and "
        "write the reply's bytes to stdout.  A handler's error is printed on stderr with exit "
        "status 1.")
    c.add_argument("host", metavar="HOST", help="the node's host string")
    c.add_argument("id", metavar="ID", type=int, help="handler id, 1..255")
    c.add_argument("payload", metavar="PAYLOAD", nargs="?",
                   help="the request payload: text (sent as UTF-8), @FILE for a file's bytes, "
                   "- for stdin; omitted: no payload")
    c.add_argument("--subroute", metavar="ROUTE", help="the handler's subroute, e.g. disk/1")
    _add_claim(c)
    c.add_argument("--timeout", type=float, default=10.0, help="seconds for the dial and "
                   "handshake, and the call's deadline (default 10)")
    _add_dial_options(c)
    return ap


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "demo": lambda a: int(grid.run(demo(a.nodes, a.requests))),
    "serve": cmd_serve,
    "ping": cmd_ping,
    "call": cmd_call,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``grid`` and ``python -m grid``; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        return _COMMANDS[args.cmd](args)
    except CliError as exc:
        print(f"grid {args.cmd}: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        print(f"grid {args.cmd}: interrupted", file=sys.stderr)
        return 130

