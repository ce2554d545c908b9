"""Pure-Python twin of :mod:`grid._mux`: the per-mux bookkeeping a connection
needs on its hot path (GRID-PROTOCOL.md §3.4, §8.3, §8.4).

No sockets and no asyncio: ids, sequence counters and credit counts only.
"""

from __future__ import annotations

from operator import index as _index

from grid.errors import IncorrectSequence

__all__ = ["MuxIdAllocator", "MuxState"]

_U32_MASK = 0xFFFFFFFF
_U64_MASK = 0xFFFFFFFFFFFFFFFF


class MuxIdAllocator:
    """Hands out caller-side mux ids: pre-incremented from ``start``, wrapping
    at 2**64 and skipping 0, which is reserved for connection pings (§3.4).
    One allocator lives as long as its connection object, across reconnects."""

    __slots__ = ("_last",)

    def __init__(self, start: int = 0) -> None:
        # operator.index, like the compiled twin's conversion to uint64_t.
        start = _index(start)
        if not 0 <= start <= _U64_MASK:
            raise ValueError(f"start {start} is outside 0..2**64-1")
        self._last = start

    @property
    def last(self) -> int:
        """The id handed out most recently (``start`` before the first)."""
        return self._last

    def next(self) -> int:
        """Return the next mux id (never 0)."""
        v = (self._last + 1) & _U64_MASK
        if v == 0:
            v = 1
        self._last = v
        return v


class MuxState:
    """Sequence numbers and credits of one mux, seen from one side (§8.3, §8.4).

    ``send_seq`` is the Seq the next counted message takes; ``recv_seq`` the
    Seq the next checked message must carry.  ``credits`` counts the data
    messages this side may still send before it must wait for an unblock.
    """

    __slots__ = ("mux_id", "send_seq", "recv_seq", "credits")

    def __init__(self, mux_id: int, send_seq: int = 0, recv_seq: int = 0, credits: int = 0) -> None:
        # operator.index, like the compiled twin's conversions to fixed-width ints.
        mux_id, send_seq, recv_seq = _index(mux_id), _index(send_seq), _index(recv_seq)
        credits = _index(credits)
        if not 0 <= mux_id <= _U64_MASK:
            raise ValueError(f"mux_id {mux_id} is outside 0..2**64-1")
        if not (0 <= send_seq <= _U32_MASK and 0 <= recv_seq <= _U32_MASK):
            raise ValueError("sequence numbers are 32-bit unsigned")
        if credits < 0:
            raise ValueError("credits must be >= 0")
        self.mux_id = mux_id
        self.send_seq = send_seq
        self.recv_seq = recv_seq
        self.credits = credits

    def next_send_seq(self) -> int:
        """Take the Seq for the next counted outgoing message."""
        s = self.send_seq
        self.send_seq = (s + 1) & _U32_MASK
        return s

    def check_recv(self, seq: int) -> None:
        """Accept ``seq`` if it is the one due, else raise IncorrectSequence
        (and leave the counter where it was)."""
        expected = self.recv_seq
        if seq != expected:
            raise IncorrectSequence(expected, seq)
        self.recv_seq = (expected + 1) & _U32_MASK

    def add_credits(self, n: int = 1) -> int:
        """Return ``n`` credits (an ack or unblock arrived); give the new total."""
        n = _index(n)
        if n < 0:
            raise ValueError("n must be >= 0")
        self.credits += n
        return self.credits

    def take_credit(self) -> bool:
        """Spend one credit if there is one; False means the sender must wait."""
        if self.credits > 0:
            self.credits -= 1
            return True
        return False

    def __repr__(self) -> str:
        return (f"MuxState(mux_id={self.mux_id}, send_seq={self.send_seq}, "
                f"recv_seq={self.recv_seq}, credits={self.credits})")
