"""HTTP routes: OpenAI (`/v1`), LM Studio REST (`/api/v0`), `/health` and `/metrics`.

Handlers only translate: validate the request (pydantic, then `refuse_unsupported`), tokenize,
apply the token budget, submit to the engine and render its events as JSON or SSE. Every error
is an `APIError`, rendered in OpenAI's shape by the handlers in `app.py`.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from anvyl import __version__
from anvyl.modelserver.config import ServerConfig
from anvyl.modelserver.engine import AsyncEvents, Engine, FinishEvent, GenerationRequest
from anvyl.modelserver.errors import APIError, InvalidRequest, ModelNotFound, Unavailable
from anvyl.modelserver.fast_path import fast_path_of
from anvyl.modelserver.limits import max_new_tokens
from anvyl.modelserver.lmstudio.protocol import stop_reason
from anvyl.modelserver.loader import ModelInfo
from anvyl.modelserver.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    LMStudioModel,
    LMStudioModelList,
    ModelCard,
    ModelList,
    SamplingRequest,
    Stats,
    Usage,
    chat_messages,
    new_id,
    now,
    refuse_unsupported,
)
from anvyl.modelserver.sampling import SamplingParams
from anvyl.modelserver.streaming import SSE_DONE, sse_event

MAX_BODY_BYTES = 16 * 1024 * 1024
CLIENT_CLOSED_REQUEST = 499  # nginx's status for "the client went away first"
BodyT = TypeVar("BodyT", bound=BaseModel)


@dataclass
class ServerState:
    """What the routes share: settings, the engine and the model's description."""

    config: ServerConfig
    engine: Engine
    info: ModelInfo | None
    created: int = field(default_factory=now)
    draining: bool = False
    tokenizer_lock: threading.Lock = field(default_factory=threading.Lock)

    def model_info(self) -> ModelInfo | None:
        """The loaded model's info, else what config.json said."""
        loaded = self.engine.loaded
        return loaded.info if loaded is not None else self.info

    def context_length(self) -> int:
        """The served context length (model's, capped by --ctx)."""
        info = self.model_info()
        assert info is not None
        return info.context_length


def state_of(request: Request) -> ServerState:
    """The `ServerState` of the app handling `request`."""
    return request.app.state.anvyl


# ---------------------------------------------------------------------------------- health


health_router = APIRouter()


@health_router.get("/health")
async def health(request: Request) -> JSONResponse:
    """503 while loading, failed or draining; 200 with the model id when it can serve."""
    return health_response(state_of(request))


def health_response(state: ServerState) -> JSONResponse:
    """The `/health` answer for the current engine state."""
    engine = state.engine
    if state.draining:
        return JSONResponse({"status": "draining"}, status_code=503)
    if engine.state == "loading":
        return JSONResponse({"status": "loading"}, status_code=503)
    if engine.state != "ready":
        return JSONResponse({"status": "error", "error": engine.error}, status_code=503)
    body: dict[str, Any] = {"status": "ok", "model": state.config.model_id}
    if engine.loaded is not None:
        body["dtype"] = engine.loaded.dtype
    if state.config.memory_limit:
        body["memory_limit"] = state.config.memory_limit
    return JSONResponse(body)


# ---------------------------------------------------------------------------------- api


api_router = APIRouter()


@api_router.get("/metrics")
async def metrics(request: Request) -> Response:
    """Prometheus exposition."""
    m = state_of(request).engine.metrics
    return Response(m.render(), media_type=m.content_type)


@api_router.get("/v1/models")
async def list_models(request: Request) -> ModelList:
    """The one served model."""
    state = state_of(request)
    return ModelList(data=[ModelCard(id=state.config.model_id, created=state.created)])


@api_router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, request: Request) -> ModelCard:
    """The served model, or 404."""
    state = state_of(request)
    check_model(state, model_id)
    return ModelCard(id=model_id, created=state.created)


@api_router.get("/api/v0/models")
async def lmstudio_models(request: Request) -> LMStudioModelList:
    """LM Studio's model list."""
    return LMStudioModelList(data=[lmstudio_model(state_of(request))])


