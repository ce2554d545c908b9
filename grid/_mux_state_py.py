"""Pure-Python twin of the per-mux bookkeeping in grid/_mux_state.pxi
(docs/protocol.md §3.4, §8.3, §8.4): caller-side mux ids and one stream
side's sequence numbers, credits and receiving end.  Re-exported by
:mod:`grid._mux_py`.
"""

from __future__ import annotations

from operator import index as _index
from typing import Any

from grid._consts import MAX_UINT32, MAX_UINT64
from grid.errors import IncorrectSequence

__all__ = ["MuxIdAllocator", "MuxState"]

_U32_MASK = MAX_UINT32
_U64_MASK = MAX_UINT64


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
    messages this side may still send before it must wait for an unblock;
    ``waiter`` is the future a sender out of credit waits on (None if none
    waits), resolved when credit arrives.

    The stream layer also keeps a stream's receiving end here, so that the
    compiled core reads it without attribute lookups: ``items`` (a deque of
    received items, with room for ``capacity``; capacity 0 once no more may
    arrive), ``item_waiter`` (the reader's future), ``received`` (a count for
    the liveness check), ``owed``/``flush_every`` (credits earned by items
    taken and not yet queued; queued and written once ``flush_every`` are
    owed, or when the reader is about to wait), ``credit_op``/``item_op`` (the ops of
    this side) and ``fast``: True while the stream is open and untraced, so
    that :meth:`ConnCore.take_item`, :meth:`ConnCore.send_item` and the core's
    dispatch may handle its steady traffic without the stream's own code.
    """

    __slots__ = ("mux_id", "send_seq", "recv_seq", "credits", "waiter", "items", "item_waiter",
                 "capacity", "received", "owed", "flush_every", "credit_op", "item_op", "fast")

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
        self.waiter: Any = None
        self.items: Any = None
        self.item_waiter: Any = None
        self.capacity = 0
        self.received = 0
        self.owed = 0
        self.flush_every = 1
        self.credit_op = 0
        self.item_op = 0
        self.fast = False

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


# ---------------------------------------------------------------- the per-connection core
