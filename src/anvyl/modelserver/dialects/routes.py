"""The dialects' HTTP routes: Anthropic Messages (`/v1/messages`, `/v1/messages/count_tokens`)
and OpenAI Responses (`/v1/responses`) here, Ollama's API from `ollama_routes`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from anvyl.modelserver.dialects.anthropic import (
    message_body,
    omits_thinking,
    to_chat,
    wants_thinking,
)
from anvyl.modelserver.dialects.anthropic_protocol import CountTokensRequest, MessagesRequest
from anvyl.modelserver.dialects.anthropic_stream import message_events
from anvyl.modelserver.dialects.generation import start
from anvyl.modelserver.dialects.ollama_routes import OLLAMA_ENDPOINTS
from anvyl.modelserver.dialects.ollama_routes import router as ollama_router
from anvyl.modelserver.dialects.response_store import RESPONSE_ID_HEADER, ResponseStore
from anvyl.modelserver.dialects.responses import (
    assistant_turn,
    new_id,
    output_items,
    response_body,
)
from anvyl.modelserver.dialects.responses import (
    to_chat as responses_to_chat,
)
from anvyl.modelserver.dialects.responses_protocol import ResponsesRequest
from anvyl.modelserver.dialects.responses_stream import response_events
from anvyl.modelserver.errors import ModelNotFound
from anvyl.modelserver.events import FinishEvent
from anvyl.modelserver.protocol import now
from anvyl.modelserver.routes import chat_prompt, parse_body
from anvyl.modelserver.state import state_of

router = APIRouter()
DIALECT_ENDPOINTS = frozenset(
    {"/v1/messages", "/v1/messages/count_tokens", "/v1/responses", *OLLAMA_ENDPOINTS}
)
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@router.post("/v1/messages")
async def messages(request: Request) -> Response:
    """Anthropic Messages, streamed (SSE) or whole."""
    state = state_of(request)
    body = await parse_body(request, MessagesRequest)
    chat = to_chat(body)
    thinking, omitted = wants_thinking(body), omits_thinking(body)
    generation = await start(request, state, chat, {"top_k": body.top_k or 0})
    if body.stream:
        return StreamingResponse(
            message_events(generation, body.model, thinking=thinking, omitted=omitted),
            media_type="text/event-stream", headers=SSE_HEADERS,
        )  # fmt: skip
    finish = await generation.finish()
    answer = message_body(body.model, generation.output, finish, thinking=thinking,
                          omitted=omitted)  # fmt: skip
    return JSONResponse(answer)


@router.post("/v1/messages/count_tokens")
async def count_tokens(request: Request) -> JSONResponse:
    """The prompt's token count, tools and system prompt included."""
    state = state_of(request)
    body = await parse_body(request, CountTokensRequest)
    prompt, _ = await chat_prompt(state, to_chat(body))
    return JSONResponse({"input_tokens": len(prompt)})


def response_store(request: Request) -> ResponseStore:
    """This app's store of responses (made on first use)."""
    store = getattr(request.app.state, "anvyl_responses", None)
    if store is None:
        store = request.app.state.anvyl_responses = ResponseStore()
    return store


@router.post("/v1/responses")
async def responses(request: Request) -> Response:
    """OpenAI Responses, streamed (SSE) or whole; stored unless `store: false`."""
    state = state_of(request)
    body = await parse_body(request, ResponsesRequest)
    store = response_store(request)
    chat, history = responses_to_chat(body, store)
    generation = await start(request, state, chat)
    response_id, created = new_id("resp"), now()

    def make_body(output: list[dict[str, Any]], finish: FinishEvent | None) -> dict[str, Any]:
        reasoning = generation.output.reasoning_tokens
        return response_body(body, response_id, created, output=output, finish=finish,
                             reasoning_tokens=reasoning)  # fmt: skip

    def keep(final: dict[str, Any]) -> None:
        if body.store:
            store.put(final, [*history, assistant_turn(generation.output)])

    stored = {RESPONSE_ID_HEADER: response_id} if body.store else {}
    if body.stream:
        events = response_events(generation, make_body, keep)
        return StreamingResponse(
            events, media_type="text/event-stream", headers=SSE_HEADERS | stored
        )
    finish = await generation.finish()
    final = make_body(output_items(generation.output, message_id=new_id("msg")), finish)
    keep(final)
    return JSONResponse(final, headers=stored)


@router.get("/v1/responses/{response_id}")
async def stored_response(response_id: str, request: Request) -> JSONResponse:
    """A stored response, or 404."""
    stored = response_store(request).get(response_id)
    if stored is None:
        raise ModelNotFound(
            f"no stored response {response_id!r} on this model server", param="response_id",
            code="not_found",
        )  # fmt: skip
    return JSONResponse(stored.body)


router.include_router(ollama_router)  # last: its /api/{action} catch-all refuses the rest
