"""The error interceptor maps AnvylError to its status and anything else to INTERNAL."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest

from anvyl.errors import FailedPrecondition, NotFound, RuntimeUnavailable
from anvyl.server.interceptors import ErrorInterceptor

RAISES = {
    "/t.T/NotFound": NotFound("no such thing"),
    "/t.T/Precondition": FailedPrecondition("not now"),
    "/t.T/Unavailable": RuntimeUnavailable("engine down"),
    "/t.T/Boom": ValueError("secret internals"),
}


class _Handlers(grpc.GenericRpcHandler):
    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        exc = RAISES.get(details.method)
        if details.method == "/t.T/Stream":

            def stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
                yield b"one"
                raise NotFound("gone mid-stream")

            return grpc.unary_stream_rpc_method_handler(stream)
        if exc is None:
            return None

        def unary(request: bytes, context: grpc.ServicerContext) -> bytes:
            raise exc

        return grpc.unary_unary_rpc_method_handler(unary)


@pytest.fixture
def channel() -> Iterator[grpc.Channel]:
    server = grpc.server(futures.ThreadPoolExecutor(2), interceptors=[ErrorInterceptor()])
    server.add_generic_rpc_handlers([_Handlers()])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        yield ch
    server.stop(0)


@pytest.mark.parametrize(
    ("method", "code", "text"),
    [
        ("/t.T/NotFound", grpc.StatusCode.NOT_FOUND, "no such thing"),
        ("/t.T/Precondition", grpc.StatusCode.FAILED_PRECONDITION, "not now"),
        ("/t.T/Unavailable", grpc.StatusCode.UNAVAILABLE, "engine down"),
        ("/t.T/Boom", grpc.StatusCode.INTERNAL, "internal error (ValueError)"),
    ],
)
def test_unary_mapping(
    channel: grpc.Channel,
    method: str,
    code: grpc.StatusCode,
    text: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        channel.unary_unary(method)(b"")
    assert info.value.code() is code
    assert text in info.value.details()
    assert "secret internals" not in info.value.details()
    trailing = dict(info.value.trailing_metadata())
    assert trailing["anvyl-error"]
    if code is grpc.StatusCode.INTERNAL:
        assert "Traceback" in caplog.text or any(r.exc_info for r in caplog.records)


def test_stream_mapping(channel: grpc.Channel) -> None:
    call = channel.unary_stream("/t.T/Stream")(b"")
    assert next(call) == b"one"
    with pytest.raises(grpc.RpcError) as info:
        next(call)
    assert info.value.code() is grpc.StatusCode.NOT_FOUND
