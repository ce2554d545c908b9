"""Checks of what users hand to the public API, each failing with a message
that says what was wrong and what is expected.

:func:`check_manager` validates every :class:`grid.Manager` argument at
construction (host strings, TLS contexts, callables and numeric options), so
that a mistake surfaces there rather than as a dial that fails forever;
:func:`payload_size` checks a stream payload's type and size before it is
sent (requests are checked by the connection core itself).
"""

from __future__ import annotations

import math
import ssl as _ssl
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from grid import _http
from grid.errors import bad_payload_text, checked_len, payload_limit

__all__ = ["check_manager", "check_seconds", "as_payload", "payload_size", "MIN_MESSAGE_SIZE"]

#: The smallest ``max_message_size`` a Manager accepts (bytes).
MIN_MESSAGE_SIZE = 1024

# Counts: (name, smallest allowed value).
_COUNTS = (
    ("send_queue_size", 1), ("max_write_buffer", 1), ("max_streams", 0),
    ("max_running_handlers", 1), ("max_queued_requests", 0),
    ("max_message_size", MIN_MESSAGE_SIZE), ("max_request_bytes", 0),
    ("max_total_request_bytes", 0), ("max_partial_bytes", 0), ("max_pending_handshakes", 1),
)
# Durations in seconds: (name, True if 0 is allowed).
_SECONDS = (
    ("write_timeout", False), ("handshake_timeout", False), ("ping_interval", False),
    ("dial_timeout", False), ("default_timeout", False), ("retry_base", True),
    ("stream_ping_interval", False),
)
_MAX_TIMEOUT = 0xFFFFFFFF / 1000  # DeadlineMS is a uint32 (§2.1)


def check_host(host: object, where: str) -> str:
    """Return ``host`` if it is a host string ``scheme://host:port`` with
    nothing after the port; raise TypeError/ValueError naming ``where``."""
    if not isinstance(host, str):
        raise TypeError(f"{where} must be a host string such as 'http://10.0.0.1:9000', "
                        f"not {type(host).__name__}")
    if "://" not in host:
        raise ValueError(f"{where} {host!r} has no scheme: write 'http://{host}' "
                         f"(or 'https://{host}')")
    parts = urlsplit(host)
    if parts.path or parts.query or parts.fragment or host.endswith(("?", "#")):
        raise ValueError(f"{where} {host!r} has something after host:port "
                         f"({host[len(parts.scheme) + 3 + len(parts.netloc):]!r}): write it as "
                         f"'{parts.scheme}://{parts.netloc}', spelled as every node spells it")
    if "@" in parts.netloc:
        raise ValueError(f"{where} {host!r} has user information: write scheme://host:port")
    _http.parse_host(host)  # the scheme, host and port themselves
    return host


def _check_hosts(local: object, hosts: object) -> list[str]:
    if isinstance(hosts, (str, bytes)):
        hint = (f"; for a comma-separated string write hosts={hosts!r}.split(',')"
                if isinstance(hosts, str) and "," in hosts else "")
        raise TypeError("hosts must be a list of host strings (every node, this one included), "
                        f"not one {type(hosts).__name__}{hint}")
    if not isinstance(hosts, Sequence):
        raise TypeError(f"hosts must be a list of host strings, not {type(hosts).__name__}")
    if not hosts:
        raise ValueError("hosts is empty: list every node of the grid, this one included")
    checked = [check_host(h, f"hosts[{i}]") for i, h in enumerate(hosts)]
    seen: set[str] = set()
    for h in checked:
        if h in seen:
            raise ValueError(f"host {h!r} appears {checked.count(h)} times in hosts {checked}: "
                             "list each node once")
        seen.add(h)
    check_host(local, "local")
    if local not in seen:
        raise ValueError(f"the local host {local!r} must appear exactly once in hosts {checked} "
                         "(spelled byte for byte as the other nodes spell it)")
    return checked


def _tls_role(ctx: _ssl.SSLContext) -> str:
    """'server', 'client' or 'both': what sockets ``ctx`` can make."""
    if ctx.protocol == _ssl.PROTOCOL_TLS_SERVER:
        return "server"
    if ctx.protocol == _ssl.PROTOCOL_TLS_CLIENT:
        return "client"
    return "both"


