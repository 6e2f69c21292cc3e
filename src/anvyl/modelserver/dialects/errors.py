"""Errors in the dialect of the path they answer: Anthropic's on `/v1/messages`, Ollama's on
`/api/*` (LM Studio's `/api/v0` aside), OpenAI's everywhere else."""

from __future__ import annotations

from typing import Any

from anvyl.modelserver.errors import InvalidRequest, error_body

ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
}


# Ollama's model-management paths, refused (by the model server and the gateway alike) with
# what to do instead: models are managed through `anvyl`, not through a model's API.
OLLAMA_REFUSED = {
    "pull": "models are pulled from the Hugging Face Hub with `anvyl model pull OWNER/NAME`"
    " (an MLX or a GGUF repository) or imported from a file with `anvyl model import PATH`,"
    " then run with `anvyl model start MODEL_ID`",
    "push": "pushing models is not supported; Anvyl serves local models",
    "create": "creating models is not supported; pull one with `anvyl model pull OWNER/NAME` or"
    " import one with `anvyl model import PATH`",
    "delete": "deleting models is done with `anvyl model rm MODEL_ID`",
    "copy": "copying models is not supported; import the model under another id",
    "embed": "embeddings are not served: this server runs one chat model",
    "embeddings": "embeddings are not served: this server runs one chat model",
}


def refuse_fields(sent: dict[str, Any] | None, refused: dict[str, str]) -> None:
    """A 400 naming the first field of `refused` that a request sets (to anything but an empty
    or false value): fields no dialect model reads, which would otherwise pass unnoticed."""
    for name, why in refused.items():
        value = (sent or {}).get(name)
        if value not in (None, False, 0, "", [], {}):
            raise InvalidRequest(f"{name} is not supported: {why}", param=name,
                                 code="unsupported_feature")  # fmt: skip


def dialect_of(path: str) -> str:
    """`anthropic`, `ollama` or `openai`: whose error shape `path` answers with."""
    if path == "/v1/messages" or path.startswith("/v1/messages/"):
        return "anthropic"
    if path.startswith("/api/") and not path.startswith("/api/v0/") and path != "/api/v0":
        return "ollama"
    return "openai"


def anthropic_error(status: int, message: str) -> dict[str, Any]:
    """`{"type": "error", "error": {"type", "message"}}`."""
    kind = ANTHROPIC_TYPES.get(status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


def error_payload(
    path: str,
    status: int,
    message: str,
    type_: str,
    param: str | None = None,
    code: str | int | None = None,
) -> dict[str, Any]:
    """The error body for `path` (OpenAI's `param` and `code` kept where the dialect has them)."""
    dialect = dialect_of(path)
    if dialect == "anthropic":
        return anthropic_error(status, message)
    if dialect == "ollama":
        return {"error": message}
    return error_body(message, type_, param, code)
