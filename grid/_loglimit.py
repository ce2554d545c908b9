"""Rate-limited logging: a few records per interval per kind of event, so a
dead, misconfigured or hostile peer costs a few log lines per interval, not
one per attempt."""

from __future__ import annotations

import logging
import time

__all__ = ["LOG_INTERVAL", "LogLimit", "PeerLogLimits"]

#: Seconds of one logging interval: past the first records of a kind in an
#: interval, repeats go to DEBUG (without traceback) and are counted; the
#: count is added to the next record let through.
LOG_INTERVAL = 30.0

_default_log = logging.getLogger("grid.connection")


class LogLimit:
    """Lets ``burst`` log records through per :data:`LOG_INTERVAL` at their
    level; the others in between go to DEBUG, without their traceback, and
    how many there were is added to the next record let through.

    :param burst: records let through per interval.
    """

    __slots__ = ("_start", "_count", "_suppressed", "_burst")

    def __init__(self, burst: int = 1) -> None:
        self._start = -LOG_INTERVAL
        self._count = 0
        self._suppressed = 0
        self._burst = burst

    def log(self, level: int, msg: str, *args: object, force: bool = False,
            logger: logging.Logger = _default_log, exc: BaseException | None = None) -> bool:
        """Log ``msg % args`` at ``level`` (with the traceback of ``exc``, if
        given) unless this interval's records are spent (then at DEBUG,
        without the traceback); ``force`` lets it through.  Returns True if
        the record went out at ``level``."""
        now = time.monotonic()
        if now - self._start >= LOG_INTERVAL:
            self._start = now
            self._count = 0
        if force or self._count < self._burst:
            self._count += 1
            if self._suppressed:
                msg += " (%d similar messages in the last %g s logged at DEBUG)"
                args += (self._suppressed, LOG_INTERVAL)
                self._suppressed = 0
            logger.log(level, msg, *args, exc_info=exc)
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
            *args: object, exc: BaseException | None = None) -> None:
        """Log through the :class:`LogLimit` of ``key``."""
        lim = self._limits.get(key)
        if lim is None:
            if len(self._limits) >= 1024:
                self._limits.clear()
            lim = self._limits[key] = LogLimit()
        lim.log(level, msg, *args, logger=logger, exc=exc)
