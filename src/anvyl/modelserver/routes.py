"""HTTP routes: OpenAI (`/v1`), LM Studio REST (`/api/v0`), `/health` and `/metrics`.

Handlers only translate: validate the request (pydantic, then `refuse_unsupported`), tokenize,
apply the token budget, submit to the engine and render its events as JSON or SSE. Every error
is an `APIError`, rendered in OpenAI's shape by the handlers in `app.py`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from anvyl.modelserver.answer import generate
from anvyl.modelserver.errors import APIError, InvalidRequest, ModelNotFound, Unavailable
from anvyl.modelserver.fast_path import fast_path_of
from anvyl.modelserver.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    LMStudioModel,
    LMStudioModelList,
    ModelCard,
    ModelList,
    refuse_unsupported,
)
from anvyl.modelserver.state import ServerState, state_of
from anvyl.modelserver.structured import ToolPlan, plan_tools, response_grammar
from anvyl.modelserver.thinking import opens_thinking
from anvyl.modelserver.tool_prompt import template_messages
from anvyl.modelserver.tools import FORMATS

MAX_BODY_BYTES = 16 * 1024 * 1024
THINK_TAIL_TOKENS = 8  # enough to see a generation prompt end in `<think>` and whitespace
BodyT = TypeVar("BodyT", bound=BaseModel)


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
    card = ModelCard(
        id=state.config.model_id, created=state.created, tool_format=state.tool_format()
    )
    return ModelList(data=[card])


@api_router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, request: Request) -> ModelCard:
    """The served model, or 404."""
    state = state_of(request)
    check_model(state, model_id)
    return ModelCard(id=model_id, created=state.created, tool_format=state.tool_format())


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
        tool_format=state.tool_format(),
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


async def chat_prompt(
    state: ServerState, body: ChatCompletionRequest
) -> tuple[list[int], ToolPlan | None]:
    """Check a chat request and build its prompt and tool plan (shared with the dialects)."""
    check_model(state, body.model)
    refuse_unsupported(body)
    check_ready(state)
    fmt = FORMATS[state.tool_format() or "generic"]
    plan = await run_in_threadpool(plan_tools, body, fmt.name, state.engine.grammars)
    messages, extra = template_messages(body, fmt, with_tools=plan is not None)
    switch = body.chat_template_kwargs.enable_thinking if body.chat_template_kwargs else None
    if switch is not None:  # Qwen3's templates read it; others ignore it
        extra["enable_thinking"] = switch
    prompt = await tokenize(
        state, lambda tok: tok.apply_chat_template(messages, add_generation_prompt=True, **extra)
    )
    return prompt, plan


async def opens_thinking_in(state: ServerState, prompt: list[int], constrained: bool) -> bool:
    """Whether the prompt leaves the model inside `<think>` (never under a grammar, which
    constrains the output from its first token)."""
    if constrained or not state.reasons():
        return False
    loaded = state.engine.loaded
    assert loaded is not None

    def tail() -> str:
        with state.tokenizer_lock:
            return str(loaded.tokenizer.decode(prompt[-THINK_TAIL_TOKENS:]))

    return opens_thinking(await run_in_threadpool(tail))


async def chat_grammars(
    state: ServerState, body: ChatCompletionRequest, plan: ToolPlan | None
) -> list[Any] | None:
    """One output constraint per choice: the tool plan's, else `response_format`'s."""
    if plan is not None:
        return await constrain_all(state, plan.grammar, "tools", body.n)
    text = response_grammar(body.response_format)
    return await constrain_all(state, text, "response_format", body.n)


async def _chat(request: Request, *, lmstudio: bool) -> Response:
    """Shared body of the chat routes."""
    state = state_of(request)
    body = await parse_body(request, ChatCompletionRequest)
    prompt, plan = await chat_prompt(state, body)
    grammars = await chat_grammars(state, body, plan)
    inside = await opens_thinking_in(state, prompt, constrained=bool(grammars))
    return await generate(
        request, state, body, prompt, chat=True, lmstudio=lmstudio, grammars=grammars,
        tools=plan.fmt if plan else None, think_inside=inside,
    )  # fmt: skip


async def constrain_all(
    state: ServerState, grammar: str | None, param: str, n: int | None
) -> list[Any] | None:
    """One grammar processor per choice (they hold each sequence's parser state)."""
    if grammar is None:
        return None
    return [await constrain(state, grammar, param) for _ in range(n or 1)]


async def constrain(state: ServerState, grammar: str | None, param: str) -> Any:
    """The token-mask processor of `grammar` (None for free text); a 400 naming `param`."""
    if grammar is None:
        return None
    grammars = state.engine.grammars
    if grammars is None:
        raise InvalidRequest("this model server cannot constrain its output", param=param)
    return await run_in_threadpool(grammars.processor, grammar, param)


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
    text = response_grammar(body.response_format)
    grammars = await constrain_all(state, text, "response_format", body.n)
    return await generate(
        request, state, body, prompt, chat=False, lmstudio=lmstudio, grammars=grammars
    )
