"""The HTTP/1.1 upgrade that opens a grid WebSocket (docs/protocol.md §1.3, §1.4).

Only what the handshake needs: build and parse the one request and the one
response, with a cap on the header block.  Not on the hot path.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from grid.errors import ProtocolError

#: Largest request or response header block accepted, in bytes.
MAX_HEADER_BYTES = 16 * 1024

_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def accept_key(key: str) -> str:
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 §4.2.2)."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + _WS_GUID).digest()).decode()


def new_key() -> str:
    """A fresh Sec-WebSocket-Key: base64 of 16 random bytes."""
    return base64.b64encode(os.urandom(16)).decode()


@dataclass
class HostAddr:
    """A node identity string split into what the socket layer needs."""

    scheme: str  # "http" or "https"
    host: str  # without IPv6 brackets
    port: int
    netloc: str  # host:port as written in the identity string

    @property
    def tls(self) -> bool:
        return self.scheme == "https"


def parse_host(identity: str) -> HostAddr:
    """Split ``http://host:port`` (or https, ws, wss) into its parts."""
    parts = urlsplit(identity)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"host {identity!r} is not of the form http(s)://host:port")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise ValueError(f"host {identity!r} has a bad port") from None
    return HostAddr(scheme, parts.hostname, port, parts.netloc)


def upgrade_request(addr: HostAddr, path: str, key: str, token: str, time_ns: int) -> bytes:
    """The dialer's upgrade request, headers in the order Go writes them."""
    return (
        f"GET {path} HTTP/1.1\r\n"
        f"Host: {addr.netloc}\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        "Sec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Key: {key}\r\n"
        f"Authorization: Bearer {token}\r\n"
        f"X-Minio-Time: {time_ns}\r\n"
        "\r\n"
    ).encode("latin-1")


def switching_protocols(key: str) -> bytes:
    """The acceptor's 101 response."""
    return (
        "HTTP/1.1 101 Switching Protocols\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_key(key)}\r\n"
        "\r\n"
    ).encode("latin-1")


_REASONS = {400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
            426: "Upgrade Required", 431: "Request Header Fields Too Large",
            503: "Service Unavailable"}


def error_response(status: int, text: str) -> bytes:
    """A plain-text HTTP error that closes the connection."""
    body = (text + "\n").encode("utf-8", "replace")
    extra = "Sec-WebSocket-Version: 13\r\n" if status == 426 else ""
    return (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"{extra}"
        "Connection: close\r\n\r\n"
    ).encode("latin-1") + body


@dataclass
class HttpHead:
    """A parsed request or response head: start line and lower-cased headers."""

    start: list[str]
    headers: dict[str, str] = field(default_factory=dict)

    def get(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)


def split_head(buf: bytes | bytearray) -> tuple[bytes, bytes] | None:
    """Return (head, rest) once ``buf`` holds a whole header block, else None.

    Raises ProtocolError when the block outgrows :data:`MAX_HEADER_BYTES`.
    """
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > MAX_HEADER_BYTES:
            raise ProtocolError(f"HTTP header block over {MAX_HEADER_BYTES} bytes")
        return None
    if end > MAX_HEADER_BYTES:
        raise ProtocolError(f"HTTP header block over {MAX_HEADER_BYTES} bytes")
    return bytes(buf[:end]), bytes(buf[end + 4:])


def parse_head(head: bytes) -> HttpHead:
    """Parse a header block (without the final blank line)."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
        raise ProtocolError("HTTP head is not text") from None
    lines = text.split("\r\n")
    start = lines[0].split(" ", 2)
    if len(start) < 2:
        raise ProtocolError(f"malformed HTTP start line: {lines[0][:80]!r}")
    out = HttpHead(start)
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise ProtocolError(f"malformed HTTP header line: {line[:80]!r}")
        out.headers[name.lower()] = value.strip()
    return out
