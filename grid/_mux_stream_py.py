"""A stream's steady traffic in the pure-Python ConnCore (the twin of
grid/_mux_stream.pxi): items and credits moved between the wire and a
stream's MuxState without the stream's own code.  ConnCore's take_item,
return_credit, release_credits and send_item check that ``state`` is a
MuxState and hand over to these functions; grid/_stream_flow.py's
stream_state sets up the MuxState fields they read, for both ends of a
stream.
"""

from __future__ import annotations

from typing import Any

from grid import _codec_py
from grid._consts import EARLY_FLUSH_BYTES, EARLY_FLUSH_MESSAGES, FLAG_PAYLOAD_IS_ZERO, LARGE_MESSAGE

__all__ = ["stream_take", "stream_owe", "stream_queue", "stream_release", "stream_send"]

_FLAG_ZERO = FLAG_PAYLOAD_IS_ZERO


def stream_take(core: Any, state: Any) -> bytes | None:
    """ConnCore.take_item: the next buffered item with its credit owed, or
    None (nothing taken)."""
    items = state.items
    if not state.fast or not items or type(items[0]) is not bytes:
        return None
    item = items.popleft()
    stream_owe(core, state)
    return item  # type: ignore[no-any-return]


def stream_release(core: Any, state: Any) -> None:
    """ConnCore.release_credits: queue every credit owed; the flush is asked
    for once they are all queued."""
    if state.owed <= 0:
        return
    q = core.queue
    first = not q
    stream_queue(core, state)  # queued together: the flush is asked for once, below
    if first:
        core.owner._schedule_flush()
    elif len(q) >= EARLY_FLUSH_MESSAGES or core.queued_bytes >= EARLY_FLUSH_BYTES:
        core.owner._flush_early()


def stream_queue(core: Any, state: Any) -> None:
    """Queue every credit owed, one unblock each, in sequence."""
    q = core.queue
    while state.owed > 0:
        state.owed -= 1
        msg = _codec_py.encode_message(state.mux_id, state.next_send_seq(), 0, 0,
                                       state.credit_op, core.base_flags, None)
        q.append(msg)
        core.queued_bytes += len(msg)


def stream_owe(core: Any, state: Any) -> None:
    """ConnCore.return_credit: one more credit owed."""
    # Every flush_every credits owed leave at once, so the sender gets
    # them back while the rest is read: while the owner lets the core
    # write (``ready``), with whatever else is queued, in one write of
    # the core's own; otherwise through the owner's flush.
    state.owed += 1
    if state.owed >= state.flush_every:
        transport = core.ready
        if transport is None:
            core.release_credits(state)
            core.owner._flush()
            return
        stream_queue(core, state)
        transport.write(core.take_frames(core.mask_key() if core.mask_key is not None else None))
        if transport.get_write_buffer_size() > core.write_limit:
            core.owner._flush()  # the owner fails the wire past its limit


def stream_send(core: Any, state: Any, item: Any) -> bool:
    """ConnCore.send_item: queue ``item`` if it can leave at once; False,
    having done nothing, otherwise."""
    if not state.fast or state.credits <= 0:
        return False
    if type(item) is not bytes or len(item) >= LARGE_MESSAGE or len(item) > core.max_payload:
        return False
    state.credits -= 1
    flags = core.base_flags | _FLAG_ZERO if len(item) == 0 else core.base_flags
    core.send_message(state.mux_id, state.next_send_seq(), 0, 0, state.item_op, flags, item)
    return True
