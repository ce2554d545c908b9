"""Exception classes shared by every layer and both codec twins."""

from __future__ import annotations

__all__ = [
    "GridError",
    "ProtocolError",
    "RemoteError",
    "Disconnected",
    "UnknownHandler",
    "HandlerAlreadyExists",
    "IncorrectSequence",
    "RemoteUnknownHandler",
    "Rejected",
    "UsedAfterFork",
    "MessageTooLarge",
    "DISCONNECTED_TEXT",
    "BUSY_TEXT",
    "BUSY_BYTES_TEXT",
    "SHUTTING_DOWN_TEXT",
    "CANCELED_TEXT",
    "DEADLINE_TEXT",
    "OUT_OF_SEQUENCE_TEXT",
    "REQUEST_TIMEOUT_TEXT",
    "bad_reply_text",
    "too_large_text",
    "bad_payload_text",
]

#: The most bytes a grid message adds around its payload: the 7-tuple's
#: header and integers at their widest, a bin32 header, the 32-byte subroute
#: id and the 4-byte CRC (docs/protocol.md §2.1, §2.2).
ENVELOPE_MAX = 67


def payload_limit(max_message_size: int) -> int:
    """The largest payload one message may carry on a node whose
    ``max_message_size`` is given: what fits with its envelope (every node
    is expected to use the same ``max_message_size``)."""
    return max(max_message_size - ENVELOPE_MAX, 0)


def bad_payload_text(name: str, value: object) -> str:
    """The TypeError text for a payload argument that is not bytes-like."""
    return (f"{name} must be bytes, bytearray, memoryview or None, "
            f"not {type(value).__name__}")


def checked_len(payload: object, limit: int, what: str = "request payload",
                name: str = "payload") -> int:
    """The length of ``payload`` (not None, what is sent as ``what``): a
    TypeError naming the argument ``name`` if it is not bytes-like,
    :class:`MessageTooLarge` if it is over ``limit``."""
    try:
        n = len(payload)  # type: ignore[arg-type]
        if isinstance(payload, str):
            raise TypeError
    except TypeError:
        raise TypeError(bad_payload_text(name, payload)) from None
    if n > limit:
        raise MessageTooLarge(too_large_text(what, n, limit), n, limit)
    return n


def too_large_text(what: str, size: int, limit: int) -> str:
    """The text of a :class:`MessageTooLarge` (also sent as the error of a
    reply that was too large)."""
    return (f"grid: {what} of {size} bytes exceeds the limit of {limit} bytes "
            f"(max_message_size minus {ENVELOPE_MAX} bytes of envelope)")


#: The text Go uses for a dropped connection (docs/protocol.md §10.3).
DISCONNECTED_TEXT = "remote disconnected"
#: The error a node replies with when it already runs ``max_running_handlers``
#: handlers for the connection and holds ``max_queued_requests`` more.
BUSY_TEXT = "grid: too many requests in progress"
#: The error a node replies with when a request's payload would take the bytes
#: its handlers hold past ``max_request_bytes`` or ``max_total_request_bytes``.
BUSY_BYTES_TEXT = "grid: too many request bytes in progress"
#: The error a node replies with to calls that arrive while it shuts down.
SHUTTING_DOWN_TEXT = "grid: server is shutting down"
#: Go's text for a call whose handler was cancelled (its context's error).
CANCELED_TEXT = "context canceled"
#: Go's text for a call or stream whose deadline passed (its context's error).
DEADLINE_TEXT = "context deadline exceeded"
#: Go's ErrIncorrectSequence: a single request's response with a Seq other than 0.
OUT_OF_SEQUENCE_TEXT = "out-of-sequence item received"
#: What a request whose deadline passed before its response fails with.
REQUEST_TIMEOUT_TEXT = "grid request deadline exceeded"


def bad_reply_text(result: object) -> str:
    """The error text sent for a handler that returned ``result``, which is
    neither bytes-like nor None (a handler's reply must be one of those)."""
    return f"TypeError: handler returned {type(result).__name__}, want bytes or None"


class GridError(Exception):
    """Base class of every error raised by grid."""


class ProtocolError(GridError, ValueError):
    """Malformed input: a frame, envelope or handshake that breaks the protocol.

    The message names what was wrong.  The connection that produced it is
    closed; nothing else is affected.
    """


class RemoteError(GridError):
    """The remote handler failed; :attr:`message` is the exact text it sent.

    Raise it from a handler to send ``message`` to the caller unchanged.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        #: The error text exactly as it travels on the wire.
        self.message = message

    def __str__(self) -> str:
        return self.message


class Disconnected(GridError, ConnectionError):
    """The connection is down, or dropped while the call was in flight."""

    def __init__(self, message: str = DISCONNECTED_TEXT) -> None:
        super().__init__(message)
        #: The error text (Go's wire text is ``remote disconnected``).
        self.message = message


class UnknownHandler(GridError, LookupError):
    """The handler id (or subroute) is not registered, or is outside 1..255."""


class RemoteUnknownHandler(RemoteError, UnknownHandler):
    """The remote has no handler for the id or subroute; both a RemoteError
    and an UnknownHandler.

    ``str()`` names the id, subroute and remote as the caller addressed them
    (``no handler for id 50 (subroute 'disk/9') on http://...``);
    :attr:`message` keeps the MuxConnectError text exactly as the remote
    sent it (Go's wording, e.g. ``Invalid Handler for type: GetCPUs``).
    """

    def __init__(self, message: str, handler_id: int | None = None,
                 subroute: str | None = None, remote: str | None = None) -> None:
        super().__init__(message)
        #: The handler id called (None when not known).
        self.handler_id = handler_id
        #: The subroute called, ``"disk/9"``, or None.
        self.subroute = subroute
        #: The host string of the node that answered.
        self.remote = remote

    def __str__(self) -> str:
        if self.handler_id is None:
            return self.message
        sub = f" (subroute {self.subroute!r})" if self.subroute is not None else ""
        where = f" on {self.remote}" if self.remote else ""
        return f"no handler for id {self.handler_id}{sub}{where}"


class HandlerAlreadyExists(GridError):
    """A handler is already registered under this id and subroute.

    The message names the id and subroute as registered; :attr:`go_text` is
    the text Go's registry gives for the same case (for logs shared with Go
    nodes)."""

    def __init__(self, message: str, go_text: str = "") -> None:
        super().__init__(message)
        #: Go's wording, e.g. ``handler LockRLock already exists``.
        self.go_text = go_text or message


class IncorrectSequence(GridError):
    """A stream message arrived with an unexpected sequence number."""

    def __init__(self, expected: int, got: int) -> None:
        super().__init__(f"receive sequence number mismatch. want {expected}, got {got}")
        #: The sequence number that was due.
        self.expected = expected
        #: The sequence number that arrived.
        self.got = got


class Rejected(GridError):
    """The remote refused the handshake; :attr:`reason` is its stated reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"connection rejected: {reason}")
        #: The reason text sent by the accepting side (or its HTTP status line).
        self.reason = reason


class MessageTooLarge(GridError, ValueError):
    """A payload is larger than one message may carry (``max_message_size``
    less the envelope); nothing was sent and the connection is unaffected."""

    def __init__(self, message: str, size: int = 0, limit: int = 0) -> None:
        super().__init__(message)
        #: The payload's size in bytes.
        self.size = size
        #: The largest payload allowed, in bytes.
        self.limit = limit


class UsedAfterFork(GridError):
    """A Manager (or one of its connections) was used in a process forked
    from the one that created it.  Sockets and event loops do not survive a
    fork: create a new Manager in each process."""
