"""Anthropic's and Ollama's APIs through the gateway: errors in the dialect of the path, Ollama's
`name:latest` model names, and the paths that name no model answered by the gateway itself.

`/api/tags`, `/api/ps` and LM Studio's `/api/v0/models` are each model's own answer, asked of
one healthy replica per model and merged; `GET /v1/responses/{id}` is asked of the replica the
gateway saw store it, else of every healthy replica (each keeps the responses it made); `/` and
`/api/version` are constants.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

import httpx

from anvyl.gateway import protocol
from anvyl.modelserver.dialects.errors import OLLAMA_REFUSED, anthropic_error, dialect_of

if TYPE_CHECKING:
    from anvyl.catalog import ModelInfo
    from anvyl.gateway.response_owners import ResponseOwners
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


def routed_model(
    path: str, model: str, table: RoutingTable, aliases: Sequence[tuple[str, str]] = ()
) -> str:
    """The model id to route by: a running model's own id, else the first alias whose pattern
    (a glob such as `claude-*`) matches; `id:latest` on Ollama's paths is `id`."""
    if table.known(model):
        return model
    for pattern, target in aliases:
        if fnmatchcase(model, pattern):
            return target
    if dialect_of(path) == "ollama" and model.endswith(":latest"):
        return model.removesuffix(":latest")
    return model


def with_model(body: bytes, model: str) -> bytes:
    """The JSON request body with `model` replaced (an alias resolved)."""
    data = json.loads(body)
    data["model"] = model
    return json.dumps(data).encode()


