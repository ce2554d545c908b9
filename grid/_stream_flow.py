"""What both ends of a stream share (docs/protocol.md §8): the receiving
end kept in a :class:`~grid._impl.MuxState`, send credits with their
waiters, the flags of an item, the end-of-items marker, the record a
traced stream keeps, and the DisconnectClientMux either side may send.

The caller's end (grid.stream) and the callee's (grid._stream_callee)
both build on these; neither imports the other's internals.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from grid._consts import FLAG_PAYLOAD_IS_ZERO, Op
from grid._impl import encode_message
from grid._link import Link
from grid.trace import CallTrace, TraceSide

__all__ = ["EOF", "Credits", "StreamTrace", "disconnect_client", "item_flags", "stream_state"]

_DISCONNECT_CLIENT_MUX = int(Op.DISCONNECT_CLIENT_MUX)

EOF = object()  # marks the end of a queue of items


class StreamTrace:
    """What a traced stream counts until it ends (grid.trace)."""

    __slots__ = ("handler_id", "route", "start", "t0", "to_callee", "to_caller")

    def __init__(self, handler_id: int, route: str | None, payload: bytes | None) -> None:
        self.handler_id = handler_id
        self.route = route
        self.start = time.time()
        self.t0 = time.perf_counter()
        self.to_callee = 0 if payload is None else len(payload)
        self.to_caller = 0

    def emit(self, link: Link, side: TraceSide, mux_id: int, error: str | None) -> None:
        caller, callee = (link.local, link.remote) if side == "caller" else (link.remote, link.local)
        link.tracers.emit(CallTrace(
            self.handler_id, self.route, caller, callee, side,
            "stream", mux_id, self.start, time.perf_counter() - self.t0, self.to_callee,
            self.to_caller, error))


def item_flags(base: int, payload: bytes | None) -> int:
    """The flags of an item: ``base``, and FlagPayloadIsZero for an empty
    (not absent) payload (§2.4)."""
    return base | FLAG_PAYLOAD_IS_ZERO if payload is not None and len(payload) == 0 else base


def stream_state(st: Any, capacity: int, credit_op: int, item_op: int) -> Any:
    """Set up ``st`` (a MuxState) as one side of a stream that receives up to
    ``capacity`` items: the receiving end lives there, where the compiled core
    reads it (ConnCore.take_item / send_item and its dispatch).  Credits of
    taken items are owed until a quarter of the window's worth is, then
    written at once, so the sender gets them back while the rest is read
    and sends in batches (not one item per write).  A reader of small
    items (under ``EARLY_CREDIT_ITEM_MAX`` bytes) that keeps up with its
    sender writes them sooner: once an eighth of the window is owed and it
    has taken at least as many items as it still holds (with nothing else
    queued on the connection), so the sender works on the next items while
    the reader takes the rest (grid/_mux_stream_py.py's stream_owe).
    Whatever is still owed is queued when the reader is about to wait.
    ``fast`` stays True until the stream ends or is traced."""
    st.items = deque()
    st.capacity = capacity
    st.flush_every = max(1, capacity // 4)
    st.credit_op = credit_op
    st.item_op = item_op
    st.fast = True
    return st


class Credits:
    """Send credits of one side of a stream, with waiters.  The waiting
    sender's future is the MuxState's ``waiter``, where the compiled core
    resolves it when an unblock arrives."""

    __slots__ = ("state", "_loop")

    def __init__(self, state: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.state = state
        self._loop = loop

    async def take(self, check: Callable[[], None]) -> None:
        state = self.state
        while not state.take_credit():
            check()
            fut = self._loop.create_future()
            state.waiter = fut
            try:
                await fut
            finally:
                state.waiter = None
        check()

    def add(self, n: int) -> None:
        self.state.add_credits(n)
        self.wake()

    def wake(self) -> None:
        w = self.state.waiter
        if w is not None and not w.done():
            w.set_result(None)


def disconnect_client(link: Link, mux_id: int) -> None:
    """Tell the caller that stream ``mux_id`` is gone: DisconnectClientMux
    (§3.4, §8.6)."""
    link.send(encode_message(mux_id, 0, 0, 0, _DISCONNECT_CLIENT_MUX, link.base, None))
