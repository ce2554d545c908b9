"""A stream's credits owed to its sender, in the pure-Python ConnCore (the
twin of _stream_owe and _stream_queue in grid/_mux_stream.pxi): counted as
items leave the stream's buffer, queued as unblocks, and written once
``flush_every`` are owed (or half that, for a reader of small items that
keeps up).  ConnCore's take_item, return_credit and release_credits call
these; grid/_stream_flow.py's stream_state sets up the MuxState fields they
read.
"""

from __future__ import annotations

from typing import Any

from grid import _codec_py
from grid._consts import EARLY_CREDIT_ITEM_MAX

__all__ = ["stream_owe", "stream_queue"]


def stream_queue(core: Any, state: Any) -> None:
    """Queue every credit owed, one unblock each, in sequence."""
    q = core.queue
    while state.owed > 0:
        state.owed -= 1
        msg = _codec_py.encode_message(state.mux_id, state.next_send_seq(), 0, 0,
                                       state.credit_op, core.base_flags, None)
        q.append(msg)
        core.queued_bytes += len(msg)


def stream_owe(core: Any, state: Any, size: int) -> None:
    """One more credit owed, for an item of ``size`` bytes
    (ConnCore.take_item, return_credit)."""
    # Every flush_every credits owed leave at once, so the sender gets
    # them back while the rest is read: while the owner lets the core
    # write (``ready``), with whatever else is queued, in one write of
    # the core's own; otherwise through the owner's flush.
    # A reader of small items (under EARLY_CREDIT_ITEM_MAX bytes) that keeps
    # up with its sender holds few of them: once half a batch is owed and it
    # has taken at least as many as it still holds, the credits leave at
    # once, so the sender works on the next items while the reader takes
    # the rest, not after.  Where both ends are busy, fewer writes count for
    # more: a side that has other messages queued (a handler sending
    # replies), and a reader of larger items, wait for the full batch.
    state.owed += 1
    items = state.items
    if state.owed >= state.flush_every or (size < EARLY_CREDIT_ITEM_MAX
                                           and 2 * state.owed >= state.flush_every
                                           and not core.queue
                                           and (items is None or state.owed >= len(items))):
        transport = core.ready
        if transport is None:
            core.release_credits(state)
            core.owner._flush()
            return
        stream_queue(core, state)
        transport.write(core.take_frames(core.mask_key() if core.mask_key is not None else None))
        if transport.get_write_buffer_size() > core.write_limit:
            core.owner._flush()  # the owner fails the wire past its limit
