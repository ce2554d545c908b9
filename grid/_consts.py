"""Wire constants of the grid protocol v1 (docs/protocol.md §3, §12).

Plain Python so that both codec twins, the connection layer and the tests
share one source of truth.
"""

from __future__ import annotations

import enum

#: The HTTP path of MinIO's grid WebSocket endpoint (the default ``route_path``).
ROUTE_PATH = "/minio/grid/v1"
#: The HTTP path of MinIO's separate grid for lock traffic.
LOCK_ROUTE_PATH = "/minio/grid/lock/v1"


class Op(enum.IntEnum):
    """Message operation codes (§3.2)."""

    CONNECT = 1
    CONNECT_RESPONSE = 2
    PING = 3
    PONG = 4
    CONNECT_MUX = 5
    MUX_CONNECT_ERROR = 6
    DISCONNECT_CLIENT_MUX = 7
    DISCONNECT_SERVER_MUX = 8
    MUX_CLIENT_MSG = 9
    MUX_SERVER_MSG = 10
    UNBLOCK_SRV_MUX = 11
    UNBLOCK_CL_MUX = 12
    ACK_MUX = 13
    REQUEST = 14
    RESPONSE = 15
    DISCONNECT = 16
    MERGED = 17


# Names as Go prints them in error texts (§5.3 "unexpected connect op").
OP_NAMES = {
    1: "Connect", 2: "ConnectResponse", 3: "Ping", 4: "Pong", 5: "ConnectMux",
    6: "MuxConnectError", 7: "DisconnectClientMux", 8: "DisconnectServerMux",
    9: "MuxClientMsg", 10: "MuxServerMsg", 11: "UnblockSrvMux", 12: "UnblockClMux",
    13: "AckMux", 14: "Request", 15: "Response", 16: "Disconnect", 17: "Merged",
}

# Message flags (§3.1).
FLAG_CRC = 0x01
FLAG_EOF = 0x02
FLAG_STATELESS = 0x04
FLAG_PAYLOAD_IS_ERR = 0x08
FLAG_PAYLOAD_IS_ZERO = 0x10
FLAG_SUBROUTE = 0x20

SUBROUTE_LEN = 32
CRC_LEN = 4

# A message whose payload is at least this large is encoded and framed on a
# worker thread (grid._send), its copies made with the GIL released, so
# that it never holds the event loop.
LARGE_MESSAGE = 1 << 20

# A stream's reader writes its credits before a quarter window is owed (an
# eighth, once it holds no more items than it owes) only for items smaller
# than this: a window of small items drains faster than the machine wakes
# the sender, while larger items keep both ends busy, where every extra
# credit write costs.
EARLY_CREDIT_ITEM_MAX = 2048

# A send queue holding this many messages or bytes is written at once instead
# of at the end of the loop iteration: the peer starts on it while this side
# produces the rest (two cores overlap instead of taking turns).
EARLY_FLUSH_MESSAGES = 64
EARLY_FLUSH_BYTES = 64 * 1024

# Inbound work a connection may do before the rest of what it received waits
# for a later loop turn (grid._mux.ConnCore): one unit per message the core
# handles itself (a response, an inline request, a stream item or credit),
# TURN_SLOW_COST per message it hands to Python code (the connection, a
# stream's own code, an async handler's admission) and per control frame,
# one per 4 KiB received (TURN_BYTE_SHIFT), one per TURN_CHECKS_PER_UNIT
# messages of a large container checked before any of it is dispatched.
# The pure twin's messages cost several times the compiled twin's, so its
# budget is smaller: about the same loop time each.
TURN_BUDGET = 512
TURN_BUDGET_PURE = 256
TURN_SLOW_COST = 4
TURN_BYTE_SHIFT = 12
TURN_CHECKS_PER_UNIT = 8
# Parsing is done per read, before any budget applies: a read that yields
# more frames than a turn's budget halves the next reads (down to READ_MIN
# bytes), so that a flood of tiny frames costs little parsing per turn;
# reads that yield few frames double it again, back to the parser's window.
READ_MIN = 4096
READ_WINDOW = 256 * 1024  # the frame parser's read window
# An OpMerged container of more messages than this is checked and
# dispatched in slices, across loop turns; a smaller one in one go.
SLICE_CONTAINER = 64

