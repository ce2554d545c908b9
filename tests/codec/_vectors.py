"""The worked examples of docs/protocol.md as bytes, shared by the vector and
property tests."""

from __future__ import annotations

H = bytes.fromhex

# §2.6 E2: SHA-256("/mnt/disk1") with bytes 0/1 replaced by the handler (9) and 0.
SUB = H("0900b21588c0e23f797b3fcfabc30045ea91e17885a284beaea44e61950975fe")
TIME = H("c70c05" "00000000" "67760225" "075bcd15")  # 2025-01-02T03:04:05.123456789Z
ZERO_TIME = H("c70c05" "fffffff1886e0900" "00000000")  # Go's zero time.Time

# (id, wire bytes, (mux, seq, deadline, handler, op, flags, payload given to
# encode, subroute), payload as decoded)
VECTORS = [
    ("E1", H("970100cdea60150e02c40581a161a162"),
     (1, 0, 60000, 21, 14, 0x02, H("81a161a162"), None), H("81a161a162")),
    ("E2", H("970200cd7530090e22c400") + SUB,
     (2, 0, 30000, 9, 14, 0x22, None, SUB), None),
    ("E3", H("97010000000f03c40581a26f6bc3d4d90eac"),
     (1, 0, 0, 0, 15, 0x03, H("81a26f6bc3"), None), H("81a26f6bc3")),
    ("E4", H("97cd012c00cdea60090e23c400") + SUB + H("2f8251d5"),
     (300, 0, 60000, 9, 14, 0x23, None, SUB), None),
    ("E6", H("970000cd2710000300c412") + H("81a174") + TIME,
     (0, 0, 10000, 0, 3, 0x00, H("81a174") + TIME, None), H("81a174") + TIME),
    ("E7", H("970000cd2710000401c419") + H("83a26e66c2a165c0a174") + TIME + H("48cff5e8"),
     (0, 0, 10000, 0, 4, 0x01, H("83a26e66c2a165c0a174") + TIME, None),
     H("83a26e66c2a165c0a174") + TIME),
    ("E8-ping", H("97050300000301c400e722bd84"),
     (5, 3, 0, 0, 3, 0x01, None, None), None),
    ("E8-pong", H("97050300000401c419") + H("83a26e66c3a165c0a174") + ZERO_TIME + H("fa4fe26e"),
     (5, 3, 0, 0, 4, 0x01, H("83a26e66c3a165c0a174") + ZERO_TIME, None),
     H("83a26e66c3a165c0a174") + ZERO_TIME),
    ("E9-connect", H("97060000090533c400") + SUB + H("9e760373"),
     (6, 0, 0, 9, 5, 0x33, b"", SUB), b""),
    ("E9-ack", H("97060000000d01c400" "8d9a3bfe"),
     (6, 0, 0, 0, 13, 0x01, None, None), None),
    ("E10", H("97010000000f0bc40e") + b"file not found" + H("47e53e31"),
     (1, 0, 0, 0, 15, 0x0B, b"file not found", None), b"file not found"),
]

# §5.4 handshake messages (flags 0, no CRC).
CONNECT_REQ = (
    H("84a24944c410") + bytes(range(16))
    + H("a4486f7374b4") + b"http://10.0.0.1:9000"
    + H("a454696d65") + TIME
    + H("a5546f6b656ea5") + b"TOKEN"
)
CONNECT_ACCEPT = (
    H("83a24944c410") + bytes(range(16, 32))
    + H("a8") + b"Accepted" + H("c3")
    + H("ae") + b"RejectedReason" + H("a0")
)
REASON = b"unknown incoming host: http://10.0.0.9:9000"
CONNECT_REJECT = (
    H("83a24944c410") + bytes(range(16, 32))
    + H("a8") + b"Accepted" + H("c2")
    + H("ae") + b"RejectedReason" + H("d92b") + REASON
)
HANDSHAKES = [
    ("connect", H("97000000000100c450") + CONNECT_REQ, 1, CONNECT_REQ),
    ("accept", H("97000000000200c430") + CONNECT_ACCEPT, 2, CONNECT_ACCEPT),
    ("reject", H("97000000000200c45c") + CONNECT_REJECT, 2, CONNECT_REJECT),
]

E5_INNER1 = H("97070300000b01c400" "72f070b9")
E5_INNER2 = H("97050200000a01c4020102" "9a6a3496")
E5 = H("97000200001100c400") + H("c40d") + E5_INNER1 + H("c40f") + E5_INNER2
