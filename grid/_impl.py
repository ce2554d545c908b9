"""The one place that chooses between the compiled core and its pure twins.

``GRID_PURE`` = ``1``/``true``/``yes`` forces the pure-Python twins; unset,
empty or ``0`` uses the compiled modules when they import.  If they do not,
grid falls back to pure mode with one logged warning, unless
``GRID_REQUIRE_ACCEL=1`` is set, which makes that an ImportError (CI sets it).
Every other module imports the codec, mux and struct-codec names from here.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING


def env_flag(name: str) -> bool:
    """Parse a boolean environment switch: ``1``/``true``/``yes`` (any case) is on."""
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


PURE_REQUESTED = env_flag("GRID_PURE")


def _codec_names() -> list[str]:
    from grid import _codec_py

    return list(_codec_py.__all__)


def _mux_names() -> list[str]:
    from grid import _mux_py

    return list(_mux_py.__all__)


def _struct_names() -> list[str]:
    from grid import _struct_py

    return list(_struct_py.__all__)

#: True when the compiled core (grid._codec, grid._mux, grid._struct) is in use.
ACCELERATED = False

if TYPE_CHECKING or PURE_REQUESTED:
    from grid import _codec_py as codec
    from grid import _mux_py as mux
    from grid import _struct_py as structs
else:
    try:
        from grid import _codec as codec  # type: ignore[no-redef]
        from grid import _mux as mux  # type: ignore[no-redef]
        from grid import _struct as structs  # type: ignore[no-redef]

        # A stale build can import yet lack names the pure twins have.
        missing = [n for n in _codec_names() if not hasattr(codec, n)] + [
            n for n in _mux_names() if not hasattr(mux, n)
        ] + [n for n in _struct_names() if not hasattr(structs, n)]
        if missing:
            raise ImportError(f"compiled grid core is stale (missing {', '.join(missing)})")
        ACCELERATED = True
    except ImportError as exc:
        if env_flag("GRID_REQUIRE_ACCEL"):
            raise ImportError(
                f"GRID_REQUIRE_ACCEL=1 but the compiled grid core did not import: {exc}"
            ) from exc
        import importlib.util

        try:
            built = importlib.util.find_spec("grid._codec") is not None
        except (ImportError, ValueError):
            built = True  # present but broken: the import error says why
        if not built:
            exc = ImportError("not built: installed with GRID_PURE=1 or without a compiler")
        logging.getLogger("grid").warning(
            "grid: compiled core unavailable (%s); running the pure-Python twins", exc
        )
        from grid import _codec_py as codec
        from grid import _mux_py as mux
        from grid import _struct_py as structs

#: Which core is in use: ``"cython"`` (compiled) or ``"pure"`` (the pure-Python twins).
IMPLEMENTATION = "cython" if ACCELERATED else "pure"

Message = codec.Message
encode_message = codec.encode_message
decode_message = codec.decode_message
decode_messages = codec.decode_messages
encode_merged = codec.encode_merged
encode_frames = codec.encode_frames
encode_batches = codec.encode_batches
encode_message_frame = codec.encode_message_frame
iter_merged = codec.iter_merged
encode_frame = codec.encode_frame
apply_mask = codec.apply_mask
mask_key = codec.mask_key
FrameParser = codec.FrameParser
recv_pool_stats = codec.recv_pool_stats
SplitFrame = codec.SplitFrame
LARGE_FRAME = codec.LARGE_FRAME
SPLIT_FRAME = codec.SPLIT_FRAME
crc32 = codec.crc32
xxh3_64 = codec.xxh3_64
subroute_id = codec.subroute_id
local_dials = codec.local_dials
MuxIdAllocator = mux.MuxIdAllocator
MuxState = mux.MuxState
ConnCore = mux.ConnCore
StructCodec = structs.StructCodec
TypedHandler = structs.TypedHandler
