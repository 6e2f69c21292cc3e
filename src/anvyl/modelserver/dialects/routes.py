"""The dialects' HTTP routes: Anthropic Messages (`/v1/messages`, `/v1/messages/count_tokens`)
here, Ollama's API from `ollama_routes`."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from anvyl.modelserver.dialects.anthropic import message_body, to_chat
from anvyl.modelserver.dialects.anthropic_protocol import CountTokensRequest, MessagesRequest
from anvyl.modelserver.dialects.anthropic_stream import message_events
from anvyl.modelserver.dialects.generation import start
from anvyl.modelserver.dialects.ollama_routes import OLLAMA_ENDPOINTS
from anvyl.modelserver.dialects.ollama_routes import router as ollama_router
from anvyl.modelserver.routes import chat_prompt, parse_body, state_of

router = APIRouter()
DIALECT_ENDPOINTS = frozenset({"/v1/messages", "/v1/messages/count_tokens", *OLLAMA_ENDPOINTS})
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@router.post("/v1/messages")
async def messages(request: Request) -> Response:
    """Anthropic Messages, streamed (SSE) or whole."""
    state = state_of(request)
    body = await parse_body(request, MessagesRequest)
    chat = to_chat(body)
    generation = await start(request, state, chat, top_k=body.top_k or 0)
    if body.stream:
        return StreamingResponse(
            message_events(generation, body.model), media_type="text/event-stream",
            headers=SSE_HEADERS,
        )  # fmt: skip
    finish = await generation.finish()
    return JSONResponse(message_body(body.model, generation.output, finish))


@router.post("/v1/messages/count_tokens")
async def count_tokens(request: Request) -> JSONResponse:
    """The prompt's token count, tools and system prompt included."""
    state = state_of(request)
    body = await parse_body(request, CountTokensRequest)
    prompt, _ = await chat_prompt(state, to_chat(body))
    return JSONResponse({"input_tokens": len(prompt)})


router.include_router(ollama_router)  # last: its /api/{action} catch-all refuses the rest
