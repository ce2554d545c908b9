"""The WebSocket frame parser, pure-Python twin (RFC 6455 §5): incoming frames
parsed incrementally, fragments reassembled, large frames received in place.
Part of :mod:`grid._codec_py`, which re-exports :class:`FrameParser` and
:func:`recv_pool_stats`.

The receive-window pool: the read window that :meth:`FrameParser.get_buffer`
hands out (:data:`RECV_WINDOW` bytes) is not owned by a parser but borrowed
from one free list shared by every parser of the process.  A parser borrows
a window when ``get_buffer`` needs one and gives it back as soon as
``buffer_updated`` has parsed the read (what a read leaves unfinished is
copied into the parser's own buffer, so nothing stays in the window), when it
fails and when it closes.  An idle connection therefore holds no window, and
one event loop, which reads one socket at a time, keeps about one window busy
however many connections it serves.  The free list keeps at most
:data:`RECV_POOL_KEEP` windows; a window given back to a full list is left to
the garbage collector.  :func:`recv_pool_stats` tells how many windows are
lent out and how many are free.
"""

from __future__ import annotations

from typing import Protocol

from grid._consts import DEFAULT_MAX_MESSAGE_SIZE, WS_CONTINUATION
from grid._envelope_py import (
    _HEAD_MAX,
    _MORE,
    _OK,
    _U16,
    _U64,
    LARGE_FRAME,
    SPLIT_FRAME,
    Buffer,
    SplitFrame,
    _split_point,
)
from grid._ws_py import apply_mask
from grid.errors import ProtocolError

# FrameParser's states (the compiled twin's ParserState enum): what it is in
# the middle of between two reads, held in its one _state field and assigned
# by every transition.
PARSER_FRAMES = 0       # between data messages; _buf may hold an unfinished frame
PARSER_FRAGMENTED = 1   # inside a fragmented data message (_frag, _frag_op)
PARSER_LARGE = 2        # receiving a large frame in place (_big, _flen, _fgot, _head, _tail, _key)
PARSER_FAILED = 3       # refused all further input (_failed); buffers released

#: Bytes in one read window of the pool (what get_buffer() hands out).
RECV_WINDOW = 262144
#: Free windows the pool keeps; one given back beyond these is freed.
RECV_POOL_KEEP = 64

_free_windows: list[bytearray] = []  # the pool's free list, used last in, first out
_lent_windows = 0                    # windows borrowed and not given back yet


def _borrow_window() -> bytearray:
    global _lent_windows
    _lent_windows += 1
    try:
        return _free_windows.pop()  # one step, so that loops in other threads may share the list
    except IndexError:
        return bytearray(RECV_WINDOW)


def _give_back_window(window: bytearray) -> None:
    global _lent_windows
    _lent_windows -= 1
    if _free_windows is not None and len(_free_windows) < RECV_POOL_KEEP:  # None: at exit
        _free_windows.append(window)


def recv_pool_stats() -> dict[str, int]:
    """The receive-window pool shared by every :class:`FrameParser` of the
    process: ``in_use`` (windows parsers hold now), ``free`` (windows kept
    for reuse), ``window`` (bytes per window) and ``keep`` (the most free
    windows kept)."""
    return {"in_use": _lent_windows, "free": len(_free_windows), "window": RECV_WINDOW,
            "keep": RECV_POOL_KEEP}


class ByteBudget(Protocol):
    """What a parser's ``budget`` is: bytes shared by many parsers."""

    limit: int

    def take(self, n: int) -> bool:
        """Add ``n`` bytes to what is held, or return False (nothing taken)
        when that would pass ``limit``."""

    def give(self, n: int) -> None:
        """``n`` bytes taken earlier are no longer held."""


