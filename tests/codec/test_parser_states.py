"""FrameParser's explicit state machine, seen through the pure twin's _state
(the compiled twin holds the same ParserState in a C field): each kind of
input moves it to the state the RFC 6455 stream is in."""

from __future__ import annotations

import pytest

from grid import _ws_parser_py as wp
from grid._codec_py import LARGE_FRAME, FrameParser, encode_frame
from grid.errors import ProtocolError


def test_states_follow_the_stream():
    p = FrameParser(server=False)
    assert p._state == wp.PARSER_FRAMES
    assert p.feed(encode_frame(b"ab", 0x2, fin=False)) == []
    assert p._state == wp.PARSER_FRAGMENTED
    # A control frame between fragments leaves the message open.
    assert p.feed(encode_frame(b"hi", 0x9)) == [(0x9, b"hi")]
    assert p._state == wp.PARSER_FRAGMENTED
    # Half a continuation frame: still inside the message.
    last = encode_frame(b"cd", 0x0)
    assert p.feed(last[:3]) == []
    assert p._state == wp.PARSER_FRAGMENTED
    assert p.feed(last[3:]) == [(0x2, b"abcd")]
    assert p._state == wp.PARSER_FRAMES


def test_large_frame_state_and_back():
    p = FrameParser(server=False)
    frame = encode_frame(bytes(LARGE_FRAME), 0x2)
    assert p.feed(frame[:100]) == []
    assert p._state == wp.PARSER_LARGE
    assert p.feed(frame[100:] + encode_frame(b"x", 0x2)) == [(0x2, bytes(LARGE_FRAME)), (0x2, b"x")]
    assert p._state == wp.PARSER_FRAMES


@pytest.mark.parametrize("first,bad,text", [
    (b"", encode_frame(b"x", 0x0), "stray continuation frame"),  # from PARSER_FRAMES
    (encode_frame(b"ab", 0x2, fin=False), encode_frame(b"y", 0x2),  # from PARSER_FRAGMENTED
     "new data frame inside a fragmented message"),
])
def test_violation_fails_for_good_until_reinit(first, bad, text):
    p = FrameParser(server=False)
    p.feed(first)
    with pytest.raises(ProtocolError, match=text):
        p.feed(bad)
    assert p._state == wp.PARSER_FAILED and p.failed
    with pytest.raises(ProtocolError, match="parser failed earlier"):
        p.feed(b"")
    p.__init__(server=False)
    assert p._state == wp.PARSER_FRAMES and not p.failed
