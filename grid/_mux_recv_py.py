"""Received input of the pure-Python ConnCore, within a turn's budget (see
ConnCore.drain): the events of a read run in order or kept for a later
turn, binary messages decoded (a large merged container checked, then
dispatched, in slices across turns), each message dispatched, and sync
handlers run inline (the twin of grid/_mux_inline.pxi).  The compiled core
does the same in grid/_mux.pyx; ConnCore's fields are set up in
grid/_mux_py.py.
"""

from __future__ import annotations

import time
from typing import Any

from grid import _codec_py, _envelope_py
from grid._consts import (
    FLAG_PAYLOAD_IS_ERR,
    SLICE_CONTAINER,
    SLOW_HANDLER,
    TURN_BYTE_SHIFT,
    TURN_CHECKS_PER_UNIT,
    TURN_SLOW_COST,
    WS_BINARY,
    Op,
)
from grid.errors import OUT_OF_SEQUENCE_TEXT, GridError, RemoteError

__all__ = ["run_events", "wait_events", "on_binary", "work_slice", "dispatch_message", "run_inline"]

_MUX_CLIENT_MSG = int(Op.MUX_CLIENT_MSG)
_MUX_SERVER_MSG = int(Op.MUX_SERVER_MSG)
_UNBLOCK_SRV_MUX = int(Op.UNBLOCK_SRV_MUX)
_UNBLOCK_CL_MUX = int(Op.UNBLOCK_CL_MUX)
_REQUEST = int(Op.REQUEST)
_RESPONSE = int(Op.RESPONSE)
_FLAG_ERR = FLAG_PAYLOAD_IS_ERR
_WS_BINARY = WS_BINARY


def run_events(core: Any, events: list[Any], i: int) -> None:
    """Run events[i:] (from a read) in order while the turn's budget lasts;
    what is left waits (wait_events)."""
    n = len(events)
    while i < n:
        if core._spent >= core.turn_budget:
            wait_events(core, events, i)
            return
        opcode, payload = events[i]
        i += 1
        if opcode == _WS_BINARY:
            on_binary(core, payload)
            if core._slice is not None:
                wait_events(core, events, i)
                return
        else:
            core._spent += TURN_SLOW_COST
            core.owner._on_control(opcode, payload)


def wait_events(core: Any, events: list[Any] | None, i: int) -> None:
    """Keep events[i:] for drain() and have the reader stop reading and
    call drain() from a later turn."""
    if events is not None and i < len(events):
        if core._waiting is None:
            core._waiting, core._waiting_pos = events, i
        else:  # drain() left a slice unfinished and had events behind it
            core._waiting.extend(events[i:])
    if not core._held:
        core._held = True
        core.reader._input_waiting()


def on_binary(core: Any, payload: Any) -> None:
    """One binary WebSocket message: its grid messages dispatched, or a
    merged container of more than SLICE_CONTAINER messages started as a
    slice (work_slice)."""
    if isinstance(payload, (bytearray, memoryview)):
        payload = bytes(payload)  # a caller's buffer: sliced as received frames are
    if type(payload) is bytes:
        core._spent += len(payload) >> TURN_BYTE_SHIFT
        bins = _envelope_py.merged_bins(payload, SLICE_CONTAINER)
        if bins is not None:
            core._slice = payload
            core._slice_count, core._slice_start, core._slice_end = bins
            core._slice_pos = core._slice_start
            core._slice_done = 0
            core._slice_checked = False
            work_slice(core)
            return
    else:  # a SplitFrame (one large message)
        core._spent += len(payload) >> TURN_BYTE_SHIFT
    msgs = _codec_py.decode_messages(payload)
    core.msgs_in += len(msgs)
    core._spent += len(msgs)
    for m in msgs:
        dispatch_message(core, m)


def work_slice(core: Any) -> None:
    """Go on with the large container ``core._slice``, within what is left
    of the turn's budget: every bin checked first, then dispatched
    (decoded again rather than kept)."""
    payload = core._slice
    assert payload is not None
    pos, end, count = core._slice_pos, core._slice_end, core._slice_count
    while not core._slice_checked:
        if core._spent >= core.turn_budget:
            core._slice_pos = pos
            return
        if core._slice_done == count:
            core._slice_checked = True
            core._slice_done = 0
            pos = core._slice_start
            break
        try:
            _, pos = _envelope_py.merged_bin(payload, pos, end, count, core._slice_done)
        except Exception:
            core._slice = None
            raise
        core._slice_done += 1
        if core._slice_done % TURN_CHECKS_PER_UNIT == 0:
            core._spent += 1
    while core._slice_done < count:
        if core._spent >= core.turn_budget or core._slice is not payload:
            core._slice_pos = pos
            return
        m, pos = _envelope_py.merged_bin(payload, pos, end, count, core._slice_done)
        core._slice_done += 1
        core.msgs_in += 1
        core._spent += 1
        dispatch_message(core, m)
    if core._slice is payload:
        core._slice = None


def dispatch_message(core: Any, m: Any) -> None:
    """ConnCore.dispatch: handle one decoded message (see the ConnCore class
    docstring for where each kind goes)."""
    op = m.op
    if op == _RESPONSE:
        fut = core.pending.pop(m.mux_id, None)
        if fut is None or fut.done():
            return  # late or unknown: dropped (§3.4)
        if m.seq != 0:
            fut.set_exception(GridError(OUT_OF_SEQUENCE_TEXT))
        elif m.flags & _FLAG_ERR:
            fut.set_exception(RemoteError(m.payload.decode("utf-8", "replace")
                                          if m.payload else ""))
        else:
            fut.set_result(m.payload)
        return
    if op == _REQUEST:
        sub = m.subroute
        entry = core.singles.get(m.handler) if sub is None else core.singles_sub.get(sub)
        if entry is not None and not entry.is_async:
            run_inline(core, m, entry)
            return
    core._spent += TURN_SLOW_COST - 1  # Python code of the stream or the connection
    if op == _MUX_SERVER_MSG or op == _UNBLOCK_CL_MUX:
        if core.callers is not None:
            st = core.callers.get(m.mux_id)
            if st is not None:
                st._on_message(m)
                return
    elif op == _UNBLOCK_SRV_MUX or op == _MUX_CLIENT_MSG:
        if core.callees is not None:
            srv = core.callees.get(m.mux_id)
            if srv is not None:
                srv.on_message(m)
                return
    core.owner._on_message(m)


def run_inline(core: Any, m: Any, entry: Any) -> None:
    """Run the sync handler ``entry`` for the request ``m`` with the call
    context set around it, and queue the reply unless the caller's deadline
    passed meanwhile."""
    started = time.monotonic()
    dl = m.deadline_ms
    deadline = core.clock() + dl / 1000 if dl else None
    token = core.context_var.set((core.caller, m.handler, entry.route, m.mux_id, deadline))
    try:
        result = entry.fn(m.payload)
        err: str | None
    except RemoteError as exc:
        result, err = None, exc.message
    except Exception as exc:
        result, err = None, core.owner._handler_failed(m, exc)
    else:
        err = None
    finally:
        core.context_var.reset(token)
    elapsed = time.monotonic() - started
    if elapsed >= SLOW_HANDLER:
        entry.ran_slow(elapsed)  # a rate-limited warning
    if dl and elapsed * 1000 > dl:
        return  # the caller has given up (§7 step 3)
    core.respond(m.mux_id, m.seq, result, err)
