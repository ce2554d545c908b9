"""The interfaces a connection core calls upward: :class:`CoreOwner` (its
owner) and :class:`CoreReader` (the wire that reads its socket).  Both core
twins (grid._mux_py, and grid/_mux.pxd for the compiled one) call exactly
these; grid._wire and grid.connection implement them.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["CoreOwner", "CoreReader"]


class CoreOwner(Protocol):
    """What a :class:`ConnCore` calls on its owner (a wire until the
    handshake attaches it, then the connection; grid/_mux.pxd declares the
    same interface for the compiled core)."""

    def _on_message(self, m: Any) -> None:
        """A message the core does not handle itself."""

    def _on_control(self, opcode: int, payload: bytes) -> None:
        """A WebSocket control frame."""

    def _schedule_flush(self) -> None:
        """The first message of a batch is queued: flush at the end of the iteration."""

    def _flush(self) -> None:
        """Write what is queued now."""

    def _flush_early(self) -> None:
        """A full write's worth is queued: write it now, keep the scheduled flush."""

    def _handler_failed(self, m: Any, exc: BaseException) -> str:
        """An inline handler raised: log it, return the error text to send."""

    def _send_large(self, mux_id: int, seq: int, deadline_ms: int, handler: int, op: int,
                    flags: int, payload: bytes, subroute: bytes | None) -> None:
        """Send a message of LARGE_MESSAGE bytes or more, in order."""

    def _call(self, handler_id: int, payload: Any, timeout: float | None,
              subroute: bytes | None) -> Any:
        """A call :meth:`ConnCore.call` does not start itself."""

    def _failed(self, exc: BaseException) -> Any:
        """A future failed with ``exc``."""

    def _schedule_sweep(self, delay: float) -> None:
        """Run the request deadline sweep within ``delay`` seconds."""


class CoreReader(Protocol):
    """What a :class:`ConnCore` calls on its ``reader``: the wire that made
    it, which owns the socket (grid/_mux.pxd declares the same)."""

    def input_failed(self, exc: Exception) -> None:
        """:meth:`ConnCore.socket_read` failed on the peer's input."""

    def _input_waiting(self) -> None:
        """Received input waits for a later loop turn: stop reading and call
        :meth:`ConnCore.drain` from the next turn, until it returns True."""
