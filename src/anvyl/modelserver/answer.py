"""Submitting a validated request to the engine and answering it, whole (JSON) or streamed (SSE).

`n` choices are `n` engine requests with the same prompt, decoded side by side in the batch
(their prompts prefill together); a seeded request gives choice `i` the seed `seed + i`, so the
choices differ. Events of all choices arrive on one queue, tagged with their index.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from anvyl.modelserver.errors import APIError, InvalidRequest, Unavailable
from anvyl.modelserver.events import Event, FinishEvent, GenerationRequest
from anvyl.modelserver.limits import max_new_tokens
from anvyl.modelserver.protocol import ChatCompletionRequest, CompletionRequest, SamplingRequest
from anvyl.modelserver.render import Renderer
from anvyl.modelserver.sampling import SamplingParams
from anvyl.modelserver.streaming import SSE_DONE, sse_event
from anvyl.modelserver.tools import ToolFormat

if TYPE_CHECKING:
    from anvyl.modelserver.engine import Engine
    from anvyl.modelserver.state import ServerState

CLIENT_CLOSED_REQUEST = 499  # nginx's status for "the client went away first"


class ChoiceEvents:
    """The events of `n` engine requests on one asyncio queue, as (choice index, event)."""

    def __init__(self, n: int) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()
        self.finishes: dict[int, FinishEvent] = {}
        self.n = n

    def sink(self, index: int) -> Any:
        """The engine-side sink of choice `index`."""

        def put(event: Event) -> None:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, (index, event))

        return put

    async def __aiter__(self) -> AsyncIterator[tuple[int, Event]]:
        """Events until every choice has finished."""
        while len(self.finishes) < self.n:
            index, event = await self._queue.get()
            if isinstance(event, FinishEvent):
                self.finishes[index] = event
            yield index, event


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


async def generate(
    request: Request,
    state: ServerState,
    body: ChatCompletionRequest | CompletionRequest,
    prompt: list[int],
    *,
    chat: bool,
    lmstudio: bool,
    grammars: list[Any] | None = None,
    tools: ToolFormat | None = None,
    think_inside: bool = False,
) -> Response:
    """Budget, submit every choice and answer (JSON or SSE)."""
    loaded = state.engine.loaded
    assert loaded is not None
    max_tokens = max_new_tokens(
        body.requested_max_tokens(), len(prompt), state.context_length(),
        state.config.max_tokens_limit,
    )  # fmt: skip
    n = body.n or 1
    events = ChoiceEvents(n)
    sampling = sampling_params(state, body, loaded.vocab_size)
    gens = []
    for i in range(n):
        seeded = (
            replace(sampling, seed=sampling.seed + i) if sampling.seed is not None else sampling
        )
        gens.append(GenerationRequest(
            prompt=prompt, max_tokens=max_tokens, sink=events.sink(i), sampling=seeded,
            stop=body.stop_list(), grammar=grammars[i] if grammars else None,
            logprobs=body.logprob_count(),
        ))  # fmt: skip
    try:
        for gen in gens:
            state.engine.submit(gen)
    except APIError:
        for gen in gens:
            state.engine.cancel(gen.id)
        raise
    renders = [
        Renderer(state, chat=chat, lmstudio=lmstudio, include_usage=body.include_usage(), index=i)
        for i in range(n)
    ]
    for r in renders:
        r.id, r.created, r.stop, r.tools = renders[0].id, renders[0].created, gens[0].stop, tools
        r.think_inside = think_inside
    if body.stream:
        return StreamingResponse(
            _stream(request, state, gens, events, renders),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    return await _whole(request, state, gens, events, renders)


async def _whole(
    request: Request,
    state: ServerState,
    gens: list[GenerationRequest],
    events: ChoiceEvents,
    renders: list[Renderer],
) -> Response:
    """The non-streamed answer with every choice."""
    watcher = asyncio.create_task(_watch_disconnect(request, state.engine, [g.id for g in gens]))
    parts: list[list[tuple[str, int]]] = [[] for _ in gens]
    logprobs: list[list[dict[str, Any]]] = [[] for _ in gens]
    try:
        async for index, event in events:
            if not isinstance(event, FinishEvent):
                parts[index].append((event.text, event.tokens))
                logprobs[index].extend(event.logprobs)
    finally:
        watcher.cancel()
        for gen in gens:
            state.engine.cancel(gen.id)
    for finish in events.finishes.values():
        if finish.reason == "error":
            raise APIError(finish.error or "generation failed")
        if finish.reason == "cancelled":
            if watcher.done() and not watcher.cancelled() and watcher.result():
                # The client went away; nobody reads this, but the metrics should say so.
                return Response(status_code=CLIENT_CLOSED_REQUEST)
            raise Unavailable("the request was cancelled (server shutting down)", code="cancelled")
    asked = gens[0].logprobs is not None
    bodies = [
        r.whole(parts[i], events.finishes[i], logprobs[i] if asked else None)
        for i, r in enumerate(renders)
    ]
    out = bodies[0]
    if len(bodies) > 1:
        out["choices"] = [b["choices"][0] for b in bodies]
        completion = sum(f.completion_tokens for f in events.finishes.values())
        usage = out["usage"]
        usage["completion_tokens"] = completion
        usage["total_tokens"] = usage["prompt_tokens"] + completion
        if "completion_tokens_details" in usage:
            reasoning = sum(r.reasoning_tokens for r in renders)
            usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    return JSONResponse(out)


async def _stream(
    request: Request,
    state: ServerState,
    gens: list[GenerationRequest],
    events: ChoiceEvents,
    renders: list[Renderer],
) -> AsyncIterator[bytes]:
    """SSE chunks of every choice; a disconnect cancels the generations."""
    watcher = asyncio.create_task(_watch_disconnect(request, state.engine, [g.id for g in gens]))
    asked = gens[0].logprobs is not None
    try:
        if renders[0].chat:
            for r in renders:
                yield sse_event(r.chunk({"role": "assistant", "content": ""}))
        async for index, event in events:
            render = renders[index]
            if isinstance(event, FinishEvent):
                for delta in render.stream_end():
                    yield sse_event(render.chunk(delta))
                if event.reason in ("error", "cancelled"):
                    err = APIError(event.error or "the generation was cancelled")
                    yield sse_event(err.body())
                else:
                    yield sse_event(render.chunk(None, event))
            else:
                entries = list(event.logprobs) if asked else None
                deltas = render.deltas(event.text, event.tokens) or ([""] if entries else [])
                for delta in deltas:
                    yield sse_event(render.chunk(delta, logprobs=entries))
                    entries = [] if asked else None
        if renders[0].include_usage and len(events.finishes) == len(gens):
            reasoning = sum(r.reasoning_tokens for r in renders)
            yield sse_event(renders[0].usage_chunk(list(events.finishes.values()), reasoning))
        yield SSE_DONE
    finally:
        watcher.cancel()
        for gen in gens:
            state.engine.cancel(gen.id)


async def _watch_disconnect(request: Request, engine: Engine, request_ids: list[str]) -> bool:
    """Cancel the requests when the client goes away; True when it did."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            for request_id in request_ids:
                engine.cancel(request_id)
            return True
