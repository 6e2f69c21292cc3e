"""Errors the model server answers with, each rendered in OpenAI's error shape.

    APIError                 any status; `{"error": {"message", "type", "param", "code"}}`
    ├── InvalidRequest       400 invalid_request_error (bad field, unsupported feature)
    │   └── PromptTooLong    400 context_length_exceeded
    ├── Unauthorized         401 invalid_api_key
    ├── ModelNotFound        404 model_not_found
    ├── QueueFull            429 queue_full (with Retry-After)
    └── Unavailable          503 model_loading / shutting_down (with Retry-After)

The engine raises `QueueFull` and `Unavailable` from `submit`; routes raise the rest. One
exception handler in `routes.py` turns them into responses.
"""

from __future__ import annotations

from typing import Any


class APIError(Exception):
    """Base: an error answered to the client with `status` and OpenAI's error body."""

    status: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        """OpenAI's error body."""
        return error_body(self.message, self.type, self.param, self.code)

    def headers(self) -> dict[str, str]:
        """Extra response headers (Retry-After where it applies)."""
        return {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}


class InvalidRequest(APIError):
    """The request is malformed, out of range or asks for something unsupported."""

    status = 400
    type = "invalid_request_error"


class PromptTooLong(InvalidRequest):
    """The prompt leaves no room in the context for a generated token."""

    code = "context_length_exceeded"


class Unauthorized(APIError):
    """A missing or wrong API key."""

    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class ModelNotFound(APIError):
    """The request names a model this server does not serve."""

    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class QueueFull(APIError):
    """Too many requests are waiting; the client should retry later."""

    status = 429
    type = "rate_limit_error"
    code = "queue_full"


class Unavailable(APIError):
    """The server cannot take requests right now (loading, draining, failed)."""

    status = 503
    type = "service_unavailable"
    code = "unavailable"


def error_body(
    message: str, type_: str, param: str | None = None, code: str | int | None = None
) -> dict[str, Any]:
    """`{"error": {...}}` in OpenAI's shape."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}
