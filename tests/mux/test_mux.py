"""Mux bookkeeping (docs/protocol.md §3.4, §8.3, §8.4) on both twins: id
allocation, 32-bit sequence counters and credits."""

from __future__ import annotations

import pytest

import grid
from grid._consts import EARLY_CREDIT_ITEM_MAX
from grid.errors import GridError, IncorrectSequence

U32 = 2**32
U64 = 2**64


def test_allocator_starts_at_one(mux):
    a = mux.MuxIdAllocator()
    assert a.last == 0
    assert [a.next() for _ in range(5)] == [1, 2, 3, 4, 5]
    assert a.last == 5


def test_allocator_wraps_skipping_zero(mux):
    a = mux.MuxIdAllocator(U64 - 3)
    assert [a.next() for _ in range(5)] == [U64 - 2, U64 - 1, 1, 2, 3]
    a = mux.MuxIdAllocator(start=U64 - 1)
    assert a.last == U64 - 1
    assert a.next() == 1
    # Ids above 2**32 and 2**63 come out whole (no C truncation).
    a = mux.MuxIdAllocator(2**63 - 1)
    assert a.next() == 2**63
    assert a.last == 2**63
    a = mux.MuxIdAllocator(U32 - 1)
    assert a.next() == U32


def test_allocator_rejects_out_of_range_start(mux):
    for bad in (-1, U64, U64 + 1):
        with pytest.raises(ValueError):
            mux.MuxIdAllocator(bad)


def test_allocators_are_independent(mux):
    a, b = mux.MuxIdAllocator(), mux.MuxIdAllocator(100)
    assert (a.next(), b.next(), a.next()) == (1, 101, 2)


def test_state_defaults(mux):
    s = mux.MuxState(7)
    assert (s.mux_id, s.send_seq, s.recv_seq, s.credits) == (7, 0, 0, 0)
    s = mux.MuxState(U64 - 1, send_seq=3, recv_seq=U32 - 1, credits=5)
    assert (s.mux_id, s.send_seq, s.recv_seq, s.credits) == (U64 - 1, 3, U32 - 1, 5)
    assert "mux_id=18446744073709551615" in repr(s) and "credits=5" in repr(s)


@pytest.mark.parametrize("kwargs", [
    {"mux_id": -1}, {"mux_id": U64}, {"mux_id": 1, "send_seq": -1}, {"mux_id": 1, "send_seq": U32},
    {"mux_id": 1, "recv_seq": -1}, {"mux_id": 1, "recv_seq": U32}, {"mux_id": 1, "credits": -1},
])
def test_state_rejects_bad_values(mux, kwargs):
    with pytest.raises(ValueError):
        mux.MuxState(**kwargs)


def test_send_sequence(mux):
    s = mux.MuxState(1)
    assert [s.next_send_seq() for _ in range(4)] == [0, 1, 2, 3]
    assert s.send_seq == 4


def test_send_sequence_wraps_at_32_bits(mux):
    s = mux.MuxState(1, send_seq=U32 - 2)
    assert [s.next_send_seq() for _ in range(4)] == [U32 - 2, U32 - 1, 0, 1]
    assert s.send_seq == 2


def test_callee_receive_counter(mux):
    # The callee's receive counter starts at ConnectMux Seq + 1 (§8.2).
    s = mux.MuxState(9, send_seq=0, recv_seq=1)
    s.check_recv(1)
    s.check_recv(2)
    assert s.recv_seq == 3


def test_receive_sequence_mismatch(mux):
    s = mux.MuxState(1, recv_seq=5)
    with pytest.raises(IncorrectSequence) as ei:
        s.check_recv(7)
    err = ei.value
    assert (err.expected, err.got) == (5, 7)
    assert str(err) == "receive sequence number mismatch. want 5, got 7"
    assert isinstance(err, GridError) and isinstance(err, grid.IncorrectSequence)
    assert s.recv_seq == 5  # unchanged, so the caller can report and abort
    with pytest.raises(IncorrectSequence, match=r"^receive sequence number mismatch\. want 5, got 4$"):
        s.check_recv(4)
    s.check_recv(5)
    assert s.recv_seq == 6


def test_receive_sequence_wraps_at_32_bits(mux):
    s = mux.MuxState(1, recv_seq=U32 - 1)
    s.check_recv(U32 - 1)
    assert s.recv_seq == 0
    s.check_recv(0)
    assert s.recv_seq == 1