class FrameParser:
    """Incremental RFC 6455 frame parser for one side of a connection.

    ``server=True`` parses what a client sends (frames must be masked);
    ``server=False`` parses what a server sends (frames must not be masked).
    Feed it bytes in any split with :meth:`feed`, or let an
    ``asyncio.BufferedProtocol`` read straight into it with
    :meth:`get_buffer` / :meth:`buffer_updated`.  Each returns a list of
    ``(opcode, payload)`` events: complete data messages (fragments
    reassembled, opcode of the first frame) and control frames (ping, pong,
    close) as they arrive.  A violation raises ProtocolError, after which the
    parser stays failed.

    The read window that :meth:`get_buffer` hands out is borrowed from a
    pool shared by all parsers and given back once :meth:`buffer_updated`
    has parsed the read, so a parser between reads holds none (see the
    module docstring).

    An unfragmented data frame of :data:`LARGE_FRAME` bytes or more is
    received into its final buffer as it arrives: while one is incomplete,
    :meth:`get_buffer` hands out that buffer's unfilled part (exactly what
    the frame still needs, so a read never runs into the next frame), and
    the work per read stays proportional to the read.  ``split_large=True``
    (keyword only) makes such a frame, and any complete unfragmented data
    frame of :data:`SPLIT_FRAME` bytes or more, arrive as a
    :class:`SplitFrame` when it holds one grid message with a non-nil
    payload, so that the message payload is copied out of the read window
    once (or, large, received in place) and decodes without a further copy;
    other frames stay plain ``bytes``.

    :attr:`budget`, when set, is shared with other parsers (a node's
    sockets): what this parser holds of messages not yet complete (a large
    frame's announced length, an unfinished frame's bytes, the fragments of
    a message so far) is taken from it once it reaches :data:`LARGE_FRAME`
    bytes, and given back as those messages complete or the parser fails or
    closes.  A large frame takes its length before its buffer is allocated;
    the rest is settled at the end of each read.  When the budget refuses,
    the parser fails with a ProtocolError (nothing of that read is
    delivered).
    """

    __slots__ = ("server", "max_message_size", "split_large", "_state", "_buf", "_frag_op", "_frag",
                 "_failed", "_recv", "_big", "_big_op", "_flen", "_fgot", "_head_len", "_head",
                 "_tail", "_key", "_view", "_budget", "_held")

    def __init__(self, server: bool, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE, *,
                 split_large: bool = False) -> None:
        if max_message_size < 0:
            raise ValueError("max_message_size must be >= 0")
        self.server = server
        self.max_message_size = max_message_size
        #: Deliver large one-message frames as SplitFrame (see the class docstring).
        self.split_large = split_large
        self._state = PARSER_FRAMES
        self._buf = bytearray()
        self._frag_op = -1  # opcode of the data message being reassembled
        self._frag = bytearray()
        self._failed: str | None = None
        # The read window borrowed from the pool, held from get_buffer() to
        # the end of the next buffer_updated() (or to failing/closing).
        self._recv: bytearray | None = None
        # The large frame in progress (PARSER_LARGE): its payload of _flen
        # bytes, _fgot of which are in, is _head (split only) + _big + _tail.
        self._big: bytearray | None = None
        self._big_op = -1
        self._flen = 0
        self._fgot = 0
        self._head_len = 0
        self._head: bytes | None = None
        self._tail = bytearray()
        self._key: bytes | None = None
        # The view of _big that get_buffer() handed out; only ever the
        # current one (dropped whenever the frame moves on).
        self._view: memoryview | None = None
        self._budget: ByteBudget | None = None
        self._held = 0  # bytes taken from _budget

    @property
    def budget(self) -> ByteBudget | None:
        """The budget shared with other parsers (see the class docstring), or None."""
        return self._budget

    @budget.setter
    def budget(self, value: ByteBudget | None) -> None:
        self._settle(0)  # what the old budget holds for this parser goes back to it
        self._budget = value
        if self._state != PARSER_FAILED and not self._settle(self._held_now()):
            raise self._fail(self._over_budget())

    @property
    def held(self) -> int:
        """Bytes this parser has taken from its budget."""
        return self._held

    def close(self) -> None:
        """Let go of every buffer (and all that the budget holds for this
        parser); the parser refuses further input, as a failed one does."""
        if self._state != PARSER_FAILED:
            self._fail("parser closed")
        self._put_window()  # one borrowed by get_buffer() after failing

    def __del__(self) -> None:
        if getattr(self, "_recv", None) is not None:
            self._put_window()

    @property
    def failed(self) -> bool:
        """True once the parser has raised; it then refuses further input."""
        return self._state == PARSER_FAILED

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """A writable buffer for ``asyncio.BufferedProtocol.get_buffer``: the
        unfilled part of a large frame's buffer while one is incomplete, else
        a 256 KiB read window borrowed from the pool."""
        self._drop_view()
        if self._state == PARSER_LARGE:
            big = self._big
            assert big is not None
            at = self._fgot - self._head_len
            if at < len(big):
                self._view = memoryview(big)[at:]
                return self._view
        recv = self._recv
        if recv is None:
            recv = self._recv = _borrow_window()
        if self._state == PARSER_LARGE:
            return memoryview(recv)[:self._flen - self._fgot]
        return memoryview(recv)

    def buffer_updated(self, nbytes: int) -> list[tuple[int, bytes | SplitFrame]]:
        """Parse the ``nbytes`` just written into :meth:`get_buffer`'s buffer;
        the read window goes back to the pool."""
        view = self._view
        recv = self._recv
        if view is None:
            # Without a window (no get_buffer() since the last read) nothing can have been read.
            if not 0 <= nbytes <= (0 if recv is None else len(recv)):
                raise ValueError(f"nbytes {nbytes} is outside the buffer")
            if recv is None:
                return self.feed(memoryview(b"")[:nbytes])
            try:
                return self.feed(memoryview(recv)[:nbytes])
            finally:
                self._put_window()
        if not 0 <= nbytes <= len(view):
            raise ValueError(f"nbytes {nbytes} is outside the buffer")
        # The bytes are in place in _big (the parser cannot have failed: that drops the view).
        k = len(view[:nbytes])
        self._drop_view()
        self._put_window()  # one left from a read into the window before feed() moved on
        if self._key is not None and k:
            at = self._fgot - self._head_len
            assert self._big is not None
            self._big[at:at + k] = apply_mask(self._big[at:at + k], self._rotated_key())
        self._fgot += k
        if self._fgot < self._flen:
            return []
        event = self._big_event()
        self._settle(self._held_now())  # gives back: never refused
        return [event]

    def _put_window(self) -> None:
        """Give the read window back to the pool, if this parser holds one."""
        recv = self._recv
        if recv is not None:
            self._recv = None
            _give_back_window(recv)

    def _drop_view(self) -> None:
        view = self._view
        if view is not None:
            self._view = None
            try:
                view.release()
            except BufferError:
                pass  # still exported (a read in progress); it stays valid

    def _fail(self, text: str) -> ProtocolError:
        self._failed = text
        self._buf = bytearray()
        self._frag = bytearray()
        self._big_clear()
        self._put_window()
        self._state = PARSER_FAILED
        self._settle(0)
        return ProtocolError(text)

    # -- the shared budget

    def _held_now(self) -> int:
        """What this parser holds of unfinished messages, as the budget
        counts it: nothing below LARGE_FRAME bytes."""
        n = len(self._buf) + len(self._frag)
        if self._state == PARSER_LARGE:
            n += self._flen
        return n if n >= LARGE_FRAME else 0

    def _settle(self, n: int) -> bool:
        """Hold ``n`` bytes of the budget (taking or giving the difference);
        False, with nothing changed, if the budget refuses."""
        budget = self._budget
        if budget is None or n == self._held:
            return True
        if n > self._held:
            if not budget.take(n - self._held):
                return False
        else:
            budget.give(self._held - n)
        self._held = n
        return True

    def _over_budget(self) -> str:
        assert self._budget is not None
        return (f"partly received messages of all sockets would hold more than the limit of "
                f"{self._budget.limit} bytes")

    def feed(self, data: Buffer) -> list[tuple[int, bytes | SplitFrame]]:
        """Add received bytes; return the events they complete."""
        if self._state == PARSER_FAILED:
            raise ProtocolError(f"parser failed earlier: {self._failed}")
        self._drop_view()
        buf = self._buf
        buf += data
        events: list[tuple[int, bytes | SplitFrame]] = []
        try:
            while True:
                if self._state == PARSER_LARGE:
                    # A large frame in progress takes what it still needs first.
                    k = min(len(buf), self._flen - self._fgot)
                    if k:
                        self._big_put(bytes(buf[:k]))
                        del buf[:k]
                    if self._fgot < self._flen:
                        break
                    events.append(self._big_event())
                more, pos = self._frames(buf)
                events += more
                if pos:
                    del buf[:pos]
                if self._state != PARSER_LARGE:
                    break
            if not self._settle(self._held_now()):
                raise self._fail(self._over_budget())
        except ProtocolError:
            raise  # _fail() already ran
        except BaseException as exc:
            # Not a protocol violation (MemoryError, an incomparable
            # max_message_size), but the place in the stream is lost all the
            # same: stay failed, as the compiled twin does.
            self._fail(f"{type(exc).__name__}: {exc}")
            raise
        return events

    # -- large frames

    def _rotated_key(self) -> bytes:
        """The mask key as it applies from the frame offset _fgot on."""
        assert self._key is not None
        r = self._fgot & 3
        return self._key[r:] + self._key[:r]

    def _begin_large(self, buf: bytearray, start: int, have: int, opcode: int, length: int,
                     masked: int) -> bool:
        """Start receiving the data frame whose payload begins at
        ``buf[start:start+have]`` (``have < length``) into its final buffer;
        False when split_large first needs more of the envelope head."""
        key = bytes(buf[start - 4:start]) if masked else None
        head: bytes | None = None
        head_len, size = 0, length
        if self.split_large:
            first = bytes(buf[start:start + min(have, _HEAD_MAX)])
            if key is not None:
                first = apply_mask(first, key)
            verdict, at, n = _split_point(first, length)
            if verdict == _MORE:
                return False
            if verdict == _OK:
                head, head_len, size = first[:at], at, n
        # Taken before the buffer exists; nothing else is held meanwhile:
        # the frame takes all the rest of the input.
        if not self._settle(length):
            raise self._fail(self._over_budget())
        big = bytearray(size)
        tail = bytearray(length - head_len - size)
        self._big, self._tail, self._head, self._key = big, tail, head, key
        self._big_op = opcode
        self._state = PARSER_LARGE
        self._flen = length
        self._fgot = self._head_len = head_len
        self._big_put(bytes(buf[start + head_len:start + have]))
        return True

    def _big_put(self, chunk: bytes) -> None:
        """Add the next ``chunk`` of the large frame's payload (still masked)."""
        big = self._big
        assert big is not None
        if self._key is not None:
            chunk = apply_mask(chunk, self._rotated_key())
        at = self._fgot - self._head_len
        m = min(len(chunk), len(big) - at) if at < len(big) else 0
        if m:
            big[at:at + m] = chunk[:m]
        if m < len(chunk):
            t = at + m - len(big)
            self._tail[t:t + len(chunk) - m] = chunk[m:]
        self._fgot += len(chunk)

    def _big_event(self) -> tuple[int, bytes | SplitFrame]:
        """The completed large frame's event; the parser lets go of it."""
        assert self._big is not None
        body = bytes(self._big)  # the pure twin's one copy; the compiled one has none
        payload: bytes | SplitFrame = body
        if self._head is not None:
            payload = SplitFrame(self._head, body, bytes(self._tail))
        op = self._big_op
        self._big_clear()
        self._state = PARSER_FRAMES
        return op, payload

    def _big_clear(self) -> None:
        self._drop_view()
        self._big = None
        self._flen = self._fgot = self._head_len = 0
        self._head = None
        self._tail = bytearray()
        self._key = None

    def _whole_large(self, payload: bytes) -> bytes | SplitFrame:
        """A complete large frame's event payload under split_large."""
        verdict, at, n = _split_point(payload[:_HEAD_MAX], len(payload))
        if verdict != _OK:
            return payload
        return SplitFrame(payload[:at], payload[at:at + n], payload[at + n:])

    def _frames(self, buf: bytearray) -> tuple[list[tuple[int, bytes | SplitFrame]], int]:
        """Parse the complete frames at the start of ``buf``; return their
        events and how many bytes they span (all of ``buf`` when it ends in a
        large frame, which is then in progress)."""
        events: list[tuple[int, bytes | SplitFrame]] = []
        pos = 0
        n = len(buf)
        while True:
            if n - pos < 2:
                break
            b0 = buf[pos]
            b1 = buf[pos + 1]
            fin = b0 & 0x80
            opcode = b0 & 0x0F
            if b0 & 0x70:
                raise self._fail("reserved bits set in frame header")
            if 3 <= opcode <= 7 or opcode >= 0xB:
                raise self._fail(f"reserved opcode 0x{opcode:x}")
            masked = b1 & 0x80
            if self.server and not masked:
                raise self._fail("unmasked client frame")
            if not self.server and masked:
                raise self._fail("masked server frame")
            length = b1 & 0x7F
            control = opcode >= 0x8
            if control:
                if not fin:
                    raise self._fail("fragmented control frame")
                if length > 125:
                    raise self._fail("oversized control frame")
            hdr = 2
            if length == 126:
                hdr = 4
                if n - pos < hdr:
                    break
                length = _U16.unpack_from(buf, pos + 2)[0]
            elif length == 127:
                hdr = 10
                if n - pos < hdr:
                    break
                length = _U64.unpack_from(buf, pos + 2)[0]
                if length >> 63:
                    raise self._fail(f"invalid 64-bit frame length {length}")
            if not control:
                if opcode == WS_CONTINUATION:
                    if self._state != PARSER_FRAGMENTED:
                        raise self._fail("stray continuation frame")
                    total = len(self._frag) + length
                else:
                    if self._state == PARSER_FRAGMENTED:
                        raise self._fail("new data frame inside a fragmented message")
                    total = length
                if total > self.max_message_size:
                    raise self._fail(
                        f"message of {total} bytes exceeds the limit of "
                        f"{self.max_message_size} bytes"
                    )
            if masked:
                hdr += 4
            if n - pos < hdr + length:
                if (n - pos >= hdr and fin and not control and opcode != WS_CONTINUATION
                        and length >= LARGE_FRAME
                        and self._begin_large(buf, pos + hdr, n - pos - hdr, opcode, length, masked)):
                    pos = n
                break
            start = pos + hdr
            payload = bytes(buf[start:start + length])
            if masked:
                payload = apply_mask(payload, buf[start - 4:start])
            pos = start + length
            if control:
                events.append((opcode, payload))
            elif opcode == WS_CONTINUATION:
                self._frag += payload
                if fin:
                    events.append((self._frag_op, bytes(self._frag)))
                    self._state = PARSER_FRAMES
                    self._frag = bytearray()
            elif fin:
                if self.split_large and length >= SPLIT_FRAME:
                    events.append((opcode, self._whole_large(payload)))
                else:
                    events.append((opcode, payload))
            else:
                self._frag_op = opcode
                self._frag = bytearray(payload)
                self._state = PARSER_FRAGMENTED
        return events, pos
