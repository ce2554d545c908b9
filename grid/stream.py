"""Streams (docs/protocol.md §8): the caller's :class:`Stream`, the callee's
stream state, and the credit-based flow control between them.

Both sides keep one :class:`~grid._impl.MuxState` per stream for sequence
numbers and send credits.  Every buffer is bounded by the capacities both
sides agree on: the caller buffers at most ``max(out_capacity, 1)`` replies,
the callee at most ``in_capacity`` inputs; a sender without credit waits.
Streams reach their connection only through its :class:`~grid._link.Link`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Union

from grid import _payloads
from grid._consts import (
    FLAG_EOF,
    FLAG_PAYLOAD_IS_ERR,
    FLAG_PAYLOAD_IS_ZERO,
    FLAG_STATELESS,
    FLAG_SUBROUTE,
    LARGE_MESSAGE,
    MAX_DEADLINE_MS,
    Op,
)
from grid._impl import MuxState, encode_message
from grid.errors import (
    SHUTTING_DOWN_TEXT,
    Disconnected,
    GridError,
    IncorrectSequence,
    ProtocolError,
    RemoteError,
    UnknownHandler,
)
from grid._checks import check_seconds, payload_size
from grid._link import Link
from grid.errors import CANCELED_TEXT, DEADLINE_TEXT
from grid.handlers import (
    CallContext,
    _current,
    check_handler_id,
    inherit_deadline,
    no_input_text,
    no_local_stream_text,
    remote_unknown_handler,
    unknown_handler_text,
)
from grid.trace import CallTrace, TraceSide, error_text

__all__ = ["StreamHandler", "StreamContext", "StreamOut", "Stream", "StreamHandlerFn"]

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

_EOF = object()  # marks the end of a queue of items
_RETURNED = "handler returned"  # why a stream whose handler ended is closed


class StreamContext(CallContext):
    """What a stream handler knows about the stream it serves (see
    :class:`grid.CallContext`); also returned by :func:`grid.current_call`
    inside the handler."""

    __slots__ = ()


#: ``async def handle(ctx, payload, inbound, out)``; ``inbound`` is None when
#: the handler takes no input stream (``in_capacity=0``).
StreamHandlerFn = Callable[
    [StreamContext, Union[bytes, None], Union[AsyncIterator[bytes], None], "StreamOut"],
    Awaitable[None],
]


class StreamHandler:
    """A stream handler and the capacities both ends of its streams use.

    :param handle: ``async def handle(ctx, payload, inbound, out) -> None``.
        Returning ends the stream with EOF; raising :class:`grid.RemoteError`
        ends it with that error text (any other exception is logged and sent
        as ``"<Type>: <text>"``).
    :param subroute: static subroute (``"disk/1"``), ``""`` for none.
    :param in_capacity: caller→callee items in flight; 0 = no input stream.
    :param out_capacity: callee→caller items in flight (values < 1 mean 1).

    The caller reads the capacities from its own registration of the same
    handler id, as Go does, so register stream handlers on every node (or pass
    the capacities to ``new_stream``).
    """

    def __init__(self, handle: StreamHandlerFn, *, subroute: str = "", in_capacity: int = 0,
                 out_capacity: int = 1) -> None:
        if in_capacity < 0:
            raise ValueError("in_capacity must be >= 0")
        self.handle = handle
        self.subroute = subroute
        self.in_capacity = in_capacity
        self.out_capacity = out_capacity


class _StreamTrace:
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


def _item_flags(base: int, payload: bytes | None) -> int:
    return base | FLAG_PAYLOAD_IS_ZERO if payload is not None and len(payload) == 0 else base


def _stream_state(st: Any, capacity: int, credit_op: int, item_op: int) -> Any:
    """Set up ``st`` (a MuxState) as one side of a stream that receives up to
    ``capacity`` items: the receiving end lives there, where the compiled core
    reads it (ConnCore.take_item / send_item and its dispatch).  Credits of
    taken items are owed until a quarter window's worth is, then written at
    once, so the sender gets them back while the rest is read and sends in
    batches of at least that size (not one item per write); whatever is
    still owed is queued when the reader is about to wait.  ``fast`` stays
    True until the stream ends or is traced."""
    st.items = deque()
    st.capacity = capacity
    st.flush_every = max(1, capacity // 4)
    st.credit_op = credit_op
    st.item_op = item_op
    st.fast = True
    return st


class _Credits:
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


# ============================================================== caller side


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
        self._state = st = _stream_state(MuxState(mux_id), self.out_capacity, _UNBLOCK_SRV_MUX,
                                         _MUX_CLIENT_MSG)
        self._core = link.core  # this connection's core (the stream ends with it)
        self._credits = _Credits(st, self._loop)
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
        self._trace: _StreamTrace | None = None  # set by open_stream while tracing
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
                            _item_flags(link.base, item), item, None)
        else:
            core = link.core
            if core is not None:
                core.send_message(self.mux_id, st.next_send_seq(), 0, 0, _MUX_CLIENT_MSG,
                                  _item_flags(link.base, item), item)
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
                if item is _EOF:
                    items.appendleft(_EOF)
                    raise StopAsyncIteration
                live = self._link.core
                if live is not None and not self._done:
                    live.return_credit(st)
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
            self._state.items.append(_EOF)
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
        st._trace = _StreamTrace(handler_id, route, payload)
        st._state.fast = False  # every item must be counted by the stream's own code
    link.callers[mux_id] = st
    flags = _item_flags(link.base, payload)
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


# ============================================================== callee side


class StreamOut:
    """Where a stream handler sends its replies."""

    __slots__ = ("_srv",)

    def __init__(self, srv: _ServerStream) -> None:
        self._srv = srv

    def send(self, item: bytes) -> Awaitable[None]:
        """Send one reply to the caller; waits for credit from it.

        Await the result (``await out.send(item)``): an item that can leave
        at once (stream open, credit in hand) is queued by the call itself
        and the awaitable is already done, so the usual case creates no
        coroutine; otherwise the awaitable waits for credit and sends."""
        srv = self._srv
        core = srv.core
        if core is not None and core.send_item(srv.state, item):  # open, credit in hand: sent
            return srv.sent
        return self._send(item)

    async def _send(self, item: bytes) -> None:
        srv = self._srv
        payload_size(item, srv.link.node.max_message_size, "stream item", "item")
        if srv.closed is not None or not srv.state.take_credit():  # fast path: credit in hand
            await srv.credits.take(srv.check_open)
        link = srv.link
        if type(item) is bytes and len(item) >= LARGE_MESSAGE:  # framed off the loop
            link.send_large(srv.mux_id, srv.state.next_send_seq(), 0, 0, _MUX_SERVER_MSG,
                            _item_flags(link.base, item), item, None)
        else:
            core = link.core
            if core is not None:
                if item is None:
                    item = b""
                core.send_message(srv.mux_id, srv.state.next_send_seq(), 0, 0, _MUX_SERVER_MSG,
                                  _item_flags(link.base, item), item)
        tr = srv.trace
        if tr is not None and item is not None:
            tr.to_caller += len(item)


class _Inbound:
    """The handler's async iterator over the caller's items."""

    __slots__ = ("_srv",)

    def __init__(self, srv: _ServerStream) -> None:
        self._srv = srv

    def __aiter__(self) -> _Inbound:
        return self

    async def __anext__(self) -> bytes:
        srv = self._srv
        st = srv.state
        core = srv.core
        while True:
            if core is not None:
                # Handed to the handler with the caller's credit owed (§8.4).
                item = core.take_item(st)
                if item is not None:
                    return item  # type: ignore[no-any-return]
            items = st.items
            if items:  # the end marker, or a stream that is closed or traced
                item = items.popleft()
                if item is _EOF:
                    items.appendleft(_EOF)
                    raise StopAsyncIteration
                live = srv.link.core
                if live is not None:
                    live.return_credit(st)
                return item  # type: ignore[no-any-return]
            srv.check_open()
            if st.owed:  # about to wait: the caller must not wait for these
                live = srv.link.core
                if live is not None:
                    live.release_credits(st)
            fut = srv.loop.create_future()
            st.item_waiter = fut
            try:
                await fut
            finally:
                st.item_waiter = None


class _ServerStream:
    """The callee's state of one stream."""

    def __init__(self, link: Link, m: Any, handler: StreamHandler) -> None:
        self.link = link
        self.loop = link.loop
        self.mux_id = m.mux_id
        self.handler = handler
        # Callee counters start from the ConnectMux Seq (§8.2).
        self.state = st = _stream_state(
            MuxState(m.mux_id, m.seq, (m.seq + 1) & 0xFFFFFFFF, max(handler.out_capacity, 1)),
            handler.in_capacity, _UNBLOCK_CL_MUX, _MUX_SERVER_MSG)
        self.core = link.core  # this connection's core (the stream ends with it)
        self.credits = _Credits(st, self.loop)
        self.sent: asyncio.Future[None] = self.loop.create_future()  # StreamOut.send's "done"
        self.sent.set_result(None)
        self.input_done = handler.in_capacity == 0
        self.closed: str | None = None  # why the stream ended, once it has
        self.task: asyncio.Task[None] | None = None
        self.last_ping = self.loop.time()
        self.timers: list[asyncio.TimerHandle] = []
        self.trace: _StreamTrace | None = None  # set by serve_connect while tracing
        self.error: str | None = None  # the handler's error text, once it has ended

    def check_open(self) -> None:
        if self.closed is not None:
            raise asyncio.CancelledError(self.closed)

    def wake(self) -> None:
        w = self.state.item_waiter
        if w is not None and not w.done():
            w.set_result(None)

    def close(self, why: str) -> None:
        """Forget this stream and cancel its handler."""
        if self.closed is not None:
            return
        self.closed = why
        self.state.fast = False
        self.link.callees.pop(self.mux_id, None)
        if self.trace is not None:
            self.trace.emit(self.link, "callee", self.mux_id,
                            self.error if why == _RETURNED else why)
        for t in self.timers:
            t.cancel()
        self.timers = []
        self.wake()
        self.credits.wake()
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def abort(self, text: str) -> None:
        """Protocol abort (§8.5): error to the caller without credit, then close."""
        if self.closed is None:
            self.link.send(encode_message(self.mux_id, self.state.next_send_seq(), 0, 0,
                                          _MUX_SERVER_MSG,
                                          self.link.base | FLAG_EOF | FLAG_PAYLOAD_IS_ERR,
                                          text.encode()))
        self.close(text)

    def disconnect(self, why: str) -> None:
        """End from the callee side without a final message (deadline, liveness)."""
        if self.closed is None:
            _disconnect_client(self.link, self.mux_id)
        self.close(why)

    def liveness_tick(self) -> None:
        if self.closed is not None:
            return
        interval = self.link.node.stream_ping_interval
        if self.loop.time() - self.last_ping > 4 * interval:
            self.disconnect("no ping from caller")
            return
        self.timers = [t for t in self.timers if t.when() > self.loop.time()]
        self.timers.append(self.loop.call_later(interval, self.liveness_tick))

    async def run(self, ctx: StreamContext, payload: bytes | None) -> None:
        inbound = None if self.handler.in_capacity == 0 else _Inbound(self)
        out = StreamOut(self)
        err: str | None = None
        try:
            await self.handler.handle(ctx, payload, inbound, out)
        except asyncio.CancelledError:
            if self.closed is not None:
                return  # we were told to stop
            err = CANCELED_TEXT
        except RemoteError as exc:
            err = exc.message
        except Exception as exc:
            self.link.log_failure("stream handler", ctx.handler_id, exc)
            err = f"{type(exc).__name__}: {exc}"
        if self.closed is not None:
            return
        self.error = err
        # The final message costs a credit like any other (§8.4).
        try:
            await self.credits.take(self.check_open)
        except asyncio.CancelledError:
            return
        flags = self.link.base | FLAG_EOF
        body = None
        if err is not None:
            flags |= FLAG_PAYLOAD_IS_ERR
            body = err.encode("utf-8", "replace")
        self.link.send(encode_message(self.mux_id, self.state.next_send_seq(), 0, 0,
                                      _MUX_SERVER_MSG, flags, body))
        self.close(_RETURNED)

    def on_message(self, m: Any) -> None:
        op = m.op
        if op == _MUX_CLIENT_MSG:
            try:
                self.state.check_recv(m.seq)
            except IncorrectSequence as exc:
                self.abort(str(exc))
                return
            if m.flags & FLAG_EOF:
                if not self.input_done:
                    self.input_done = True
                    self.state.capacity = 0  # nothing more for the core to take in
                    self.state.items.append(_EOF)
                    self.wake()
                return
            if self.input_done:
                self.abort("did not expect inbound message")
                return
            if len(self.state.items) >= self.handler.in_capacity:
                self.abort("handler blocked")
                return
            self.state.items.append(m.payload if m.payload is not None else b"")
            self.wake()
            tr = self.trace
            if tr is not None and m.payload is not None:
                tr.to_callee += len(m.payload)
        elif op == _UNBLOCK_SRV_MUX:
            st = self.state
            if m.seq != st.recv_seq:
                self.abort(str(IncorrectSequence(st.recv_seq, m.seq)))
                return
            st.recv_seq = (st.recv_seq + 1) & 0xFFFFFFFF
            st.credits += 1
            w = st.waiter
            if w is not None and not w.done():
                w.set_result(None)
        elif op == _DISCONNECT_SERVER_MUX:
            self.close(CANCELED_TEXT)
        elif op == _PING:
            err = None
            try:
                self.state.check_recv(m.seq)
            except IncorrectSequence as exc:
                err = str(exc)
                self.abort(err)
            if err is None and self.closed is not None:
                err = self.closed
            self.last_ping = self.loop.time()
            _send_pong(self.link, m, False, err)