def _check_tls(local: str, dialed: list[str], ssl: object, client_ssl: object) -> None:
    for name, ctx in (("ssl", ssl), ("client_ssl", client_ssl)):
        if ctx is not None and not isinstance(ctx, _ssl.SSLContext):
            raise TypeError(f"{name}= must be an ssl.SSLContext or None, not "
                            f"{type(ctx).__name__}")
    if isinstance(ssl, _ssl.SSLContext) and local.startswith("https://") \
            and _tls_role(ssl) == "client":
        raise ValueError(
            "ssl= is a client-side context (ssl.create_default_context() / PROTOCOL_TLS_CLIENT) "
            f"and cannot serve {local}: pass ssl= a server context, e.g. "
            "ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH); "
            "ctx.load_cert_chain('node.pem', 'node.key')")
    tls_peers = [h for h in dialed if h.startswith(("https://", "wss://"))]
    if not tls_peers:
        return
    ctx = client_ssl if client_ssl is not None else ssl
    if ctx is None:
        raise ValueError(
            f"this node dials the https peer(s) {tls_peers} but no TLS context was given: pass "
            "client_ssl=ssl.create_default_context(cafile='ca.pem') (the CA that signed the "
            "peers' certificates)")
    assert isinstance(ctx, _ssl.SSLContext)
    if _tls_role(ctx) == "server":
        given = "client_ssl=" if client_ssl is not None else "ssl="
        raise ValueError(
            f"{given} is a server-side context (Purpose.CLIENT_AUTH / PROTOCOL_TLS_SERVER) and "
            f"cannot dial the https peer(s) {tls_peers}: pass client_ssl= a client context, "
            "e.g. ssl.create_default_context(cafile='ca.pem')")


def _check_numbers(options: dict[str, Any]) -> None:
    for name, least in _COUNTS:
        v = options[name]
        if type(v) is bool or not isinstance(v, int):
            raise TypeError(f"{name} must be an int, not {type(v).__name__}")
        if v < least:
            raise ValueError(f"{name} must be >= {least}, got {v}")
    for name, zero_ok in _SECONDS:
        v = options[name]
        if type(v) is bool or not isinstance(v, (int, float)):
            raise TypeError(f"{name} must be a number of seconds, not {type(v).__name__}")
        if not math.isfinite(v) or v < 0 or (v == 0 and not zero_ok):
            raise ValueError(f"{name} must be a finite number of seconds "
                             f"{'>= 0' if zero_ok else '> 0'}, got {v!r}")
    if options["max_request_bytes"] > options["max_total_request_bytes"]:
        raise ValueError("max_request_bytes (per peer) must be <= max_total_request_bytes "
                         f"(all peers), got {options['max_request_bytes']} > "
                         f"{options['max_total_request_bytes']}")
    if options["default_timeout"] < 0.001 or options["default_timeout"] > _MAX_TIMEOUT:
        raise ValueError(f"default_timeout must be between 0.001 and {_MAX_TIMEOUT:g} s, "
                         f"got {options['default_timeout']!r}")


def check_manager(local: object, hosts: object, auth_fn: object, validate_token: object,
                  route_path: object, ssl: object, client_ssl: object,
                  dials: Callable[[str, str], bool], **options: Any) -> tuple[str, ...]:
    """Validate the arguments of :class:`grid.Manager`; return ``hosts`` as
    a tuple.  ``dials(local, remote)`` tells which peers this node dials
    (only those need a client TLS context)."""
    checked = _check_hosts(local, hosts)
    assert isinstance(local, str)
    if not callable(auth_fn):
        raise TypeError(f"auth_fn must be a function returning this node's token "
                        f"(e.g. lambda: 'secret'), not {type(auth_fn).__name__}")
    if validate_token is not None and not callable(validate_token):
        raise TypeError("validate_token must be a function that raises to reject a token, "
                        f"or None, not {type(validate_token).__name__}")
    if not isinstance(route_path, str) or not route_path.startswith("/"):
        raise ValueError(f"route_path must be a path starting with '/', got {route_path!r}")
    _check_numbers(options)
    _check_tls(local, [h for h in checked if h != local and dials(local, h)], ssl, client_ssl)
    return tuple(checked)


def payload_size(value: Any, max_message_size: int, what: str, name: str) -> int:
    """The length of a stream payload ``value`` (not None); TypeError naming
    ``name`` if it is not bytes-like, :class:`grid.MessageTooLarge` if it
    cannot be sent."""
    return checked_len(value, payload_limit(max_message_size), what, name)


def check_seconds(timeout: object) -> None:
    """TypeError unless ``timeout`` is a number of seconds (a call's
    ``timeout``; None is handled by the caller)."""
    if type(timeout) is bool or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or None, "
                        f"not {type(timeout).__name__}")


def as_payload(payload: Any) -> bytes | None:
    """A payload argument as bytes (None stays None); TypeError naming the
    argument if it is not bytes-like."""
    if payload is None or type(payload) is bytes:
        return payload
    try:
        return bytes(memoryview(payload))
    except TypeError:
        raise TypeError(bad_payload_text("payload", payload)) from None
