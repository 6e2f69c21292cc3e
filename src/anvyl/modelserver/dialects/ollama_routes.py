"""Ollama's API on the model server: `/`, `/api/version`, `/api/tags`, `/api/ps`, `/api/show`,
`/api/chat` and `/api/generate` (NDJSON streams by default), and clear refusals for the model
management endpoints Anvyl does through its own CLI."""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from anvyl.modelserver.dialects.errors import OLLAMA_REFUSED as REFUSED
from anvyl.modelserver.dialects.generation import Generation, start
from anvyl.modelserver.dialects.ollama import (
    chat_request,
    done_fields,
    generate_request,
    resolve_model,
    timestamp,
    tool_calls,
)
from anvyl.modelserver.dialects.ollama_protocol import ChatRequest, GenerateRequest, ShowRequest
from anvyl.modelserver.errors import InvalidRequest
from anvyl.modelserver.events import FinishEvent
from anvyl.modelserver.protocol import ChatCompletionRequest
from anvyl.modelserver.routes import parse_body
from anvyl.modelserver.state import ServerState, state_of
from anvyl.modelserver.streaming import json_bytes

router = APIRouter()
OLLAMA_VERSION = "0.12.0"  # the Ollama API level served; clients gate features on it
GREETING = "Ollama is running"
FAR_FUTURE = "2999-01-01T00:00:00Z"  # keep_alive is inert: a running model stays loaded
OLLAMA_ENDPOINTS = frozenset(
    {"/", "/api/version", "/api/tags", "/api/ps", "/api/show", "/api/chat", "/api/generate"}
)


@router.api_route("/", methods=["GET", "HEAD"])
async def greeting() -> PlainTextResponse:
    """What Ollama clients probe before anything else."""
    return PlainTextResponse(GREETING)


@router.get("/api/version")
async def version() -> dict[str, str]:
    """The Ollama API version served."""
    return {"version": OLLAMA_VERSION}


@router.get("/api/tags")
async def tags(request: Request) -> dict[str, Any]:
    """The served model (the models that run here)."""
    return {"models": [model_entry(state_of(request))]}


@router.get("/api/ps")
async def ps(request: Request) -> dict[str, Any]:
    """The loaded model (none while it loads)."""
    state = state_of(request)
    if state.engine.loaded is None:
        return {"models": []}
    entry = model_entry(state) | {
        "expires_at": FAR_FUTURE, "size_vram": 0, "context_length": state.context_length(),
    }  # fmt: skip
    return {"models": [entry]}


@router.post("/api/show")
async def show(request: Request) -> dict[str, Any]:
    """The model's details, chat template and capabilities."""
    state = state_of(request)
    body = await parse_body(request, ShowRequest)
    name = body.model or body.name
    if not name:
        raise InvalidRequest("show needs the model's name in 'model'", param="model")
    resolve_model(state, name)
    info = state.model_info()
    arch = info.arch if info else "unknown"
    loaded = state.engine.loaded
    template = getattr(loaded.tokenizer, "chat_template", None) if loaded else None
    return {
        "modelfile": "", "parameters": "",
        "template": template if isinstance(template, str) else "",
        "details": details(state),
        "model_info": {"general.architecture": arch,
                       f"{arch}.context_length": info.context_length if info else 0},
        "capabilities": ["completion", "tools", *(["thinking"] if state.reasons() else [])],
        "modified_at": timestamp(),
    }  # fmt: skip


@router.post("/api/chat")
async def chat(request: Request) -> Response:
    """Ollama chat: NDJSON chunks unless `stream: false`."""
    state = state_of(request)
    body = await parse_body(request, ChatRequest)
    internal, extra = chat_request(state, body)
    return await _answer(request, internal, extra, body, chat=True)


@router.post("/api/generate")
async def generate(request: Request) -> Response:
    """Ollama generate (the prompt goes through the chat template); an empty prompt loads."""
    state = state_of(request)
    body = await parse_body(request, GenerateRequest)
    internal, extra = generate_request(state, body)
    if not body.prompt and not body.system:
        load = {"model": body.model, "created_at": timestamp(), "response": "", "done": True,
                "done_reason": "load"}  # fmt: skip
        return JSONResponse(load)
    return await _answer(request, internal, extra, body, chat=False)


