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
    "DISCONNECTED_TEXT",
    "BUSY_TEXT",
    "SHUTTING_DOWN_TEXT",
    "CANCELED_TEXT",
    "DEADLINE_TEXT",
    "OUT_OF_SEQUENCE_TEXT",
    "REQUEST_TIMEOUT_TEXT",
    "bad_reply_text",
]

#: The text Go uses for a dropped connection (docs/protocol.md §10.3).
DISCONNECTED_TEXT = "remote disconnected"
#: The error a node replies with when it already runs ``max_running_handlers``
#: handlers for the connection and holds ``max_queued_requests`` more.
BUSY_TEXT = "grid: too many requests in progress"
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
    """The remote has no handler for the id or subroute (its MuxConnectError text
    is in :attr:`message`); both a RemoteError and an UnknownHandler."""


class HandlerAlreadyExists(GridError):
    """A handler is already registered under this id and subroute."""


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


class UsedAfterFork(GridError):
    """A Manager (or one of its connections) was used in a process forked
    from the one that created it.  Sockets and event loops do not survive a
    fork: create a new Manager in each process."""