# WebSocket opcodes (RFC 6455 §5.2).
WS_CONTINUATION = 0x0
WS_TEXT = 0x1
WS_BINARY = 0x2
WS_CLOSE = 0x8
WS_PING = 0x9
WS_PONG = 0xA

# Largest WebSocket message (after reassembly) the parser accepts by default.
# Go has no limit; we cap memory per connection and make it configurable.
DEFAULT_MAX_MESSAGE_SIZE = 128 * 1024 * 1024
#: The largest WebSocket message an accepted socket may send before its
#: handshake completes (its Connect message; a token fits in the 16 KiB of
#: the HTTP head, so this leaves room to spare).
HANDSHAKE_MESSAGE_MAX = 64 * 1024

# Merging (§4): add while fewer than this many entries / bytes precede.
MERGE_MAX_MESSAGES = 50
MERGE_MAX_BYTES = 32 * 1024 - 1024

# Timing (§9, §10, §12), seconds.
PING_INTERVAL = 10.0
PONG_TIMEOUT = 20.0
PING_DEADLINE_MS = 10000
DIAL_TIMEOUT = 2.0
HANDSHAKE_WRITE_TIMEOUT = 3.0
HANDSHAKE_CLOCK_SKEW = 5 * 60.0
HTTP_CLOCK_SKEW = 15 * 60.0
DEFAULT_REQUEST_TIMEOUT = 60.0
MAX_DEADLINE_MS = 0xFFFFFFFF
STREAM_PING_INTERVAL = 15.0
STREAM_PONG_TIMEOUT = 30.0
STREAM_LIVENESS_LIMIT = 60.0
#: A sync handler running inline longer than this gets a (rate-limited)
#: warning: it holds up every connection of its node while it runs.
SLOW_HANDLER = 0.1

MAX_UINT32 = 0xFFFFFFFF
MAX_UINT64 = 0xFFFFFFFFFFFFFFFF

# Handler names as Go prints them (§6.1); ids are never renumbered.
HANDLER_NAMES = {
    1: "LockLock", 2: "LockRLock", 3: "LockUnlock", 4: "LockRUnlock", 5: "LockRefresh",
    6: "LockForceUnlock", 7: "WalkDir", 8: "StatVol", 9: "DiskInfo", 10: "NSScanner",
    11: "ReadXL", 12: "ReadVersion", 13: "DeleteFile", 14: "DeleteVersion",
    15: "UpdateMetadata", 16: "WriteMetadata", 17: "CheckParts", 18: "RenameData",
    19: "RenameFile", 20: "ReadAll", 21: "ServerVerify", 22: "Trace", 23: "Listen",
    24: "DeleteBucketMetadata", 25: "LoadBucketMetadata", 26: "ReloadSiteReplicationConfig",
    27: "ReloadPoolMeta", 28: "StopRebalance", 29: "LoadRebalanceMeta",
    30: "LoadTransitionTierConfig", 31: "DeletePolicy", 32: "LoadPolicy",
    33: "LoadPolicyMapping", 34: "DeleteServiceAccount", 35: "LoadServiceAccount",
    36: "DeleteUser", 37: "LoadUser", 38: "LoadGroup", 39: "HealBucket", 40: "MakeBucket",
    41: "HeadBucket", 42: "DeleteBucket", 43: "GetMetrics", 44: "GetResourceMetrics",
    45: "GetMemInfo", 46: "GetProcInfo", 47: "GetOSInfo", 48: "GetPartitions", 49: "GetNetInfo",
    50: "GetCPUs", 51: "ServerInfo", 52: "GetSysConfig", 53: "GetSysServices",
    54: "GetSysErrors", 55: "GetAllBucketStats", 56: "GetBucketStats", 57: "GetSRMetrics",
    58: "GetPeerMetrics", 59: "GetMetacacheListing", 60: "UpdateMetacacheListing",
    61: "GetPeerBucketMetrics", 62: "StorageInfo", 63: "ConsoleLog", 64: "ListDir",
    65: "GetLocks", 66: "BackgroundHealStatus", 67: "GetLastDayTierStats", 68: "SignalService",
    69: "GetBandwidth", 70: "WriteAll", 71: "ListBuckets", 72: "RenameDataInline",
    73: "RenameData2", 74: "CheckParts2", 75: "RenamePart", 76: "ClearUploadID",
    77: "CheckParts3", 78: "handlerTest", 79: "handlerTest2",
}