async def _answer(
    request: Request,
    internal: ChatCompletionRequest,
    extra: dict[str, Any],
    body: ChatRequest | GenerateRequest,
    *,
    chat: bool,
) -> Response:
    """Generate and answer as NDJSON chunks or one object (`message` or `response`); reasoning
    as `thinking` unless `think` is false."""
    began = time.perf_counter()
    model, thinking = body.model, body.think is not False
    generation = await start(request, state_of(request), internal, extra)
    if body.stream:
        chunks = _chunks(generation, model, began, chat=chat, thinking=thinking)
        return StreamingResponse(chunks, media_type="application/x-ndjson")
    finish = await generation.finish()
    output = generation.output
    head: dict[str, Any] = {"model": model, "created_at": timestamp()}
    reasoning = {"thinking": output.thinking} if thinking and output.thinking else {}
    if not chat:
        head |= {"response": output.text, **reasoning}
    elif calls := tool_calls(output):
        head["message"] = {"role": "assistant", "content": "", **reasoning, "tool_calls": calls}
    else:
        head["message"] = {"role": "assistant", "content": output.text, **reasoning}
    return JSONResponse(head | done_fields(finish, time.perf_counter() - began))


@router.api_route("/api/{action}", methods=["GET", "POST", "PUT", "DELETE", "HEAD"])
async def refused(action: str, request: Request) -> Response:
    """Model management and embeddings: what to use instead."""
    why, method = REFUSED.get(action), request.method
    if f"/api/{action}" in OLLAMA_ENDPOINTS:
        return JSONResponse({"error": f"{method} is not allowed on /api/{action}"}, status_code=405)
    if why is None:
        return JSONResponse({"error": f"unknown Ollama endpoint /api/{action}"}, status_code=404)
    raise InvalidRequest(f"/api/{action} is not supported here: {why}", code="unsupported_feature")


async def _chunks(
    generation: Generation, model: str, began: float, *, chat: bool, thinking: bool
) -> AsyncIterator[bytes]:
    """NDJSON lines: reasoning and text as they come, tool calls whole, then the done line."""
    async for item in generation.pieces():
        head = {"model": model, "created_at": timestamp()}
        if isinstance(item, FinishEvent):
            if item.reason in ("error", "cancelled"):
                yield _line({"error": item.error or "the generation was cancelled"})
                return
            calls = tool_calls(generation.output) if chat else []
            if calls:
                message = {"role": "assistant", "content": "", "tool_calls": calls}
                yield _line(head | {"message": message, "done": False})
            last: dict[str, Any] = {"message": {"role": "assistant", "content": ""}} if chat else {
                "response": ""}  # fmt: skip
            yield _line(head | last | done_fields(item, time.perf_counter() - began))
            return
        if item.kind == "thinking" and thinking:
            body = {"message": {"role": "assistant", "content": "", "thinking": item.text}} if (
                chat) else {"response": "", "thinking": item.text}  # fmt: skip
        elif item.kind == "text":
            body = {"message": {"role": "assistant", "content": item.text}} if chat else {
                "response": item.text}  # fmt: skip
        else:
            continue  # calls are sent whole at the end, as Ollama does
        yield _line(head | body | {"done": False})


def _line(obj: dict[str, Any]) -> bytes:
    """One NDJSON line."""
    return json_bytes(obj) + b"\n"


def model_entry(state: ServerState) -> dict[str, Any]:
    """The served model as an entry of `/api/tags` and `/api/ps`."""
    name = f"{state.config.model_id}:latest"
    digest = hashlib.sha256(state.config.model_id.encode()).hexdigest()  # of the id, not weights
    return {"name": name, "model": name, "modified_at": timestamp(), "size": 0,
            "digest": digest, "details": details(state)}  # fmt: skip


def details(state: ServerState) -> dict[str, Any]:
    """Ollama's `details` of the served model."""
    info = state.model_info()
    arch = info.arch if info else "unknown"
    quantization = info.quantization if info else ""
    return {"parent_model": "", "format": "mlx", "family": arch, "families": [arch],
            "parameter_size": "", "quantization_level": quantization}  # fmt: skip
