"""What a connection logs about its peer going down and coming back.

Rate-limited (grid._loglimit), with two rules that keep the log truthful:

* a "connected" line is never held back after a "disconnected" line that
  went out, so the log's last word about a peer matches the link;
* a peer that closes its socket cleanly (a node shutting down or
  restarting) is logged at INFO; only if it stays away for two ping
  intervals does a WARNING follow (failed redials in between are DEBUG).  A grid that shuts down cleanly thus
  logs no warning, while a peer that is gone still gets one.
"""

from __future__ import annotations

import asyncio
import logging

from grid._loglimit import LogLimit

__all__ = ["PeerLog", "CLOSED_BY_PEER"]

log = logging.getLogger("grid.connection")

#: The reason a wire gives when its peer closed the socket (a clean EOF).
CLOSED_BY_PEER = "connection closed by peer"


class PeerLog:
    """The log lines of one connection (``local -> remote``)."""

    __slots__ = ("_local", "_remote", "_loop", "_warn", "_info", "_down_logged",
                 "_still_down")

    def __init__(self, local: str, remote: str, loop: asyncio.AbstractEventLoop) -> None:
        self._local = local
        self._remote = remote
        self._loop = loop
        self._warn = LogLimit()  # failures: connect failed, disconnected
        self._info = LogLimit()  # "connected", so a flapping link stays quiet too
        self._down_logged = False  # a "disconnected" line went out since the last "connected"
        self._still_down: asyncio.TimerHandle | None = None

    def failure(self, text: str, force: bool = False) -> bool:
        """A WARNING about the peer (rate-limited unless ``force``); True if it went out."""
        return self._warn.log(logging.WARNING, "grid: %s -> %s: %s", self._local, self._remote,
                              text, force=force, logger=log)

    def connect_failed(self, text: str, rejected: bool) -> None:
        """A dial failed: a WARNING, except while a peer that closed cleanly
        is given its time to come back (the still-down warning covers it)
        and did not refuse this node (a refusal is a configuration error)."""
        if self._still_down is not None and not rejected:
            log.debug("grid: %s -> %s: %s", self._local, self._remote, text)
        else:
            self.failure(text)

    def lost(self, reason: str, force: bool, still_down_after: float) -> None:
        """The live connection dropped for ``reason`` (not this node leaving)."""
        if reason != CLOSED_BY_PEER:
            self._down_logged = self.failure(f"disconnected: {reason}", force) or self._down_logged
            return
        # A clean close: the peer is shutting down or restarting.
        self._down_logged = self._warn.log(
            logging.INFO, "grid: %s -> %s: disconnected: %s (shutting down or restarting?)",
            self._local, self._remote, reason, logger=log) or self._down_logged
        self._cancel()
        self._still_down = self._loop.call_later(still_down_after, self._warn_still_down,
                                                 still_down_after)

    def _warn_still_down(self, after: float) -> None:
        self._still_down = None
        # Forced: the INFO line of the close used this interval's record.
        self.failure(f"still disconnected {after:g} s after it closed the connection", True)
        self._down_logged = True

    def connected(self, reconnects: int) -> None:
        """The connection is up (again)."""
        self._cancel()
        force, self._down_logged = self._down_logged, False
        if reconnects:
            self._info.log(logging.INFO, "grid: %s connected to %s (reconnect %d)",
                           self._local, self._remote, reconnects, force=force, logger=log)
        else:
            self._info.log(logging.INFO, "grid: %s connected to %s", self._local, self._remote,
                           force=force, logger=log)

    def stop(self) -> None:
        """This node is leaving: no warning about the peer from here on."""
        self._cancel()

    def _cancel(self) -> None:
        if self._still_down is not None:
            self._still_down.cancel()
            self._still_down = None
