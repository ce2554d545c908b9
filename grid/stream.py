"""Streams (docs/protocol.md §8): the caller's :class:`Stream`, and the
public names of the callee's end.

A stream carries items both ways with flow control on each: a sender waits
for credit, so no side buffers more than the capacities both ends agree on
(the caller at most ``max(out_capacity, 1)`` replies, the callee at most
``in_capacity`` inputs).  Each end keeps one :class:`~grid._impl.MuxState`
per stream for sequence numbers and send credits, and reaches its
connection only through its :class:`~grid._link.Link`.

This module is the caller's end: :func:`open_stream`, :class:`Stream` and
the callee's messages for it (:func:`on_caller_op`).  The callee's end
(:class:`StreamHandler`, :class:`StreamContext`, :class:`StreamOut` and the
serving of each stream) is grid._stream_callee, whose public names this
module re-exports; what both ends share is grid._stream_flow.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from grid import _payloads
from grid._checks import check_seconds, payload_size
from grid._consts import (
    FLAG_EOF,
    FLAG_PAYLOAD_IS_ERR,
    FLAG_SUBROUTE,
    LARGE_MESSAGE,
    MAX_DEADLINE_MS,
    Op,
)
from grid._impl import MuxState, encode_message
from grid._link import Link
from grid._stream_callee import StreamContext, StreamHandler, StreamHandlerFn, StreamOut
from grid._stream_flow import EOF, Credits, StreamTrace, disconnect_client, item_flags, stream_state
from grid.errors import (
    Disconnected,
    GridError,
    IncorrectSequence,
    ProtocolError,
    RemoteError,
    UnknownHandler,
)
from grid.handlers import (
    _current,
    check_handler_id,
    inherit_deadline,
    no_local_stream_text,
    remote_unknown_handler,
)
from grid.trace import error_text

__all__ = ["StreamHandler", "StreamContext", "StreamOut", "Stream", "StreamHandlerFn"]

# The callee's public classes live in grid._stream_callee; they are named
# (in reprs, tracebacks and pickles) where users import them from.
for _cls in (StreamContext, StreamHandler, StreamOut):
    _cls.__module__ = __name__
del _cls

log = logging.getLogger("grid.stream")

_CONNECT_MUX = int(Op.CONNECT_MUX)
_MUX_CONNECT_ERROR = int(Op.MUX_CONNECT_ERROR)
_DISCONNECT_CLIENT_MUX = int(Op.DISCONNECT_CLIENT_MUX)
_DISCONNECT_SERVER_MUX = int(Op.DISCONNECT_SERVER_MUX)
_MUX_CLIENT_MSG = int(Op.MUX_CLIENT_MSG)
_MUX_SERVER_MSG = int(Op.MUX_SERVER_MSG)
_UNBLOCK_SRV_MUX = int(Op.UNBLOCK_SRV_MUX)
_UNBLOCK_CL_MUX = int(Op.UNBLOCK_CL_MUX)
_ACK_MUX = int(Op.ACK_MUX)
_PING = int(Op.PING)
_PONG = int(Op.PONG)


class Stream:
    """The caller's end of a stream, from :meth:`grid.Connection.new_stream`.

    Iterate it for the handler's replies (``async for``); :meth:`send` and
    :meth:`close_send` feed a two-way stream.  Iteration ends at the handler's
    EOF and raises :class:`grid.RemoteError` or :class:`grid.Disconnected` on
    failure.  :meth:`cancel` (or cancelling the task that iterates, or the
    deadline) cancels the handler on the remote node too.
    """

    def __init__(self, link: Link, mux_id: int, in_capacity: int, out_capacity: int,
                 deadline: float | None) -> None:
        self._link = link
        self._loop = link.loop
        self.mux_id = mux_id
        self.in_capacity = in_capacity
        self.out_capacity = max(out_capacity, 1)
        self._state = st = stream_state(MuxState(mux_id), self.out_capacity, _UNBLOCK_SRV_MUX,
                                         _MUX_CLIENT_MSG)
        self._core = link.core  # this connection's core (the stream ends with it)
        self._credits = Credits(st, self._loop)
        self._acked: asyncio.Future[None] = self._loop.create_future()
        self._ended: asyncio.Future[None] = self._loop.create_future()  # set by _finish
        self._error: BaseException | None = None
        self._done = False  # removed from the connection's table
        self._eof_in = False  # EOF (or error) received from the callee
        self._eof_out = in_capacity == 0  # no more input will be sent
        self._heard = self._loop.time()
        self._received_at_tick = 0  # the state's `received` at the last ping tick
        self._timers: list[asyncio.TimerHandle] = []
        self._ping_interval = link.node.stream_ping_interval
        self._trace: StreamTrace | None = None  # set by open_stream while tracing
        if deadline is not None:
            self._timers.append(self._loop.call_at(deadline, self._expired))
        # Pings only for long or unbounded streams (§8.7).
        if deadline is None or deadline - self._loop.time() > self._ping_interval:
            self._timers.append(self._loop.call_later(self._ping_interval, self._ping_tick))

    # -- public

    async def send(self, item: bytes) -> None:
        """Send one item to the handler; waits for credit (two-way streams only)."""
        st = self._state
        core = self._core
        # Open, untraced, acknowledged (credit only comes with the AckMux) and
        # a credit in hand: queued in one step.
        if core is not None and not self._eof_out and core.send_item(st, item):
            return
        payload_size(item, self._link.node.max_message_size, "stream item", "item")
        if self.in_capacity == 0:
            raise GridError("stream does not accept requests")
        if self._eof_out:
            raise GridError("send after close_send")
        self._raise_if_failed()
        # Fast path: acknowledged and a credit in hand, no coroutine to wait on.
        if not (self._acked.done() and st.take_credit()):
            if not self._acked.done():
                await self._acked
            try:
                await self._credits.take(self._raise_if_failed)
            except asyncio.CancelledError:
                self.cancel()
                raise
        link = self._link
        if type(item) is bytes and len(item) >= LARGE_MESSAGE:  # framed off the loop
            link.send_large(self.mux_id, st.next_send_seq(), 0, 0, _MUX_CLIENT_MSG,
                            item_flags(link.base, item), item, None)
        else:
            core = link.core
            if core is not None:
                core.send_message(self.mux_id, st.next_send_seq(), 0, 0, _MUX_CLIENT_MSG,
                                  item_flags(link.base, item), item)
        tr = self._trace
        if tr is not None:
            tr.to_callee += len(item)

    async def close_send(self) -> None:
        """Tell the handler there is no more input (EOF); needs no credit."""
        if self._eof_out:
            return
        self._eof_out = True
        if self._done:
            return
        self._link.send(encode_message(self.mux_id, self._state.next_send_seq(), 0, 0,
                                       _MUX_CLIENT_MSG, self._link.base | FLAG_EOF, None))

    def cancel(self) -> None:
        """Abandon the stream and cancel the handler on the remote node."""
        if self._done:
            return
        self._disconnect_server()
        self._finish(GridError("stream cancelled"))

    async def results(self, callback: Callable[[bytes], Any]) -> None:
        """Call ``callback`` (sync or async) with every reply; return at EOF."""
        async for item in self:
            r = callback(item)
            if asyncio.iscoroutine(r):
                await r

    @property
    def done(self) -> bool:
        """True once the stream has ended, however it ended."""
        return self._done and not self._state.items

    def __aiter__(self) -> Stream:
        return self

    async def __anext__(self) -> bytes:
        st = self._state
        core = self._core
        while True:
            if core is not None:
                # The next item with its credit owed (§8.4), in one step;
                # every `flush_every` owed credits are written at once, so
                # both ends work while the rest of the window is read.
                item = core.take_item(st)
                if item is not None:
                    return item  # type: ignore[no-any-return]
            items = st.items
            if items:  # the stream has ended (or is traced): no credit once ended
                item = items.popleft()
                if item is EOF:
                    items.appendleft(EOF)
                    raise StopAsyncIteration
                live = self._link.core
                if live is not None and not self._done:
                    live.return_credit(st, len(item))
                return item  # type: ignore[no-any-return]
            if self._error is not None:
                raise self._error
            if st.owed:  # about to wait: the sender must not wait for these
                live = self._link.core
                if live is not None and not self._done:
                    live.release_credits(st)
            fut = self._loop.create_future()
            st.item_waiter = fut
            try:
                await fut
            except asyncio.CancelledError:
                self.cancel()
                raise
            finally:
                st.item_waiter = None

    async def __aenter__(self) -> Stream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if not self._done:
            self.cancel()

    def __repr__(self) -> str:
        return f"<grid.Stream mux={self.mux_id} done={self._done}>"

    # -- internals

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error
        if self._done:
            raise Disconnected("stream closed")

    def _wake_reader(self) -> None:
        w = self._state.item_waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _finish(self, error: BaseException | None) -> None:
        """End the stream locally: record why, drop it from the table, wake everyone."""
        if self._done:
            return
        self._done = True
        self._state.fast = False
        self._eof_in = True
        if error is not None and self._error is None:
            self._error = error
        elif error is None:
            self._state.items.append(EOF)
        for t in self._timers:
            t.cancel()
        self._timers = []
        self._link.callers.pop(self.mux_id, None)
        self._ended.set_result(None)
        if self._trace is not None:
            self._trace.emit(self._link, "caller", self.mux_id, error_text(self._error))
        if not self._acked.done():
            if self._error is not None:
                self._acked.set_exception(self._error)
                self._acked.exception()  # retrieved: no "never retrieved" warning
            else:
                self._acked.set_result(None)
        self._wake_reader()
        self._credits.wake()

    def _disconnect_server(self) -> None:
        self._link.send(encode_message(self.mux_id, self._state.next_send_seq(), 0, 0,
                                       _DISCONNECT_SERVER_MUX, self._link.base, None))

    def _fail_and_disconnect(self, error: BaseException) -> None:
        if not self._done:
            self._disconnect_server()
        self._finish(error)

    def _expired(self) -> None:
        self._fail_and_disconnect(TimeoutError("grid stream deadline exceeded"))

    def _ping_tick(self) -> None:
        if self._done:
            return
        received = self._state.received
        if received != self._received_at_tick:  # items arrived since the last tick
            self._received_at_tick = received
            self._heard = self._loop.time()
        if self._loop.time() - self._heard > 2 * self._ping_interval:
            self._fail_and_disconnect(Disconnected())
            return
        self._link.send(encode_message(self.mux_id, self._state.next_send_seq(), 0, 0, _PING,
                                       self._link.base, None))
        self._timers = [t for t in self._timers if t.when() > self._loop.time()]
        self._timers.append(self._loop.call_later(self._ping_interval, self._ping_tick))

    def _check_seq(self, seq: int) -> bool:
        try:
            self._state.check_recv(seq)
        except IncorrectSequence as exc:
            self._fail_and_disconnect(exc)
            return False
        return True

    def _on_message(self, m: Any) -> None:
        op = m.op
        if op == _MUX_SERVER_MSG:
            flags = m.flags
            if m.payload is not None or flags & FLAG_PAYLOAD_IS_ERR:
                st = self._state
                if m.seq != st.recv_seq:
                    self._check_seq(m.seq)  # fails the stream with IncorrectSequence
                    return
                st.recv_seq = (st.recv_seq + 1) & 0xFFFFFFFF
                if flags & FLAG_PAYLOAD_IS_ERR:
                    self._finish(RemoteError(_text(m.payload)))
                    return
                items = st.items
                if len(items) >= self.out_capacity:
                    self._fail_and_disconnect(GridError("INTERNAL ERROR: Response was blocked"))
                    return
                items.append(m.payload)
                st.received += 1  # "heard" for the ping check, without a clock read
                tr = self._trace
                if tr is not None:
                    tr.to_caller += len(m.payload)
                self._wake_reader()
            if flags & FLAG_EOF:
                self._finish(None)
        elif op == _UNBLOCK_CL_MUX:
            st = self._state
            if m.seq != st.recv_seq:
                self._check_seq(m.seq)
                return
            st.recv_seq = (st.recv_seq + 1) & 0xFFFFFFFF
            self._credits.add(1)
        elif op == _ACK_MUX:
            if self._check_seq(m.seq):
                self._credits.add(self.in_capacity)
                if not self._acked.done():
                    self._acked.set_result(None)
        elif op == _PONG:
            try:
                pong = _payloads.Pong.decode(m.payload)
            except ProtocolError as exc:
                self._fail_and_disconnect(exc)
                return
            if pong.not_found:
                self._finish(Disconnected("remote terminated call"))
            elif pong.error is not None:
                self._finish(RemoteError(pong.error))
            else:
                self._heard = self._loop.time()
        elif op == _DISCONNECT_CLIENT_MUX:
            self._finish(RemoteError(_text(m.payload)) if m.flags & FLAG_PAYLOAD_IS_ERR
                         else Disconnected())
        elif op == _MUX_CONNECT_ERROR:
            try:
                text = _payloads.decode_mux_connect_error(m.payload)
            except ProtocolError as exc:
                text = str(exc)
            # Only an unknown handler is an UnknownHandler; a refusal such as
            # "too many open streams" is a plain RemoteError.
            self._finish(remote_unknown_handler(text, m.handler, self._link.remote))


async def open_stream(link: Link, handler_id: int, payload: bytes | None,
                      timeout: float | None, route: str | None, sub: bytes | None,
                      in_capacity: int | None, out_capacity: int | None) -> Stream:
    """Open a stream (§8.2) and wait for the callee's AckMux."""
    if not link.connected:
        raise link.down()
    check_handler_id(handler_id)
    if payload is not None:
        payload_size(payload, link.node.max_message_size, "initial stream payload", "payload")
    if timeout is not None:
        check_seconds(timeout)
    if in_capacity is None or out_capacity is None:
        local = link.registry.stream_for_caller(handler_id, route)
        if local is None:
            raise UnknownHandler(no_local_stream_text(handler_id, route))
        in_capacity = local.in_capacity if in_capacity is None else in_capacity
        out_capacity = local.out_capacity if out_capacity is None else out_capacity
    loop = link.loop
    ctx = _current.get()
    if ctx is not None:  # serving a call: its deadline bounds this stream
        timeout = inherit_deadline(ctx, timeout, loop)
    deadline_ms = 0
    deadline = None
    if timeout is not None:
        deadline_ms = min(int(timeout * 1000), MAX_DEADLINE_MS)
        if deadline_ms < 1:
            raise TimeoutError("grid stream deadline below 1 ms")
        deadline = loop.time() + timeout
    mux_id = link.ids.next()
    st = Stream(link, mux_id, in_capacity, out_capacity, deadline)
    if link.tracing:
        st._trace = StreamTrace(handler_id, route, payload)
        st._state.fast = False  # every item must be counted by the stream's own code
    link.callers[mux_id] = st
    flags = item_flags(link.base, payload)
    if in_capacity == 0:
        flags |= FLAG_EOF
    if sub is not None:
        flags |= FLAG_SUBROUTE
    link.send(encode_message(mux_id, st._state.next_send_seq(), deadline_ms, handler_id,
                             _CONNECT_MUX, flags, payload, sub))
    try:
        await st._acked
    except asyncio.CancelledError:
        st.cancel()
        raise
    return st


def on_caller_op(link: Link, m: Any) -> None:
    """A callee-originated op for the caller table (§3.4)."""
    st = link.callers.get(m.mux_id)
    if st is not None:
        st._on_message(m)
        return
    op = m.op
    if (op == _MUX_SERVER_MSG or op == _ACK_MUX) and not m.flags & FLAG_EOF or op == _PONG:
        disconnect_client(link, m.mux_id)
    # Response, MuxConnectError, UnblockClMux, DisconnectClientMux: dropped


def reset(link: Link) -> None:
    """The connection dropped: end every stream on this side (§10.3)."""
    callers, link.callers = link.callers, {}
    for st in callers.values():
        st._finish(Disconnected())
    callees, link.callees = link.callees, {}
    for srv in callees.values():
        srv.close("remote disconnected")


def _text(payload: bytes | None) -> str:
    return payload.decode("utf-8", "replace") if payload else ""
