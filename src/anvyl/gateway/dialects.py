"""Anthropic's and Ollama's APIs through the gateway: errors in the dialect of the path, Ollama's
`name:latest` model names, and the paths that name no model answered by the gateway itself.

`/api/tags`, `/api/ps` and LM Studio's `/api/v0/models` are each model's own answer, asked of
one healthy replica per model and merged; `/` and `/api/version` are constants.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import httpx

from anvyl.gateway import protocol
from anvyl.modelserver.dialects.errors import anthropic_error, dialect_of

if TYPE_CHECKING:
    from anvyl.gateway.routing import Replica, RoutingTable

OLLAMA_VERSION = "0.12.0"  # as the model servers answer `/api/version`
GREETING = b"Ollama is running"
FAN_OUT_TIMEOUT_S = 5.0
# Paths without a model: answered here. The value: the list's key in each replica's answer.
MERGED = {"/api/tags": "models", "/api/ps": "models", "/api/v0/models": "data"}
OPEN = frozenset({"/", "/api/version"})  # probes, answered without a key
CURRENT_PATH: ContextVar[str] = ContextVar("anvyl_gateway_path", default="")


def error_body(message: str, status: int, *, code: str | None, param: str | None) -> bytes:
    """An error in the shape of the current request's dialect."""
    dialect = dialect_of(CURRENT_PATH.get())
    if dialect == "anthropic":
        return json.dumps(anthropic_error(status, message)).encode()
    if dialect == "ollama":
        return json.dumps({"error": message}).encode()
    return protocol.error_body(message, status, code=code, param=param)


def routed_model(path: str, model: str, table: RoutingTable) -> str:
    """The model id to route by (`id:latest` on Ollama's paths is `id`)."""
    if dialect_of(path) == "ollama" and model.endswith(":latest") and not table.known(model):
        return model.removesuffix(":latest")
    return model


def is_local(path: str, method: str) -> bool:
    """Whether the gateway answers `path` itself."""
    if method not in ("GET", "HEAD"):
        return False
    return path in OPEN or path in MERGED or path.startswith("/api/v0/models/")


async def answer_locally(
    send: Callable[[dict[str, Any]], Awaitable[None]],
    path: str,
    table: RoutingTable,
    client: httpx.AsyncClient,
) -> None:
    """Answer a path the gateway answers itself (`is_local`)."""
    status, body, kind = await local_answer(path, table, client)
    headers = [(b"content-type", kind), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def local_answer(
    path: str, table: RoutingTable, client: httpx.AsyncClient
) -> tuple[int, bytes, bytes]:
    """(status, body, content type) of a path the gateway answers itself."""
    if path == "/":
        return 200, GREETING, b"text/plain; charset=utf-8"
    if path == "/api/version":
        return 200, json.dumps({"version": OLLAMA_VERSION}).encode(), b"application/json"
    wanted = None
    if path.startswith("/api/v0/models/"):
        path, wanted = "/api/v0/models", path.removeprefix("/api/v0/models/")
    key = MERGED[path]
    replicas = [_healthy(rs) for _, rs in sorted(table.models().items())]
    answers = await asyncio.gather(*(_ask(client, r, path) for r in replicas if r is not None))
    entries = [e for answer in answers for e in answer.get(key, [])]
    if wanted is None:
        body: dict[str, Any] = {key: entries} | ({"object": "list"} if key == "data" else {})
        return 200, json.dumps(body).encode(), b"application/json"
    match = next((e for e in entries if e.get("id") == wanted), None)
    if match is None:
        message = f"The model `{wanted}` does not exist or is not running"
        return (
            404,
            error_body(message, 404, code="model_not_found", param="model"),
            b"application/json",
        )
    return 200, json.dumps(match).encode(), b"application/json"


def _healthy(replicas: list[Replica]) -> Replica | None:
    """The healthy replica with the fewest outstanding requests."""
    healthy = [r for r in replicas if r.healthy]
    return min(healthy, key=lambda r: r.outstanding) if healthy else None


async def _ask(client: httpx.AsyncClient, replica: Replica, path: str) -> dict[str, Any]:
    """A replica's JSON answer to GET `path` ({} when it fails: it is left out)."""
    target = replica.target
    headers = {"authorization": f"Bearer {target.upstream_key}"} if target.upstream_key else {}
    try:
        r = await client.get(target.base_url + path, headers=headers, timeout=FAN_OUT_TIMEOUT_S)
        data = r.json() if r.status_code == 200 else {}
    except (httpx.HTTPError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