@api_router.get("/api/v0/models/{model_id:path}")
async def lmstudio_model_by_id(model_id: str, request: Request) -> LMStudioModel:
    """LM Studio's model entry, or 404."""
    state = state_of(request)
    check_model(state, model_id)
    return lmstudio_model(state)


def lmstudio_model(state: ServerState) -> LMStudioModel:
    """LM Studio's description of the served model."""
    info = state.model_info()
    engine = state.engine
    loaded = engine.loaded
    return LMStudioModel(
        id=state.config.model_id,
        arch=info.arch if info else "unknown",
        quantization=info.quantization if info else "unknown",
        state="loaded"
        if engine.state == "ready"
        else "loading"
        if engine.state == "loading"
        else "not-loaded",
        max_context_length=info.context_length if info else 0,
        loaded_context_length=loaded.info.context_length if loaded else None,
        loaded_dtype=loaded.dtype if loaded else None,
        fast_path=fast_path_of(loaded.model) if loaded else None,
        memory_limit=state.config.memory_limit,
    )


@api_router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    """OpenAI chat completions, streaming or not."""
    return await _chat(request, lmstudio=False)


@api_router.post("/api/v0/chat/completions")
async def lmstudio_chat_completions(request: Request) -> Response:
    """LM Studio's chat completions: OpenAI's plus `stats`, `model_info` and `runtime`."""
    return await _chat(request, lmstudio=True)


@api_router.post("/v1/completions")
async def completions(request: Request) -> Response:
    """OpenAI text completions, streaming or not."""
    return await _completion(request, lmstudio=False)


@api_router.post("/api/v0/completions")
async def lmstudio_completions(request: Request) -> Response:
    """LM Studio's text completions."""
    return await _completion(request, lmstudio=True)


# ---------------------------------------------------------------------------------- helpers


def check_model(state: ServerState, model_id: str) -> None:
    """Raise `ModelNotFound` unless `model_id` is the served model."""
    if model_id != state.config.model_id:
        raise ModelNotFound(
            f"The model {model_id!r} does not exist on this server; it serves"
            f" {state.config.model_id!r}.",
            param="model",
        )


async def parse_body(request: Request, model: type[BodyT]) -> BodyT:
    """Read and validate a JSON body (any content type), as a 400 on failure."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise InvalidRequest(f"the request body is larger than {MAX_BODY_BYTES} bytes")
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise InvalidRequest(f"the request body is larger than {MAX_BODY_BYTES} bytes")
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidRequest("the request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc.errors()) from None


def validation_error(errors: Any) -> InvalidRequest:
    """A 400 describing the first pydantic validation error."""
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body",)]
    param = ".".join(loc) or None
    more = f" (and {len(errors) - 1} more errors)" if len(errors) > 1 else ""
    where = f"{param}: " if param else ""
    return InvalidRequest(f"Invalid request: {where}{first.get('msg')}{more}", param=param)


def sampling_params(state: ServerState, body: SamplingRequest, vocab_size: int) -> SamplingParams:
    """The engine's sampling parameters for a request."""
    bias: dict[int, float] = {}
    for key, value in (body.logit_bias or {}).items():
        try:
            token = int(key)
        except ValueError:
            raise InvalidRequest(
                f"logit_bias key {key!r} is not a token id", param="logit_bias"
            ) from None
        if not 0 <= token < vocab_size:
            raise InvalidRequest(f"logit_bias token id {token} is out of range", param="logit_bias")
        bias[token] = value
    temperature = body.temperature
    return SamplingParams(
        temperature=state.config.default_temperature if temperature is None else temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        seed=body.seed,
        presence_penalty=body.presence_penalty or 0.0,
        frequency_penalty=body.frequency_penalty or 0.0,
        logit_bias=bias,
    )


async def tokenize(state: ServerState, fn: Callable[[Any], list[int]]) -> list[int]:
    """Run `fn(tokenizer)` off the event loop; template or encoding errors become 400s."""
    engine = state.engine
    if engine.loaded is None:
        raise Unavailable(
            "the model is still loading; retry shortly", code="model_loading", retry_after=1
        )

    def run() -> list[int]:
        with state.tokenizer_lock:
            return fn(engine.loaded.tokenizer)  # type: ignore[union-attr]

    try:
        tokens = await run_in_threadpool(run)
    except APIError:
        raise
    except Exception as exc:  # a template rejecting the conversation
        raise InvalidRequest(f"the prompt could not be built: {exc}", param="messages") from None
    return [int(t) for t in tokens]