@pytest.mark.parametrize("got", [-1, U32, 2**63, U64 + 5])
def test_receive_sequence_out_of_range(mux, got):
    # Never reduced mod 2**32 and never accepted, whatever the C type inside.
    for start in (0, U32 - 1):
        s = mux.MuxState(1, recv_seq=start)
        with pytest.raises(IncorrectSequence) as ei:
            s.check_recv(got)
        assert (ei.value.expected, ei.value.got) == (start, got)
        assert str(ei.value) == f"receive sequence number mismatch. want {start}, got {got}"
        assert s.recv_seq == start


def test_credits(mux):
    s = mux.MuxState(1)
    assert s.take_credit() is False
    assert s.credits == 0
    assert s.add_credits(2) == 2  # AckMux with InCapacity 2 (§8.4)
    assert s.take_credit() is True
    assert s.take_credit() is True
    assert s.take_credit() is False
    assert s.credits == 0
    assert s.add_credits() == 1  # one UnblockClMux
    assert s.add_credits(0) == 1
    assert s.take_credit() is True
    with pytest.raises(ValueError):
        s.add_credits(-1)
    assert s.credits == 0


def test_credits_are_not_capped(mux):
    s = mux.MuxState(1, credits=100000)  # Trace's OutCapacity
    assert s.add_credits(U32) == 100000 + U32
    for _ in range(3):
        assert s.take_credit() is True
    assert s.credits == 100000 + U32 - 3


def test_example_trace(mux):
    # §8.8, InCapacity 2, OutCapacity 1: both sides' counters through the trace.
    caller = mux.MuxState(6)
    callee = mux.MuxState(6, recv_seq=1, credits=1)
    assert caller.next_send_seq() == 0  # 1 ConnectMux
    assert callee.next_send_seq() == 0  # 2 AckMux
    caller.check_recv(0)
    caller.add_credits(2)
    for seq in (1, 2):  # 3, 4 MuxClientMsg
        assert caller.take_credit()
        assert caller.next_send_seq() == seq
        callee.check_recv(seq)
    assert not caller.take_credit()
    assert callee.next_send_seq() == 1  # 5 UnblockClMux
    caller.check_recv(1)
    caller.add_credits()
    assert callee.take_credit() and callee.next_send_seq() == 2  # 6 MuxServerMsg
    caller.check_recv(2)
    assert caller.next_send_seq() == 3  # 7 UnblockSrvMux
    callee.check_recv(3)
    callee.add_credits()
    assert callee.next_send_seq() == 3  # 8 UnblockClMux
    caller.check_recv(3)
    assert caller.next_send_seq() == 4  # 9 EOF, no credit
    callee.check_recv(4)
    assert caller.next_send_seq() == 5  # 10 Ping
    callee.check_recv(5)
    assert callee.take_credit() and callee.next_send_seq() == 4  # 12 MuxServerMsg EOF
    caller.check_recv(4)
    assert (caller.send_seq, caller.recv_seq, callee.send_seq, callee.recv_seq) == (6, 5, 5, 6)


class _FlushCounter:
    """A ConnCore owner that records when the core asks for writes."""

    def __init__(self) -> None:
        self.scheduled = 0
        self.early: list[int] = []  # queue length at each early flush
        self.core = None

    def _schedule_flush(self) -> None:
        self.scheduled += 1

    def _flush_early(self) -> None:
        self.early.append(len(self.core.queue))
        self.core.take_frames(None)  # as a Connection does: write what is queued


