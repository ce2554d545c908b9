"""The receive-window pool of each twin's FrameParser, byte strings only:
when a window is borrowed and when it goes back (the socket-level checks are
in tests/reliability/test_recv_pool_sockets.py)."""

from __future__ import annotations

import gc

import pytest

from grid.errors import ProtocolError


def _lent(codec) -> int:
    return codec.recv_pool_stats()["in_use"]


def _read(p, data: bytes) -> list:
    buf = p.get_buffer(-1)
    buf[:len(data)] = data
    return p.buffer_updated(len(data))


def test_borrowed_for_one_read(codec) -> None:
    gc.collect()
    lent = _lent(codec)
    p = codec.FrameParser(server=False)
    assert _lent(codec) == lent  # a new parser holds no window
    buf = p.get_buffer(-1)
    assert len(buf) == codec.recv_pool_stats()["window"] == 262144
    assert _lent(codec) == lent + 1
    assert p.get_buffer(-1) is not None and _lent(codec) == lent + 1  # the same window again
    buf[:7] = b"\x82\x05hello"
    assert p.buffer_updated(7) == [(2, b"hello")]
    assert _lent(codec) == lent
    # Half a frame: its bytes stay in the parser, the window goes back.
    assert _read(p, b"\x82\x05he") == []
    assert _lent(codec) == lent
    assert _read(p, b"llo\x82\x01!") == [(2, b"hello"), (2, b"!")]
    assert _lent(codec) == lent


def test_windows_are_shared(codec) -> None:
    a, b = codec.FrameParser(server=False), codec.FrameParser(server=False)
    assert _read(a, b"\x82\x04ab") == []
    free = codec.recv_pool_stats()["free"]
    assert free >= 1
    # b borrows what a gave back; a's unfinished frame is not in it.
    buf = b.get_buffer(-1)
    assert codec.recv_pool_stats()["free"] == free - 1
    buf[:3] = b"\x82\x01x"
    assert b.buffer_updated(3) == [(2, b"x")]
    assert codec.recv_pool_stats()["free"] == free
    assert _read(a, b"cd") == [(2, b"abcd")]


def test_no_window_no_bytes(codec) -> None:
    p = codec.FrameParser(server=False)
    assert p.buffer_updated(0) == []
    with pytest.raises(ValueError, match="nbytes 1 is outside the buffer"):
        p.buffer_updated(1)


@pytest.mark.parametrize("how", ["close", "fail", "drop", "failed-then-read"])
def test_window_goes_back(codec, how: str) -> None:
    gc.collect()
    lent = _lent(codec)
    p = codec.FrameParser(server=False)
    buf = p.get_buffer(-1)
    assert _lent(codec) == lent + 1
    if how == "close":
        p.close()
    elif how == "fail":
        buf[:2] = b"\x83\x00"  # reserved opcode
        with pytest.raises(ProtocolError, match="reserved opcode"):
            p.buffer_updated(2)
    elif how == "drop":
        del buf, p
        gc.collect()
    else:
        p.close()
        p.get_buffer(-1)  # an event loop may still ask a failed parser for a buffer
        assert _lent(codec) == lent + 1
        with pytest.raises(ProtocolError, match="parser failed earlier"):
            p.buffer_updated(1)
    assert _lent(codec) == lent


def test_free_list_is_bounded(codec) -> None:
    keep = codec.recv_pool_stats()["keep"]
    parsers = [codec.FrameParser(server=False) for _ in range(keep + 8)]
    for p in parsers:
        p.get_buffer(-1)
    for p in parsers:
        p.close()
    assert codec.recv_pool_stats()["free"] == keep
