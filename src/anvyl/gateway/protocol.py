"""What the gateway answers itself: OpenAI-shaped errors and the `/v1/models` listing."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from anvyl.catalog import ModelInfo

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    502: "api_error",
    503: "api_error",
}


def error_body(
    message: str, status: int, *, code: str | None = None, param: str | None = None
) -> bytes:
    """An error in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`."""
    error = {
        "message": message,
        "type": ERROR_TYPES.get(status, "api_error"),
        "param": param,
        "code": code,
    }
    return json.dumps({"error": error}).encode()


def model_entry(
    model_id: str, created: float, replicas: int, healthy: int, tool_format: str = ""
) -> dict[str, Any]:
    """One model of `/v1/models`, with how many replicas serve it and how it writes tool calls
    (extra fields are allowed)."""
    return {
        "id": model_id,
        "object": "model",
        "created": int(created),
        "owned_by": "anvyl",
        "replicas": replicas,
        "ready_replicas": healthy,
        "state": "loaded" if healthy else "loading",
        "tool_format": tool_format or None,
    }


def startable_entry(info: ModelInfo) -> dict[str, Any]:
    """A model of `/v1/models` that is not running: a request naming it starts it."""
    return {
        "id": info.id,
        "object": "model",
        "created": int(_mtime(info)),
        "owned_by": "anvyl",
        "replicas": 0,
        "ready_replicas": 0,
        "state": "not-loaded",
        "tool_format": info.tool_format or None,
    }


def _mtime(info: ModelInfo) -> float:
    try:
        return info.path.stat().st_mtime
    except OSError:
        return 0.0


def models_body(entries: Sequence[Mapping[str, Any]]) -> bytes:
    """The `/v1/models` listing."""
    return json.dumps({"object": "list", "data": list(entries)}).encode()


class Requested(NamedTuple):
    """What the gateway routes a JSON request body by (one parse of the body)."""

    model: str | None
    previous_response_id: str | None


def requested(body: bytes) -> Requested:
    """The `model` (None when there is none) and `previous_response_id` of a request body."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return Requested(None, None)
    if not isinstance(data, dict):
        return Requested(None, None)
    model, previous = data.get("model"), data.get("previous_response_id")
    return Requested(
        model if isinstance(model, str) and model else None,
        previous if isinstance(previous, str) and previous else None,
    )


def requested_model(body: bytes) -> str | None:
    """The `model` field of a JSON request body, or None when there is none."""
    return requested(body).model