@pytest.mark.parametrize("size,every", [(10, 64), (4000, 17)])
def test_a_full_write_leaves_early(mux, size, every):
    """The first queued message schedules the end-of-iteration flush; once
    EARLY_FLUSH_MESSAGES messages or EARLY_FLUSH_BYTES bytes are queued they
    are written at once, so the peer starts on them while this side goes on."""
    from grid._consts import EARLY_FLUSH_BYTES, EARLY_FLUSH_MESSAGES

    owner = _FlushCounter()
    core = mux.ConnCore(owner, False, 1 << 20, None)
    owner.core = core
    msg = grid._impl.encode_message(1, 0, 0, 1, 14, 0, b"x" * size)
    for _ in range(200):
        core.send(msg)
    want = min(EARLY_FLUSH_MESSAGES, -(-EARLY_FLUSH_BYTES // len(msg)))
    assert want == every
    assert owner.early == [every] * (200 // every)
    # After each early write the next message starts a new batch: it asks for
    # the end-of-iteration flush again (a Connection keeps its pending one).
    assert owner.scheduled == 1 + len(owner.early)
    assert len(core.queue) == 200 % every


class _CreditOwner(_FlushCounter):
    """A _FlushCounter that also records each forced write (``_flush``)."""

    def __init__(self) -> None:
        super().__init__()
        self.flushed: list[int] = []  # queue length at each forced write

    def _flush(self) -> None:
        self.flushed.append(len(self.core.queue))
        self.core.take_frames(None)


def test_credits_leave_in_batches(mux):
    """A reader's taken items owe their credits (§8.4); once flush_every are
    owed they are queued together and written at once, and release_credits
    queues what is owed before the reader waits: unblocks in sequence, the
    flush asked for once per batch, never one credit per write."""
    from collections import deque

    codec = grid._impl.codec
    owner = _CreditOwner()
    core = mux.ConnCore(owner, False, 1 << 20, None)
    owner.core = core
    st = mux.MuxState(7, send_seq=3)
    st.items = deque([b"i%d" % i for i in range(10)])
    st.capacity, st.flush_every, st.credit_op, st.fast = 16, 4, 11, True
    taken = [core.take_item(st) for _ in range(6)]
    assert taken == [b"i%d" % i for i in range(6)]
    assert owner.flushed == [4] and owner.scheduled == 1  # four unblocks, written together
    assert st.owed == 2 and core.queue == [] and st.send_seq == 7
    core.release_credits(st)  # the reader is about to wait
    assert st.owed == 0 and owner.scheduled == 2 and owner.flushed == [4]
    unblocks = [codec.decode_messages(m)[0] for m in core.queue]
    assert [(m.mux_id, m.op, m.seq, m.payload) for m in unblocks] == [
        (7, 11, 7, None), (7, 11, 8, None)]
    core.release_credits(st)  # nothing owed: nothing queued, no flush asked for
    assert len(core.queue) == 2 and owner.scheduled == 2
    st.fast = False  # ended or traced: the stream's own code takes, and owes
    assert core.take_item(st) is None and st.owed == 0
    core.return_credit(st, 2)
    assert st.owed == 1 and len(core.queue) == 2


def _stream_reader(mux, capacity: int, held: int, size: int = 0):
    """(owner, core, state) of a stream's receiving end set up by
    stream_state (as both ends of a real stream are), holding ``held``
    items b"x0", b"x1", ..., each padded with dots to ``size`` bytes."""
    from grid._stream_flow import stream_state

    owner = _CreditOwner()
    core = mux.ConnCore(owner, False, 1 << 20, None)
    owner.core = core
    st = stream_state(mux.MuxState(7), capacity, 11, 14)
    st.items.extend((b"x%d" % i).ljust(size, b".") for i in range(held))
    return owner, core, st


@pytest.mark.parametrize("capacity, held, batch", [
    (64, 64, 16), (256, 256, 64), (16, 16, 4),  # a reader behind its sender: a quarter window
    (64, 12, 8), (64, 20, 10), (16, 3, 2),      # a reader that keeps up: half that, or sooner
    (1, 1, 1), (7, 7, 1)])
def test_stream_credit_batches_follow_the_reader(mux, capacity, held, batch):
    """A stream's reader owes the credits of taken items until a quarter of
    its window is owed, then writes them together; a reader that holds few
    items writes them once an eighth of the window is owed and it has taken
    at least as many items as it still holds, so the sender works while it
    reads the rest."""
    owner, core, st = _stream_reader(mux, capacity, held)
    for _ in range(batch - 1):
        assert core.take_item(st) is not None
    assert owner.flushed == [] and st.owed == batch - 1
    assert core.take_item(st) == b"x%d" % (batch - 1)
    assert owner.flushed == [batch] and st.owed == 0


@pytest.mark.parametrize("taker", ["take_item", "return_credit"])
@pytest.mark.parametrize("size, batch", [(EARLY_CREDIT_ITEM_MAX - 1, 10), (EARLY_CREDIT_ITEM_MAX, 16)])
def test_stream_credits_of_large_items_wait_for_a_full_batch(mux, taker, size, batch):
    """Items of EARLY_CREDIT_ITEM_MAX bytes or more keep both ends busy: a
    reader that keeps up with its sender still writes their credits a
    quarter window at a time, while a smaller item's leave once half that
    is owed and no more items are held than owed; the same whether the
    core takes the item or the stream's own code does (return_credit)."""
    owner, core, st = _stream_reader(mux, 64, 20, size)

    def take() -> bytes:
        if taker == "take_item":
            return core.take_item(st)
        st.fast = False  # ended or traced: the stream's own code takes, and owes
        item = st.items.popleft()
        core.return_credit(st, len(item))
        return item

    for i in range(batch - 1):
        assert take().startswith(b"x%d." % i)
    assert owner.flushed == [] and st.owed == batch - 1
    assert len(take()) == size
    assert owner.flushed == [batch] and st.owed == 0


def test_stream_credits_wait_for_a_full_batch_while_other_messages_are_queued(mux):
    """A reader whose connection has other messages queued (a handler
    sending replies) keeps its credits until a quarter window is owed, or
    until it is about to wait: they then leave with the queued messages."""
    owner, core, st = _stream_reader(mux, 64, 12)
    core.send(grid._impl.codec.encode_message(9, 0, 0, 1, 14, 0, b"reply"))
    for _ in range(12):
        assert core.take_item(st) is not None
    assert owner.flushed == [] and st.owed == 12 and len(core.queue) == 1
    core.release_credits(st)  # the reader is about to wait
    assert st.owed == 0 and len(core.queue) == 13


@pytest.mark.parametrize("masked", [False, True], ids=["server", "client"])
def test_credits_leave_in_one_write_of_the_core(mux, loop_kind, masked):
    """While the owner lets the core write (``ready``: a live, unpaused
    transport), a batch of owed credits and whatever else is queued leave in
    one write of the core's own, without the owner's flush; past the write
    buffer limit the owner's flush is called (to fail the wire)."""
    import asyncio
    import socket
    from collections import deque

    from support import run

    codec = grid._impl.codec
    key = b"\x01\x02\x03\x04"

    async def main() -> None:
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        transport, _ = await loop.create_connection(asyncio.Protocol, sock=a)
        try:
            owner = _CreditOwner()
            core = mux.ConnCore(owner, False, 1 << 20, None)
            owner.core = core
            core.ready = transport
            core.mask_key = (lambda: key) if masked else None
            st = mux.MuxState(7, send_seq=3)
            st.items = deque([b"i%d" % i for i in range(10)])
            st.capacity, st.flush_every, st.credit_op, st.fast = 16, 4, 11, True
            other = codec.encode_message(9, 0, 0, 1, 14, 0, b"queued first")
            core.send(other)
            assert [core.take_item(st) for _ in range(4)] == [b"i%d" % i for i in range(4)]
            assert core.queue == [] and owner.flushed == [] and st.owed == 0
            want = codec.encode_frames([other] + [
                codec.encode_message(7, seq, 0, 0, 11, 0, None) for seq in range(3, 7)],
                key if masked else None)
            got = b""
            b.setblocking(False)
            while len(got) < len(want):
                await asyncio.sleep(0.001)
                try:
                    got += b.recv(65536)
                except BlockingIOError:
                    pass
            assert got == want
            core.write_limit = -1  # the transport holds more than the owner allows
            assert [core.take_item(st) for _ in range(4)] == [b"i%d" % i for i in range(4, 8)]
            assert owner.flushed == [0]  # written, then the owner told
        finally:
            transport.close()
            b.close()

    run(loop_kind, main)


class _Recorder:
    """A ConnCore owner that keeps what reaches it."""

    def __init__(self) -> None:
        self.got: list = []
        self.calls: list = []

    def _on_message(self, m) -> None:
        self.got.append(m)

    def _schedule_flush(self) -> None:
        pass

    def _call(self, handler_id, payload, timeout, subroute):
        self.calls.append(handler_id)
        return "deferred"


class _Entry:
    is_async = False
    route = None

    def __init__(self) -> None:
        self.payloads: list = []

    def fn(self, payload):
        self.payloads.append(payload)
        return b"ok"


class _Stream:
    def __init__(self, state) -> None:
        self.got: list = []
        self._state = state  # not `fast`: every item goes to _on_message

    def _on_message(self, m) -> None:
        self.got.append(m)


def test_attach_configures_and_detach_hands_back(mux):
    """One attach() call gives the core everything it serves a connection
    with; detach() hands it back to its wire, which then gets every message."""
    import asyncio

    codec = grid._impl.codec
    wire, conn = _Recorder(), _Recorder()
    core = mux.ConnCore(wire, True, 1 << 20, grid.handlers._current)
    request = codec.encode_message(7, 0, 0, 5, 14, 0, b"q")
    core.feed_message(request)  # before attach: nothing runs inline
    assert [m.mux_id for m in wire.got] == [7] and core.queue == []

    loop = asyncio.new_event_loop()
    try:
        entry, stream = _Entry(), _Stream(mux.MuxState(9))
        ids = mux.MuxIdAllocator(41)
        core.attach(conn, caller="http://peer:1", base_flags=1, ids=ids, loop=loop,
                    singles={5: entry}, singles_sub={}, callers={9: stream}, callees={},
                    default_timeout=3.0, queue_limit=100, sweep_at=float("inf"))
        assert (core.owner, core.caller, core.base_flags, core.ids, core.loop) == (
            conn, "http://peer:1", 1, ids, loop)
        assert (core.default_timeout, core.queue_limit, core.open_calls) == (3.0, 100, False)
        core.feed_message(request)  # a sync handler runs inline, its reply queued
        assert entry.payloads == [b"q"] and len(core.queue) == 1
        reply = codec.decode_messages(core.queue[0])[0]
        assert (reply.mux_id, reply.op, reply.flags & 1, reply.payload) == (7, 15, 1, b"ok")
        item = codec.encode_message(9, 0, 0, 0, 10, 0x01, b"i")
        core.feed_message(item)  # stream traffic goes to the stream
        assert [m.mux_id for m in stream.got] == [9] and conn.got == []

        core.detach(wire)
        assert core.owner is wire and core.queue == [] and core.queued_bytes == 0
        assert core.callers is None and core.callees is None and not core.open_calls
        core.feed_message(item)  # no stream table: the wire gets it
        assert [m.mux_id for m in wire.got] == [7, 9] and len(stream.got) == 1
        assert core.call(5, b"x", None, None) == "deferred" and wire.calls == [5]
    finally:
        loop.close()


@pytest.mark.parametrize("key", ["pool", "custom", "server"])
def test_a_direct_write_is_one_frame(mux, key):
    """On a quiet connection the first queued message leaves at once, over
    the socket, as one frame: masked with a key of the codec's pool or of
    whatever ``mask_key`` callable the core has, unmasked for a server."""
    import asyncio

    codec = grid._codec_py if mux is grid._mux_py else grid._impl.codec
    fixed = b"\x11\x22\x33\x44"
    msg = codec.encode_message(3, 0, 1000, 5, 14, 0, b"p" * 300)
    masked = key != "server"

    async def main() -> bytes:
        received: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            received.set_result(await reader.readexactly(4 + (4 if masked else 0) + len(msg)))
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        core = mux.ConnCore(_Recorder(), False, 1 << 20, None)
        core.loop = asyncio.get_running_loop()
        core.mask_key = {"pool": codec.mask_key, "custom": lambda: fixed, "server": None}[key]
        core.direct = writer.transport
        core.send(msg)
        assert core.direct is None and core.queue == [] and core.queued_bytes == 0
        data = await received
        assert (core.msgs_out, core.bytes_out) == (1, len(data))
        writer.close()
        server.close()
        await server.wait_closed()
        return data

    data = asyncio.run(main())
    if key == "pool":
        assert data[1] & 0x80 and codec.FrameParser(True).feed(data) == [(2, msg)]
    else:
        assert data == codec.encode_frames([msg], fixed if masked else None)


def test_request_deadlines_are_on_time_monotonic(mux):
    """A request's deadline is kept on time.monotonic(), whichever way the
    core reads that clock: expire() names it, between the readings taken
    around the call."""
    import asyncio
    import time

    core = mux.ConnCore(_Recorder(), False, 1 << 20, None)
    loop = asyncio.new_event_loop()
    try:
        core.attach(_Recorder(), caller="http://peer:1", base_flags=0, ids=mux.MuxIdAllocator(),
                    loop=loop, singles={}, singles_sub={}, callers={}, callees={},
                    default_timeout=3.0, queue_limit=100, sweep_at=float("inf"))
        before = time.monotonic()
        assert core.request(loop.create_future(), 5, b"q", 40.0, None) == 1
        after = time.monotonic()
        assert before + 40.0 <= core.expire() <= after + 40.0
        assert len(core.queue) == 1 and list(core.pending) == [1]
    finally:
        loop.close()
