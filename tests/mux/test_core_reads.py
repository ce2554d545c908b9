"""ConnCore's reads on both twins: whatever the read boundaries, the turn
budget and the mix of frames (lone messages, merged containers small and
over SPLIT_FRAME, single large messages, control frames between them,
masked or not), the core dispatches the same messages in the same order.
The compiled core dispatches binary frames where they lie in the read
window (or in the parser's accumulator, for a frame that straddles reads);
these tests hold it to the pure twin's order and error behaviour."""

from __future__ import annotations

import os
import random
from types import ModuleType
from typing import Any

import pytest

from grid import _codec_py
from grid._consts import FLAG_CRC, WS_PING, Op

from conftest import MUX_IDS, MUX_TWINS

KEY = b"\x5a\x13\xc7\x02"
SIZES = [[10] * 5, [4096] * 7, [20000], [3000, 40000, 5], [100], [9000, 9000], [1]]


class _Owner:
    """A core's owner and reader that records what the core hands it."""

    def __init__(self) -> None:
        self.log: list[tuple[Any, ...]] = []
        self.bytes_in = 0
        self.waits = 0

    def _on_message(self, m: Any) -> None:
        self.log.append(("msg", m.mux_id, m.op, m.payload))

    def _on_control(self, opcode: int, payload: bytes) -> None:
        self.log.append(("ctl", opcode, bytes(payload)))

    def _schedule_flush(self) -> None:
        pass

    def _flush_early(self) -> None:
        pass

    def _input_waiting(self) -> None:
        self.waits += 1

    def input_failed(self, exc: Exception) -> None:
        self.log.append(("failed", type(exc).__name__, str(exc)))


def _peer_bytes(masked: bool, seed: int, bad: int = -1) -> tuple[bytes, list[tuple[Any, ...]]]:
    """What a peer sends, and what the core should hand its owner.  With
    ``bad`` >= 0 that message's CRC is wrong."""
    rng = random.Random(seed)
    key = KEY if masked else None
    out: list[bytes] = []
    want: list[tuple[Any, ...]] = []
    mux_id = 1
    for _ in range(40):
        msgs = []
        for n in rng.choice(SIZES):
            payload = rng.randbytes(n)
            msg = _codec_py.encode_message(mux_id, 0, 0, 0, int(Op.MUX_SERVER_MSG), FLAG_CRC,
                                           payload)
            if mux_id == bad:
                msg = msg[:-1] + bytes([msg[-1] ^ 0xFF])
            msgs.append(msg)
            want.append(("msg", mux_id, int(Op.MUX_SERVER_MSG), payload))
            mux_id += 1
        out.append(_codec_py.encode_frames(msgs, key))
        if rng.random() < 0.2:
            ping = b"p%d" % mux_id
            out.append(_codec_py.encode_frame(ping, WS_PING, key))
            want.append(("ctl", WS_PING, ping))
    return b"".join(out), want


def _read_all(mux: ModuleType, server: bool, data: bytes, seed: int, budget: int) -> _Owner:
    """Feed ``data`` to a core through get_buffer()/socket_read() in reads of
    random sizes, draining whenever input waits, until all is in or the
    input failed."""
    rng = random.Random(seed)
    owner = _Owner()
    core = mux.ConnCore(owner, server, 1 << 24, None)
    core.turn_budget = budget
    pos = 0
    while (pos < len(data) or core.input_waiting) and not any(e[0] == "failed" for e in owner.log):
        if core.input_waiting:
            core.drain()
            continue
        view = core.get_buffer(-1)
        n = min(len(view), len(data) - pos, rng.choice([1, 7, 100, 5000, 40000, 1 << 20]))
        view[:n] = data[pos:pos + n]
        core.socket_read(n)
        pos += n
    return owner


@pytest.mark.parametrize("budget", [512, 8], ids=["budget-512", "budget-8"])
@pytest.mark.parametrize("server", [False, True], ids=["client", "server-masked"])
@pytest.mark.parametrize("mux", MUX_TWINS, ids=MUX_IDS)
def test_reads_dispatch_in_order(mux: ModuleType, server: bool, budget: int) -> None:
    for seed in range(4):
        data, want = _peer_bytes(server, seed)
        owner = _read_all(mux, server, data, seed, budget)
        assert owner.log == want
        if budget == 8:
            assert owner.waits > 0  # the budget made input wait, and it came back in order


@pytest.mark.parametrize("server", [False, True], ids=["client", "server-masked"])
def test_a_bad_message_fails_the_read_alike(server: bool) -> None:
    """A CRC mismatch: what came before it is dispatched, then the input
    fails with the same error on both twins, and nothing after it."""
    for bad in (3, 9, 40, 75):
        data, want = _peer_bytes(server, bad, bad=bad)
        logs = [_read_all(mux, server, data, bad, 512).log for mux in MUX_TWINS]
        assert all(log == logs[0] for log in logs[1:])
        failed = logs[0][-1]
        assert failed[:2] == ("failed", "ProtocolError") and "crc mismatch" in failed[2]
        cut = next(i for i, e in enumerate(want) if e[0] == "msg" and e[1] == bad)
        # Everything before the bad message is dispatched, except what shared
        # its container (a bad container dispatches nothing).
        assert want[:cut][:len(logs[0]) - 1] == logs[0][:-1]
        assert all(e[1] < bad for e in logs[0][:-1] if e[0] == "msg")


def test_large_single_messages_stay_whole() -> None:
    """A frame holding one message of SPLIT_FRAME bytes or more still
    arrives as its own payload object, of the right bytes, between
    containers dispatched from the window."""
    big = os.urandom(_codec_py.SPLIT_FRAME + 5)
    msgs = [_codec_py.encode_message(i, 0, 0, 0, int(Op.MUX_SERVER_MSG), FLAG_CRC, p)
            for i, p in enumerate([b"a" * 10, b"b" * 10, big, b"c" * 10], 1)]
    data = (_codec_py.encode_frames(msgs[:2]) + _codec_py.encode_frames(msgs[2:3])
            + _codec_py.encode_frames(msgs[3:]))
    for mux in MUX_TWINS:
        owner = _read_all(mux, False, data, 0, 512)
        assert [e[3] for e in owner.log] == [b"a" * 10, b"b" * 10, big, b"c" * 10]
