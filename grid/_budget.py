"""A count of bytes shared by many holders, bounded: what the frame parsers
of one node's sockets hold of messages not yet complete
(:attr:`grid._codec.FrameParser.budget`)."""

from __future__ import annotations

__all__ = ["ByteBudget"]


class ByteBudget:
    """At most ``limit`` bytes held at once by all who take from it.

    :param limit: the most bytes held at once (``>= 0``).
    """

    __slots__ = ("limit", "held")

    def __init__(self, limit: int) -> None:
        if limit < 0:
            raise ValueError("limit must be >= 0")
        #: The most bytes held at once.
        self.limit = limit
        #: Bytes held now.
        self.held = 0

    def take(self, n: int) -> bool:
        """Hold ``n`` more bytes; False (nothing taken) if that would pass
        :attr:`limit`."""
        if self.held + n > self.limit:
            return False
        self.held += n
        return True

    def give(self, n: int) -> None:
        """``n`` bytes taken earlier are no longer held."""
        self.held -= n