def check_ready(state: ServerState) -> None:
    """Raise 503 while the model loads or the server drains."""
    if state.draining:
        raise Unavailable("the server is shutting down", code="shutting_down")
    if state.engine.state != "ready":
        raise Unavailable(
            "the model is still loading; retry shortly"
            if state.engine.state == "loading"
            else f"the model is not available: {state.engine.error}",
            code="model_loading" if state.engine.state == "loading" else "model_failed",
            retry_after=1 if state.engine.state == "loading" else None,
        )


async def _chat(request: Request, *, lmstudio: bool) -> Response:
    """Shared body of the chat routes."""
    state = state_of(request)
    body = await parse_body(request, ChatCompletionRequest)
    check_model(state, body.model)
    refuse_unsupported(body)
    check_ready(state)
    messages = chat_messages(body)
    prompt = await tokenize(
        state, lambda tok: tok.apply_chat_template(messages, add_generation_prompt=True)
    )
    return await _generate(request, state, body, prompt, chat=True, lmstudio=lmstudio)


async def _completion(request: Request, *, lmstudio: bool) -> Response:
    """Shared body of the text-completion routes."""
    state = state_of(request)
    body = await parse_body(request, CompletionRequest)
    check_model(state, body.model)
    refuse_unsupported(body)
    check_ready(state)
    prompt_field = body.prompt
    if isinstance(prompt_field, list) and prompt_field and not isinstance(prompt_field[0], int):
        if len(prompt_field) != 1:
            raise InvalidRequest("several prompts in one request are not supported", param="prompt")
        prompt_field = prompt_field[0]  # type: ignore[assignment]
    if isinstance(prompt_field, str):
        text = prompt_field
        prompt = await tokenize(state, lambda tok: tok.encode(text))
    else:
        prompt = [int(t) for t in prompt_field]  # type: ignore[union-attr]
        vocab = state.engine.loaded.vocab_size if state.engine.loaded else 0
        if any(not 0 <= t < vocab for t in prompt):
            raise InvalidRequest("the prompt contains a token id out of range", param="prompt")
    if not prompt:
        raise InvalidRequest("the prompt is empty", param="prompt")
    return await _generate(request, state, body, prompt, chat=False, lmstudio=lmstudio)