def _send_pong(link: Link, m: Any, not_found: bool, err: str | None) -> None:
    # Mux pings carry no time, so the pong echoes Go's zero time (E8).
    link.reply(m, _PONG, _payloads.Pong(not_found, err, _payloads.GO_ZERO_TIME_NS).encode())


def serve_connect(link: Link, m: Any) -> None:
    """Handle an incoming OpConnectMux (§8.2)."""
    if m.mux_id in link.callees:
        return  # a duplicate id keeps the existing stream (§3.4)
    if m.flags & FLAG_STATELESS:
        link.reply_mux_error(m, "Stateless streams not supported")
        return
    handler = link.registry.stream(m.handler, m.subroute)
    refused = None
    if handler is None:
        refused = unknown_handler_text(m.handler, m.subroute)
    elif link.node.draining:
        refused = SHUTTING_DOWN_TEXT
    elif len(link.callees) >= link.node.max_streams:
        refused = "too many open streams"
    elif m.flags & FLAG_EOF and handler.in_capacity > 0:
        # The caller sends no input (its in_capacity is 0): the handler would
        # wait for input until the deadline.  Go ignores the flag (§8.2).
        refused = no_input_text(m.handler, handler)
    if refused is not None:
        link.reply_mux_error(m, refused)
        if link.tracing:
            route = (handler.subroute or None) if handler is not None else (
                None if m.subroute is None else bytes(m.subroute).hex())
            _StreamTrace(m.handler, route, m.payload).emit(link, "callee", m.mux_id, refused)
        return
    srv = _ServerStream(link, m, handler)
    if link.tracing:
        srv.trace = _StreamTrace(m.handler, handler.subroute or None, m.payload)
        srv.state.fast = False  # every item must be counted by the stream's own code
    link.callees[m.mux_id] = srv
    link.send(encode_message(m.mux_id, srv.state.next_send_seq(), 0, 0, _ACK_MUX, link.base,
                              None))
    loop = link.loop
    deadline = loop.time() + m.deadline_ms / 1000 if m.deadline_ms else None
    ctx = StreamContext(link.remote, m.handler, handler.subroute or None, m.mux_id, deadline)
    token = _current.set(ctx)
    try:
        srv.task = loop.create_task(srv.run(ctx, m.payload))
    finally:
        _current.reset(token)
    link.tasks.add(srv.task)
    srv.task.add_done_callback(link.tasks.discard)
    if deadline is not None:
        srv.timers.append(loop.call_at(deadline, srv.disconnect, DEADLINE_TEXT))
    interval = link.node.stream_ping_interval
    if m.deadline_ms == 0 or m.deadline_ms > 4 * interval * 1000:
        srv.timers.append(loop.call_later(interval, srv.liveness_tick))


def on_callee_op(link: Link, m: Any) -> None:
    """A caller-originated op for the callee table (§3.4)."""
    srv = link.callees.get(m.mux_id)
    if srv is not None:
        srv.on_message(m)
        return
    op = m.op
    if op == _PING:
        _send_pong(link, m, True, None)
    elif op == _MUX_CLIENT_MSG:
        _disconnect_client(link, m.mux_id)
    # UnblockSrvMux / DisconnectServerMux for an unknown mux: dropped


def on_caller_op(link: Link, m: Any) -> None:
    """A callee-originated op for the caller table (§3.4)."""
    st = link.callers.get(m.mux_id)
    if st is not None:
        st._on_message(m)
        return
    op = m.op
    if (op == _MUX_SERVER_MSG or op == _ACK_MUX) and not m.flags & FLAG_EOF or op == _PONG:
        _disconnect_client(link, m.mux_id)
    # Response, MuxConnectError, UnblockClMux, DisconnectClientMux: dropped


def _disconnect_client(link: Link, mux_id: int) -> None:
    link.send(encode_message(mux_id, 0, 0, 0, _DISCONNECT_CLIENT_MUX, link.base, None))


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
