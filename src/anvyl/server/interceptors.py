"""Server interceptors: access-token check, and AnvylError → gRPC status mapping.

`ErrorInterceptor` is the one place where exceptions become statuses: an `AnvylError` aborts
with its `grpc_code` and message (trailing metadata `anvyl-error` names the class, so a client
can tell an engine that is UNAVAILABLE from a server it cannot reach); anything else is logged
with its traceback and becomes INTERNAL. A request whose bytes do not parse as the method's
message is INVALID_ARGUMENT (gRPC itself would answer INTERNAL). Unary replies carry
`anvyl-engine-calls`, the number of Docker API calls the RPC made.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from anvyl.errors import AnvylError
from anvyl.runtime import count_engine_calls

log = logging.getLogger(__name__)

ERROR_KEY = "anvyl-error"
ENGINE_CALLS_KEY = "anvyl-engine-calls"
# Probes must work without the token; everything else (reflection included) needs it.
OPEN_METHODS = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})

Behavior = Callable[..., Any]


class Undecodable:
    """Stands for a request whose bytes did not parse as the method's message."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _tolerant(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """A deserializer that returns `Undecodable` instead of raising (grpc would say INTERNAL)."""
    if deserialize is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as exc:  # DecodeError, or anything a hostile payload provokes
            return Undecodable(str(exc) or type(exc).__name__)

    return parse


def _refuse_undecodable(request: Any, context: grpc.ServicerContext) -> None:
    """Abort with INVALID_ARGUMENT when the request did not parse."""
    if isinstance(request, Undecodable):
        context.set_trailing_metadata(((ERROR_KEY, "InvalidArgument"),))
        context.abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"the request is not a valid message for this method: {request.reason}",
        )


def _rewrap(
    handler: grpc.RpcMethodHandler,
    wrap_unary: Callable[[Behavior], Behavior],
    wrap_stream: Callable[[Behavior], Behavior],
) -> grpc.RpcMethodHandler:
    """The same handler with its behaviour wrapped (unary or streaming response)."""
    if handler.unary_unary is not None:
        return handler._replace(unary_unary=wrap_unary(handler.unary_unary))  # type: ignore[attr-defined]
    if handler.stream_unary is not None:
        return handler._replace(stream_unary=wrap_unary(handler.stream_unary))  # type: ignore[attr-defined]
    if handler.unary_stream is not None:
        return handler._replace(unary_stream=wrap_stream(handler.unary_stream))  # type: ignore[attr-defined]
    return handler._replace(stream_stream=wrap_stream(handler.stream_stream))  # type: ignore[attr-defined]


def _abort(context: grpc.ServicerContext, exc: BaseException, method: str) -> None:
    """Abort the RPC with the status that `exc` maps to (always raises)."""
    if isinstance(exc, AnvylError):
        log.debug("%s: %s %s", method, exc.grpc_code.name, exc.message)
        context.set_trailing_metadata(((ERROR_KEY, type(exc).__name__),))
        context.abort(exc.grpc_code, exc.message)
    log.error("%s failed with an unexpected error", method, exc_info=exc)
    context.set_trailing_metadata(((ERROR_KEY, "Internal"),))
    context.abort(
        grpc.StatusCode.INTERNAL,
        f"internal error ({type(exc).__name__}); see the server log",
    )


class ErrorInterceptor(grpc.ServerInterceptor):
    """Maps exceptions raised by servicers to gRPC statuses."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        """Wrap the method's behaviour."""
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        handler = handler._replace(  # type: ignore[attr-defined]
            request_deserializer=_tolerant(handler.request_deserializer)
        )

        def wrap_unary(behavior: Behavior) -> Behavior:
            def unary(request: Any, context: grpc.ServicerContext) -> Any:
                _refuse_undecodable(request, context)
                with count_engine_calls() as calls:
                    try:
                        response = behavior(request, context)
                    except Exception as exc:
                        if _is_abort(exc, context):
                            raise
                        _abort(context, exc, method)
                    context.set_trailing_metadata(((ENGINE_CALLS_KEY, str(calls.value)),))
                    return response

            return unary

        def wrap_stream(behavior: Behavior) -> Behavior:
            def stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                _refuse_undecodable(request, context)
                try:
                    yield from behavior(request, context)
                except Exception as exc:
                    if _is_abort(exc, context):
                        raise
                    _abort(context, exc, method)

            return stream

        return _rewrap(handler, wrap_unary, wrap_stream)


def _is_abort(exc: Exception, context: grpc.ServicerContext) -> bool:
    """True for the bare exception `context.abort` raises: the status is already set."""
    return type(exc) is Exception and context.code() is not None


class AuthInterceptor(grpc.ServerInterceptor):
    """Requires `authorization: Bearer <token>` on every RPC except the health check."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        """Let the call through, or answer UNAUTHENTICATED without running it."""
        if handler_call_details.method in OPEN_METHODS:
            return continuation(handler_call_details)
        metadata = dict(handler_call_details.invocation_metadata or ())
        given = metadata.get("authorization")
        if given is not None and hmac.compare_digest(str(given).encode(), self._expected):
            return continuation(handler_call_details)
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        reason = (
            "an access token is required (set ANVYL_TOKEN)"
            if given is None
            else "the access token is wrong"
        )

        def deny_unary(_behavior: Behavior) -> Behavior:
            def deny(_request: Any, context: grpc.ServicerContext) -> Any:
                context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)

            return deny

        def deny_stream(_behavior: Behavior) -> Behavior:
            def deny(_request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)
                yield  # pragma: no cover - makes this a generator

            return deny

        return _rewrap(handler, deny_unary, deny_stream)