async def _generate(
    request: Request,
    state: ServerState,
    body: ChatCompletionRequest | CompletionRequest,
    prompt: list[int],
    *,
    chat: bool,
    lmstudio: bool,
) -> Response:
    """Budget, submit and answer (JSON or SSE)."""
    loaded = state.engine.loaded
    assert loaded is not None
    max_tokens = max_new_tokens(
        body.requested_max_tokens(),
        len(prompt),
        state.context_length(),
        state.config.max_tokens_limit,
    )
    events = AsyncEvents()
    gen = GenerationRequest(
        prompt=prompt,
        max_tokens=max_tokens,
        sink=events.sink,
        sampling=sampling_params(state, body, loaded.vocab_size),
        stop=body.stop_list(),
    )
    state.engine.submit(gen)
    render = _Renderer(state, chat=chat, lmstudio=lmstudio, include_usage=body.include_usage())
    render.stop = gen.stop
    if body.stream:
        return StreamingResponse(
            _stream(request, state, gen, events, render),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    watcher = asyncio.create_task(_watch_disconnect(request, state.engine, gen.id))
    parts: list[str] = []
    try:
        async for event in events:
            if not isinstance(event, FinishEvent):
                parts.append(event.text)
    finally:
        watcher.cancel()
        state.engine.cancel(gen.id)
    finish = events.finish
    assert finish is not None
    if finish.reason == "error":
        raise APIError(finish.error or "generation failed")
    if finish.reason == "cancelled":
        if watcher.done() and not watcher.cancelled() and watcher.result():
            # The client went away; nobody reads this, but the metrics should say so.
            return Response(status_code=CLIENT_CLOSED_REQUEST)
        raise Unavailable("the request was cancelled (server shutting down)", code="cancelled")
    return JSONResponse(render.whole("".join(parts), finish))


async def _stream(
    request: Request,
    state: ServerState,
    gen: GenerationRequest,
    events: AsyncEvents,
    render: _Renderer,
) -> AsyncIterator[bytes]:
    """SSE chunks of one request; a disconnect cancels the generation."""
    watcher = asyncio.create_task(_watch_disconnect(request, state.engine, gen.id))
    try:
        if render.chat:
            yield sse_event(render.chunk({"role": "assistant", "content": ""}))
        async for event in events:
            if isinstance(event, FinishEvent):
                if event.reason in ("error", "cancelled"):
                    err = APIError(event.error or "the generation was cancelled")
                    yield sse_event(err.body())
                else:
                    yield sse_event(render.chunk(None, event))
                    if render.include_usage:
                        yield sse_event(render.usage_chunk(event))
            else:
                yield sse_event(render.chunk(event.text))
        yield SSE_DONE
    finally:
        watcher.cancel()
        state.engine.cancel(gen.id)


async def _watch_disconnect(request: Request, engine: Engine, request_id: str) -> bool:
    """Cancel `request_id` when the client goes away; True when it did."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            engine.cancel(request_id)
            return True


class _Renderer:
    """Builds response bodies and chunks for one request."""

    def __init__(
        self, state: ServerState, *, chat: bool, lmstudio: bool, include_usage: bool
    ) -> None:
        self.state = state
        self.chat = chat
        self.lmstudio = lmstudio
        self.include_usage = include_usage
        self.id = new_id("chatcmpl" if chat else "cmpl")
        self.created = now()
        self.model = state.config.model_id
        self.stop: tuple[str, ...] = ()

    def _head(self, obj: str) -> dict[str, Any]:
        """Fields every body starts with."""
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    def whole(self, text: str, finish: FinishEvent) -> dict[str, Any]:
        """A non-streaming response."""
        usage = Usage.of(finish.prompt_tokens, finish.completion_tokens).model_dump()
        if self.chat:
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": finish.reason,
            }
            out = self._head("chat.completion") | {"choices": [choice], "usage": usage}
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish.reason}
            out = self._head("text_completion") | {"choices": [choice], "usage": usage}
        if self.lmstudio:
            out |= self._lmstudio_extras(finish)
        return out

    def chunk(self, delta: Any, finish: FinishEvent | None = None) -> dict[str, Any]:
        """One streaming chunk: `delta` text or dict, or the finishing chunk."""
        reason = finish.reason if finish else None
        if self.chat:
            if isinstance(delta, str):
                delta = {"content": delta}
            choice = {"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": reason}
            out = self._head("chat.completion.chunk") | {"choices": [choice]}
        else:
            choice = {"index": 0, "text": delta or "", "logprobs": None, "finish_reason": reason}
            out = self._head("text_completion") | {"choices": [choice]}
        if self.include_usage:
            out["usage"] = None
        if finish is not None and self.lmstudio:
            out |= self._lmstudio_extras(finish)
        return out

    def usage_chunk(self, finish: FinishEvent) -> dict[str, Any]:
        """The final usage-only chunk of `stream_options.include_usage`."""
        obj = "chat.completion.chunk" if self.chat else "text_completion"
        usage = Usage.of(finish.prompt_tokens, finish.completion_tokens).model_dump()
        return self._head(obj) | {"choices": [], "usage": usage}

    def _lmstudio_extras(self, finish: FinishEvent) -> dict[str, Any]:
        """LM Studio's `stats`, `model_info` and `runtime`."""
        info = self.state.model_info()
        stats = Stats(
            tokens_per_second=round(finish.tokens_per_second, 3),
            time_to_first_token=round(finish.time_to_first_token, 4),
            generation_time=round(finish.generation_time, 4),
            stop_reason=stop_reason(finish, self.stop, user_stopped=False),
        )
        return {
            "stats": stats.model_dump(),
            "model_info": {
                "arch": info.arch if info else "unknown",
                "quant": info.quantization if info else "unknown",
                "format": "mlx",
                "context_length": info.context_length if info else 0,
            },
            "runtime": {
                "name": "anvyl-mlx",
                "version": __version__,
                "supported_formats": ["mlx"],
            },
        }
