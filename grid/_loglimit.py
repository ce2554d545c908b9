"""Rate-limited logging: one record per interval per kind of event, so a dead
or misconfigured peer costs a log line per interval, not one per attempt."""

from __future__ import annotations

import logging
import time

__all__ = ["LOG_INTERVAL", "LogLimit", "PeerLogLimits"]

#: Seconds between two log records of the same kind about one peer: past the
#: first, repeats go to DEBUG and are counted until the interval has passed.
LOG_INTERVAL = 30.0

_default_log = logging.getLogger("grid.connection")


class LogLimit:
    """Lets one log record through per :data:`LOG_INTERVAL` at its level;
    the others in between go to DEBUG, and how many there were is added to
    the next record let through."""

    __slots__ = ("_last", "_suppressed")

    def __init__(self) -> None:
        self._last = -LOG_INTERVAL
        self._suppressed = 0

    def log(self, level: int, msg: str, *args: object, force: bool = False,
            logger: logging.Logger = _default_log) -> bool:
        """Log ``msg % args`` at ``level`` unless a record went out less than
        :data:`LOG_INTERVAL` ago (then at DEBUG); ``force`` lets it through.
        Returns True if the record went out at ``level``."""
        now = time.monotonic()
        if force or now - self._last >= LOG_INTERVAL:
            self._last = now
            if self._suppressed:
                msg += " (%d similar messages in the last %g s logged at DEBUG)"
                args += (self._suppressed, LOG_INTERVAL)
                self._suppressed = 0
            logger.log(level, msg, *args)
            return True
        self._suppressed += 1
        logger.debug(msg, *args)
        return False


class PeerLogLimits:
    """One :class:`LogLimit` per key (a peer address and what happened), for
    events about sockets not yet tied to a connection; bounded."""

    __slots__ = ("_limits",)

    def __init__(self) -> None:
        self._limits: dict[object, LogLimit] = {}

    def log(self, logger: logging.Logger, key: object, level: int, msg: str,
            *args: object) -> None:
        """Log through the :class:`LogLimit` of ``key``."""
        lim = self._limits.get(key)
        if lim is None:
            if len(self._limits) >= 1024:
                self._limits.clear()
            lim = self._limits[key] = LogLimit()
        lim.log(level, msg, *args, logger=logger)