def parse_aliases(items: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """`NAME=MODEL` pairs (NAME may be a glob); ValueError naming a bad one."""
    out = []
    for item in items:
        name, sep, model = item.partition("=")
        if not sep or not name.strip() or not model.strip():
            raise ValueError(f"bad model alias {item!r}: expected NAME=MODEL (NAME may be a glob)")
        out.append((name.strip(), model.strip()))
    return tuple(out)


def refusal(path: str, method: str) -> str | None:
    """Why an Ollama model-management path (`/api/pull`...) is refused here; None otherwise.

    The gateway answers these itself, as the model servers would: the model such a request
    names is usually not running (a pull's never is), so routing it would only say "not found".
    """
    action = path.removeprefix("/api/")
    if method not in ("POST", "DELETE") or not path.startswith("/api/") or "/" in action:
        return None
    why = OLLAMA_REFUSED.get(action)
    return None if why is None else f"/api/{action} is not supported here: {why}"


def is_unload(path: str, body: bytes) -> bool:
    """Whether an Ollama request only asks to unload its model: `/api/generate` without a
    prompt or `/api/chat` without messages (its `keep_alive` is 0: the caller checks)."""
    if path not in ("/api/generate", "/api/chat"):
        return False
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return False
    if not isinstance(data, dict):
        return False
    return not data.get("prompt") if path == "/api/generate" else not data.get("messages")


def unloaded_body(model: str) -> bytes:
    """Ollama's answer to an unload request."""
    stamp = datetime.now(tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    answer = {"model": model, "created_at": stamp, "response": "", "done": True,
              "done_reason": "unload"}  # fmt: skip
    return json.dumps(answer).encode()


def is_local(path: str, method: str) -> bool:
    """Whether the gateway answers `path` itself."""
    if method not in ("GET", "HEAD"):
        return False
    return path in OPEN or path in MERGED or path.startswith(("/api/v0/models/", "/v1/responses/"))


async def answer_locally(
    send: Callable[[dict[str, Any]], Awaitable[None]],
    path: str,
    table: RoutingTable,
    client: httpx.AsyncClient,
    startable: Sequence[ModelInfo] = (),
    expiries: dict[str, float] | None = None,
    owners: ResponseOwners | None = None,
) -> None:
    """Answer a path the gateway answers itself (`is_local`); `startable`: models not running
    that a request may start (listed as not loaded where the API has a place for them)."""
    status, body, kind = await local_answer(path, table, client, startable, expiries, owners)
    headers = [(b"content-type", kind), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def local_answer(
    path: str,
    table: RoutingTable,
    client: httpx.AsyncClient,
    startable: Sequence[ModelInfo] = (),
    expiries: dict[str, float] | None = None,
    owners: ResponseOwners | None = None,
) -> tuple[int, bytes, bytes]:
    """(status, body, content type) of a path the gateway answers itself."""
    if path == "/":
        return 200, GREETING, b"text/plain; charset=utf-8"
    if path == "/api/version":
        return 200, json.dumps({"version": OLLAMA_VERSION}).encode(), b"application/json"
    if path.startswith("/v1/responses/"):
        return await _stored_response(path, table, client, owners)
    wanted = None
    if path.startswith("/api/v0/models/"):
        path, wanted = "/api/v0/models", path.removeprefix("/api/v0/models/")
    key = MERGED[path]
    replicas = [_healthy(rs) for _, rs in sorted(table.models().items())]
    answers = await asyncio.gather(*(_ask(client, r, path) for r in replicas if r is not None))
    entries = [e for answer in answers for e in answer.get(key, [])]
    running = table.models()
    if path == "/api/ps":  # when each will unload, as the on-demand keep-alive says
        for entry in entries:
            at = (expiries or {}).get(str(entry.get("model", "")).removesuffix(":latest"))
            if at:
                entry["expires_at"] = _stamp(at)
    else:  # the others list what is on disk too
        entries += [_stopped_entry(path, m) for m in startable if m.id not in running]
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


async def _stored_response(
    path: str, table: RoutingTable, client: httpx.AsyncClient, owners: ResponseOwners | None
) -> tuple[int, bytes, bytes]:
    """A stored Response, asked of the replica that stored it, else of every healthy one."""
    replicas = [r for r in table.replicas() if r.healthy]
    key = owners.owner(path.rsplit("/", 1)[-1]) if owners is not None else None
    owner = next((r for r in replicas if r.target.key == key), None)
    if owner is not None:
        answer = await _ask(client, owner, path)
        if answer.get("object") == "response":
            return 200, json.dumps(answer).encode(), b"application/json"
    for answer in await asyncio.gather(*(_ask(client, r, path) for r in replicas)):
        if answer.get("object") == "response":
            return 200, json.dumps(answer).encode(), b"application/json"
    message = f"no running model server has the stored response {path.rsplit('/', 1)[-1]!r}"
    return 404, error_body(message, 404, code="not_found", param="response_id"), b"application/json"


def _stopped_entry(path: str, info: ModelInfo) -> dict[str, Any]:
    """A model that is not running, as `/api/tags` or `/api/v0/models` list it."""
    quantization = info.quantization or "unknown"
    if path == "/api/tags":
        name = f"{info.id}:latest"
        return {
            "name": name,
            "model": name,
            "modified_at": _modified(info),
            "size": info.size_bytes,
            "digest": hashlib.sha256(info.id.encode()).hexdigest(),  # as the model servers do
            "details": {
                "parent_model": "",
                "format": "mlx",
                "family": info.architecture,
                "families": [info.architecture],
                "parameter_size": "",
                "quantization_level": quantization,
            },
        }
    return {
        "id": info.id,
        "object": "model",
        "type": "llm",
        "publisher": "anvyl",
        "arch": info.architecture,
        "compatibility_type": "mlx",
        "quantization": quantization,
        "state": "not-loaded",
        "max_context_length": info.context_length or 0,
        "tool_format": info.tool_format,
    }


def _modified(info: ModelInfo) -> str:
    try:
        return _stamp(info.path.stat().st_mtime)
    except OSError:
        return _stamp(0.0)


def _stamp(at: float) -> str:
    return datetime.fromtimestamp(at, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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
