"""The callee's end of streams (docs/protocol.md §8): what a stream handler
is (:class:`StreamHandler`, :class:`StreamContext`), where it sends its
replies (:class:`StreamOut`) and reads the caller's items, and the state of
each stream this node serves, from the caller's OpConnectMux
(:func:`serve_connect`) to its end.

The callee buffers at most ``in_capacity`` items per stream and sends a
reply only with a credit from the caller.  grid.stream re-exports the
public names; the flow control both ends share is grid._stream_flow.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Union

from grid import _payloads
from grid._checks import payload_size
from grid._consts import (
    FLAG_EOF,
    FLAG_PAYLOAD_IS_ERR,
    FLAG_STATELESS,
    LARGE_MESSAGE,
    Op,
)
from grid._impl import MuxState, encode_message
from grid._link import Link
from grid._stream_flow import EOF, Credits, StreamTrace, disconnect_client, item_flags, stream_state
from grid.errors import (
    CANCELED_TEXT,
    DEADLINE_TEXT,
    SHUTTING_DOWN_TEXT,
    IncorrectSequence,
    RemoteError,
)
from grid.handlers import CallContext, _current, no_input_text, unknown_handler_text

__all__ = ["StreamContext", "StreamHandler", "StreamHandlerFn", "StreamOut", "on_callee_op",
           "serve_connect"]

_DISCONNECT_SERVER_MUX = int(Op.DISCONNECT_SERVER_MUX)
_MUX_CLIENT_MSG = int(Op.MUX_CLIENT_MSG)
_MUX_SERVER_MSG = int(Op.MUX_SERVER_MSG)
_UNBLOCK_SRV_MUX = int(Op.UNBLOCK_SRV_MUX)
_UNBLOCK_CL_MUX = int(Op.UNBLOCK_CL_MUX)
_ACK_MUX = int(Op.ACK_MUX)
_PING = int(Op.PING)
_PONG = int(Op.PONG)

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
                            item_flags(link.base, item), item, None)
        else:
            core = link.core
            if core is not None:
                if item is None:
                    item = b""
                core.send_message(srv.mux_id, srv.state.next_send_seq(), 0, 0, _MUX_SERVER_MSG,
                                  item_flags(link.base, item), item)
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
                if item is EOF:
                    items.appendleft(EOF)
                    raise StopAsyncIteration
                live = srv.link.core
                if live is not None:
                    live.return_credit(st, len(item))
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
        self.state = st = stream_state(
            MuxState(m.mux_id, m.seq, (m.seq + 1) & 0xFFFFFFFF, max(handler.out_capacity, 1)),
            handler.in_capacity, _UNBLOCK_CL_MUX, _MUX_SERVER_MSG)
        self.core = link.core  # this connection's core (the stream ends with it)
        self.credits = Credits(st, self.loop)
        self.sent: asyncio.Future[None] = self.loop.create_future()  # StreamOut.send's "done"
        self.sent.set_result(None)
        self.input_done = handler.in_capacity == 0
        self.closed: str | None = None  # why the stream ended, once it has
        self.task: asyncio.Task[None] | None = None
        self.last_ping = self.loop.time()
        self.timers: list[asyncio.TimerHandle] = []
        self.trace: StreamTrace | None = None  # set by serve_connect while tracing
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
            disconnect_client(self.link, self.mux_id)
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
                    self.state.items.append(EOF)
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
            StreamTrace(m.handler, route, m.payload).emit(link, "callee", m.mux_id, refused)
        return
    srv = _ServerStream(link, m, handler)
    if link.tracing:
        srv.trace = StreamTrace(m.handler, handler.subroute or None, m.payload)
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
        disconnect_client(link, m.mux_id)
    # UnblockSrvMux / DisconnectServerMux for an unknown mux: dropped
