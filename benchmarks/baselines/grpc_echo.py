"""gRPC baseline: ``grpc.aio`` unary-unary echo with identity (raw bytes) serialisers.

No protobuf: the method handler and the client stub are registered with
``None`` (de)serialisers, which grpc treats as the identity -- the request and
reply are the raw payload bytes.  One channel = one HTTP/2 connection.

The same service also has a unary-stream method, ``Stream``: the request is
``struct.pack(">IQ", size, count)`` and the server yields ``count`` messages
(0 = until the call is cancelled) of ``size`` random bytes, as fast as grpc.aio
lets it (HTTP/2 flow control only).  ``GrpcClient.stream(size)`` returns the
call, an async iterator of the messages (used by benchmarks/streams.py).

Needs grpcio (the ``bench`` extra).  Standalone smoke test::

    python benchmarks/baselines/grpc_echo.py [--requests N] [--concurrency C]
"""

from __future__ import annotations

import asyncio
import os
import struct
import sys
from typing import Any, Optional, Tuple

import grpc
import grpc.aio

try:
    from ._common import echo_smoke, echo_smoke_main
except ImportError:  # run as a script / imported without the package
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _common import echo_smoke, echo_smoke_main  # type: ignore[no-redef]

SERVICE = "grid.bench.Echo"
METHOD = "Echo"
FULL_METHOD = f"/{SERVICE}/{METHOD}"
STREAM_METHOD = "Stream"
FULL_STREAM_METHOD = f"/{SERVICE}/{STREAM_METHOD}"
_STREAM_REQ = struct.Struct(">IQ")  # size, count (0 = unbounded)

#: Keep message-size limits out of the way for large payload runs.
_OPTIONS = [
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]


async def _echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


async def _stream(request: bytes, context: grpc.aio.ServicerContext):  # type: ignore[no-untyped-def]
    size, count = _STREAM_REQ.unpack(request)
    payload = os.urandom(size)
    if count == 0:
        while True:
            yield payload
    for _ in range(count):
        yield payload


async def serve(host: str = "127.0.0.1", port: int = 0) -> Tuple[grpc.aio.Server, int]:
    """Start the echo server; returns ``(server, bound_port)``."""
    server = grpc.aio.server(options=_OPTIONS)
    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            METHOD: grpc.unary_unary_rpc_method_handler(
                _echo, request_deserializer=None, response_serializer=None
            ),
            STREAM_METHOD: grpc.unary_stream_rpc_method_handler(
                _stream, request_deserializer=None, response_serializer=None
            ),
        },
    )
    server.add_generic_rpc_handlers((handler,))
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    return server, bound


class GrpcClient:
    """One ``grpc.aio`` channel; ``await client.request(payload)`` returns the reply bytes."""

    def __init__(self, host: str, port: int) -> None:
        self._channel = grpc.aio.insecure_channel(f"{host}:{port}", options=_OPTIONS)
        self._call = self._channel.unary_unary(
            FULL_METHOD, request_serializer=None, response_deserializer=None
        )
        self._stream = self._channel.unary_stream(
            FULL_STREAM_METHOD, request_serializer=None, response_deserializer=None
        )

    async def wait_ready(self, timeout: float = 10.0) -> None:
        await asyncio.wait_for(self._channel.channel_ready(), timeout)

    def request(self, payload: bytes, timeout: Optional[float] = None):
        return self._call(payload, timeout=timeout)

    def stream(self, size: int, count: int = 0):  # type: ignore[no-untyped-def]
        """Start a unary-stream call: ``count`` messages of ``size`` bytes (0 = until
        ``call.cancel()``); the call is an async iterator of the messages."""
        return self._stream(_STREAM_REQ.pack(size, count))

    async def close(self) -> None:
        await self._channel.close()


async def _smoke(requests: int, concurrency: int, size: int) -> None:
    server, port = await serve()
    client = GrpcClient("127.0.0.1", port)
    await client.wait_ready()
    await echo_smoke("grpc.aio echo", client.request, requests, concurrency, size)
    await client.close()
    await server.stop(None)


def main(argv: Any = None) -> None:
    echo_smoke_main(__doc__, _smoke, 10_000, 128, argv)


if __name__ == "__main__":
    main()
