"""Pure-Python twin of :mod:`grid._codec`: grid envelopes, merged containers,
WebSocket framing, XXH3 CRC, subroute ids and the dial rule.

No asyncio and no sockets: everything here works on byte strings, so the
Cython twin (``_codec.pyx``) can be checked against it byte for byte.  Section
numbers refer to docs/protocol.md.

This module is the twin's one public surface; its layers live beside it, as
the compiled twin's live in the ``.pxi`` files it includes:
:mod:`grid._envelope_py` (the grid envelope), :mod:`grid._routing_py` (hashes,
subroute ids, the dial rule), :mod:`grid._ws_py` (WebSocket framing and
masking) and :mod:`grid._ws_parser_py` (the frame parser).
"""

from __future__ import annotations

# The wire constants, the Buffer alias and the error class stay importable
# from here for the tests and tools that take them from the twin.
from grid._consts import (
    DEFAULT_MAX_MESSAGE_SIZE,
    FLAG_CRC,
    FLAG_PAYLOAD_IS_ZERO,
    FLAG_SUBROUTE,
    MERGE_MAX_BYTES,
    MERGE_MAX_MESSAGES,
    WS_BINARY,
    WS_CONTINUATION,
    Op,
)
from grid._envelope_py import CRC_BACKEND as CRC_BACKEND  # where message CRCs come from
from grid._envelope_py import (
    LARGE_FRAME,
    SPLIT_FRAME,
    Buffer,
    Message,
    SplitFrame,
    decode_message,
    decode_messages,
    encode_merged,
    encode_message,
    iter_merged,
)
from grid._routing_py import crc32, local_dials, subroute_id, xxh3_64
from grid._ws_parser_py import FrameParser, recv_pool_stats
from grid._ws_py import (
    apply_mask, encode_batches, encode_frame, encode_frames, encode_message_frame, mask_key,
)
from grid.errors import ProtocolError

__all__ = [
    "Message",
    "encode_message",
    "decode_message",
    "decode_messages",
    "encode_merged",
    "encode_frames",
    "encode_batches",
    "encode_message_frame",
    "iter_merged",
    "encode_frame",
    "apply_mask",
    "mask_key",
    "FrameParser",
    "recv_pool_stats",
    "SplitFrame",
    "LARGE_FRAME",
    "SPLIT_FRAME",
    "crc32",
    "xxh3_64",
    "subroute_id",
    "local_dials",
]

# The public names belong to this module, whichever file defines them: their
# __module__ says grid._codec_py, as the compiled twin's say grid._codec, so
# that reprs, pickles and the twin checks see one module per twin.
for _obj in (Message, SplitFrame, FrameParser, recv_pool_stats, encode_message, decode_message, decode_messages,
             encode_merged, encode_frames, encode_batches, encode_message_frame, iter_merged,
             encode_frame, apply_mask, mask_key, crc32, xxh3_64, subroute_id, local_dials):
    _obj.__module__ = __name__
del _obj
