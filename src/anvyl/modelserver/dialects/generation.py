"""One chat generation for a dialect: build it like the OpenAI route, submit it, and turn the
generated text into text and tool-call pieces (`Output`) that each dialect renders its own way.

Tool calls are parsed by the same `tools.CallParser` as the OpenAI route's, so a dialect's calls
are exactly the OpenAI route's calls: a block of calls or plain text, never both.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from fastapi import Request

from anvyl.modelserver.answer import _watch_disconnect as watch_disconnect
from anvyl.modelserver.answer import sampling_params
from anvyl.modelserver.errors import APIError, Unavailable
from anvyl.modelserver.events import AsyncEvents, FinishEvent, GenerationRequest, TextEvent
from anvyl.modelserver.limits import max_new_tokens
from anvyl.modelserver.protocol import ChatCompletionRequest
from anvyl.modelserver.routes import chat_grammars, chat_prompt, opens_thinking_in
from anvyl.modelserver.state import ServerState
from anvyl.modelserver.thinking import Part, ThinkSplitter
from anvyl.modelserver.tools import CallParser, ParsedCall, ToolFormat


@dataclass(frozen=True)
class Piece:
    """What new generated text means: reasoning, text, a call's start (name known) or argument
    text."""

    kind: Literal["thinking", "text", "call", "arguments"]
    text: str = ""
    call: ParsedCall | None = None


@dataclass
class Output:
    """Splits generated text into pieces as it grows (reasoning in `<think>` tags first, see
    thinking.py); `text` is the answer, `thinking` the reasoning."""

    tools: ToolFormat | None
    inside: bool = False  # the prompt opened `<think>`
    text: str = ""
    _parser: CallParser | None = None
    _sent: dict[int, int] = field(default_factory=dict)  # call index -> argument chars sent
    _splitter: ThinkSplitter = field(init=False)

    def __post_init__(self) -> None:
        self._splitter = ThinkSplitter(inside=self.inside)

    @property
    def thinking(self) -> str:
        """The reasoning split off so far."""
        return self._splitter.thinking

    @property
    def reasoning_tokens(self) -> int:
        """Generated tokens of the reasoning so far (see thinking.py)."""
        return self._splitter.reasoning_tokens

    def feed(self, piece: str, tokens: int = 0) -> list[Piece]:
        """Pieces for newly generated text (made of `tokens` generated tokens)."""
        return self._pieces(self._splitter.feed(piece, tokens))

    def _pieces(self, parts: list[Part]) -> list[Piece]:
        out: list[Piece] = []
        for kind, part in parts:
            out += [Piece("thinking", part)] if kind == "thinking" else self._answer(part)
        return out

    def _answer(self, piece: str) -> list[Piece]:
        """Pieces of answer text (tool calls parsed)."""
        self.text += piece
        if self.tools is None:
            return [Piece("text", piece)] if piece else []
        if self._parser is None:
            self._parser = CallParser(self.tools)
        parser = self._parser
        decided = parser.is_text is not None
        parser.feed(piece)
        if parser.is_text:
            text = parser.text if not decided else piece
            return [Piece("text", text)] if text else []
        out: list[Piece] = []
        for call in parser.calls:
            if call.name is None:
                break
            if call.index not in self._sent:
                self._sent[call.index] = 0
                out.append(Piece("call", call=call))
            fresh = call.arguments[self._sent[call.index] :]
            if fresh:
                self._sent[call.index] = len(call.arguments)
                out.append(Piece("arguments", fresh, call))
        return out

    def end(self) -> list[Piece]:
        """Text still held back when generation ends (a cut-off tag or call opening)."""
        out = self._pieces(self._splitter.end())
        parser = self._parser
        if parser is not None and parser.is_text is None and parser.text:
            out.append(Piece("text", parser.text))
        return out

    def calls(self) -> list[ParsedCall]:
        """The finished tool calls (none when the answer is text)."""
        if self._parser is None:
            if self.tools is None:
                return []
            self._parser = CallParser(self.tools)
            self._parser.feed(self.text)
        return self._parser.finished_calls()


def call_input(call: ParsedCall) -> Any:
    """A finished call's arguments as a value."""
    return json.loads(call.arguments or "{}")


@dataclass
class Generation:
    """A submitted chat generation: its events, its output splitter and its prompt size."""

    state: ServerState
    request: Request
    gen: GenerationRequest
    events: AsyncEvents
    output: Output
    prompt_tokens: int

    async def pieces(self) -> AsyncIterator[Piece | FinishEvent]:
        """Text pieces, then the finish; a disconnect (or leaving early) cancels the request."""
        engine = self.state.engine
        watcher = asyncio.create_task(watch_disconnect(self.request, engine, [self.gen.id]))
        try:
            async for event in self.events:
                if isinstance(event, TextEvent):
                    for piece in self.output.feed(event.text, event.tokens):
                        yield piece
                else:
                    for piece in self.output.end():
                        yield piece
                    yield event
        finally:
            watcher.cancel()
            engine.cancel(self.gen.id)

    async def finish(self) -> FinishEvent:
        """Run to the end (non-streaming); errors and cancellations raise."""
        finish: FinishEvent | None = None
        async for item in self.pieces():
            if isinstance(item, FinishEvent):
                finish = item
        assert finish is not None
        raise_failure(finish)
        return finish


def raise_failure(finish: FinishEvent) -> None:
    """Raise for a generation that failed or was cancelled."""
    if finish.reason == "error":
        raise APIError(finish.error or "generation failed")
    if finish.reason == "cancelled":
        raise Unavailable("the request was cancelled (server shutting down)", code="cancelled")


async def start(
    request: Request,
    state: ServerState,
    body: ChatCompletionRequest,
    sampling_extra: dict[str, Any] | None = None,
) -> Generation:
    """Build the prompt and constraints as the OpenAI route does, and submit one generation;
    `sampling_extra` sets what OpenAI's request has no field for (`top_k`, `min_p`,
    `repetition_penalty`, `repetition_context`; a top_k of at least the vocabulary is off)."""
    prompt, plan = await chat_prompt(state, body)
    grammars = await chat_grammars(state, body, plan)
    loaded = state.engine.loaded
    assert loaded is not None
    max_tokens = max_new_tokens(
        body.requested_max_tokens(), len(prompt), state.context_length(),
        state.config.max_tokens_limit,
    )  # fmt: skip
    events = AsyncEvents()
    sampling = sampling_params(state, body, loaded.vocab_size)
    extra = dict(sampling_extra or {})
    if extra.get("top_k", 0) >= loaded.vocab_size:
        extra["top_k"] = 0
    sampling = replace(sampling, **extra)
    gen = GenerationRequest(
        prompt=prompt, max_tokens=max_tokens, sink=events.sink,
        sampling=sampling, stop=body.stop_list(),
        grammar=grammars[0] if grammars else None,
    )  # fmt: skip
    inside = await opens_thinking_in(state, prompt, constrained=bool(grammars))
    state.engine.submit(gen)
    output = Output(plan.fmt if plan else None, inside=inside)
    return Generation(state, request, gen, events, output, len(prompt))
