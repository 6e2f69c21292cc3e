"""Anvyl's errors, each carrying the gRPC status code it maps to.

    AnvylError
    ├── InvalidArgument      INVALID_ARGUMENT     bad input; nothing was changed
    ├── NotFound             NOT_FOUND            no such host, container, model or deployment
    ├── AlreadyExists        ALREADY_EXISTS       a name or port is taken
    ├── FailedPrecondition   FAILED_PRECONDITION  the object is not in a state that allows this
    │   └── ImportFailed                          a model could not be imported
    ├── PermissionDenied     PERMISSION_DENIED    the operation is refused by policy
    ├── Unauthenticated      UNAUTHENTICATED      a missing or wrong access token
    ├── ResourceExhausted    RESOURCE_EXHAUSTED   no memory (or slot) for one more model now
    └── RuntimeUnavailable   UNAVAILABLE          the container engine cannot be reached

The server's interceptor aborts an RPC with `grpc_code` and the message; the CLI turns the
status back into a one-line message and an exit code.
"""

from __future__ import annotations

import grpc


class AnvylError(Exception):
    """Base of every error Anvyl raises on purpose."""

    grpc_code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(AnvylError):
    """The request is malformed or a value is out of range."""

    grpc_code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(AnvylError):
    """The named object does not exist."""

    grpc_code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(AnvylError):
    """A name, id or port is already taken."""

    grpc_code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(AnvylError):
    """The object exists but is not in a state that allows the operation."""

    grpc_code = grpc.StatusCode.FAILED_PRECONDITION


class ImportFailed(FailedPrecondition):
    """A model file could not be imported; nothing was left behind."""


class PermissionDenied(AnvylError):
    """The operation is refused by policy."""

    grpc_code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(AnvylError):
    """The access token is missing or wrong."""

    grpc_code = grpc.StatusCode.UNAUTHENTICATED


class ResourceExhausted(AnvylError):
    """Not enough memory (or loaded-model slots) for this now; retrying later may work."""

    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class RuntimeUnavailable(AnvylError):
    """The container engine cannot be reached."""

    grpc_code = grpc.StatusCode.UNAVAILABLE
