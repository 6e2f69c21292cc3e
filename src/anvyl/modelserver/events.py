"""What front ends hand the engine (`GenerationRequest`) and what it sends back (events).

The engine thread calls a request's `sink` with `TextEvent`s and exactly one final `FinishEvent`;
`AsyncEvents` adapts a sink to an asyncio consumer.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from anvyl.modelserver.sampling import SamplingParams

FinishReason = Literal["stop", "length", "cancelled", "error"]


@dataclass(frozen=True)
class TextEvent:
    """New text of one request, with its tokens' log probabilities when they were asked for,
    and how many generated tokens it came from (a token may add no text yet: a partial
    character, a possible stop string)."""

    text: str
    logprobs: tuple[dict[str, Any], ...] = ()
    tokens: int = 1


@dataclass(frozen=True)
class FinishEvent:
    """The end of one request, with its counts and timings (seconds)."""

    reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    time_to_first_token: float
    generation_time: float
    error: str | None = None
    stop_sequence: str | None = None  # the stop string that ended it (reason "stop")

    @property
    def tokens_per_second(self) -> float:
        """Decode speed after the first token."""
        if self.completion_tokens > 1 and self.generation_time > 0:
            return (self.completion_tokens - 1) / self.generation_time
        return 0.0


Event = TextEvent | FinishEvent
Sink = Callable[[Event], None]


@dataclass
class GenerationRequest:
    """One generation: prompt token ids, limits, sampling and where its events go."""

    prompt: list[int]
    max_tokens: int
    sink: Sink
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop: tuple[str, ...] = ()
    # A `grammar.GrammarProcessor`: the token mask of structured output and tool calls.
    grammar: Any = None
    # Log probabilities per token: None for none, else how many alternatives (0-20) to give.
    logprobs: int | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    submitted_at: float = field(default_factory=time.perf_counter)


class AsyncEvents:
    """An asyncio view of one request's events: pass `sink` to the request, iterate this."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop or asyncio.get_running_loop()
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self.finish: FinishEvent | None = None

    def sink(self, event: Event) -> None:
        """Called on the engine thread."""
        self._loop.call_soon_threadsafe(self._queue.put_nowait, event)

    async def __aiter__(self) -> AsyncIterator[Event]:
        """Events up to and including the finish."""
        while self.finish is None:
            event = await self._queue.get()
            if isinstance(event, FinishEvent):
                self.finish = event
            yield event
