"""Anthropic's stream: `message_start`, `ping`, per block `content_block_start` /
`content_block_delta` (`thinking_delta`, `text_delta`, `input_json_delta`) / `content_block_stop`,
then `message_delta` (stop reason, output tokens) and `message_stop`; `error` if it fails."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from anvyl.modelserver.dialects.anthropic import (
    message_head,
    stop_reason,
    thinking_block,
    usage,
)
from anvyl.modelserver.dialects.errors import anthropic_error
from anvyl.modelserver.dialects.generation import Generation
from anvyl.modelserver.events import FinishEvent


def sse(event: str, data: dict[str, Any]) -> bytes:
    """One named SSE event (Anthropic's streams name every event)."""
    payload = json.dumps({"type": event, **data}, ensure_ascii=False, separators=(",", ":"))
    return f"event: {event}\ndata: {payload}\n\n".encode()


async def message_events(
    generation: Generation, model: str, *, thinking: bool = False, omitted: bool = False
) -> AsyncIterator[bytes]:
    """The whole event sequence of one streamed Message (reasoning as a `thinking` block,
    `thinking_delta`s, when asked for, without them when `omitted`; else left out)."""
    start = message_head(model) | {
        "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": usage(generation.prompt_tokens, 0),
    }  # fmt: skip
    yield sse("message_start", {"message": start})
    yield sse("ping", {})
    index = -1
    kind: str | None = None  # the open block's type
    called = False
    async for item in generation.pieces():
        if isinstance(item, FinishEvent):
            if kind is not None:
                yield sse("content_block_stop", {"index": index})
            if item.reason in ("error", "cancelled"):
                message = item.error or "the generation was cancelled"
                yield sse("error", {"error": anthropic_error(500, message)["error"]})
                return
            reason = stop_reason(item, called and bool(generation.output.calls()))
            matched = item.stop_sequence if reason == "stop_sequence" else None
            delta = {"stop_reason": reason, "stop_sequence": matched}
            out = {"output_tokens": item.completion_tokens}
            yield sse("message_delta", {"delta": delta, "usage": out})
            yield sse("message_stop", {})
            return
        if item.kind == "thinking":
            if not thinking:
                continue
            if kind != "thinking":
                if kind is not None:
                    yield sse("content_block_stop", {"index": index})
                index, kind = index + 1, "thinking"
                block = thinking_block("")
                yield sse("content_block_start", {"index": index, "content_block": block})
            if not omitted:
                delta = {"type": "thinking_delta", "thinking": item.text}
                yield sse("content_block_delta", {"index": index, "delta": delta})
        elif item.kind == "text":
            if kind != "text":
                if kind is not None:
                    yield sse("content_block_stop", {"index": index})
                index, kind = index + 1, "text"
                block = {"type": "text", "text": ""}
                yield sse("content_block_start", {"index": index, "content_block": block})
            delta = {"type": "text_delta", "text": item.text}
            yield sse("content_block_delta", {"index": index, "delta": delta})
        elif item.kind == "call":
            assert item.call is not None
            if kind is not None:
                yield sse("content_block_stop", {"index": index})
            index, kind, called = index + 1, "tool_use", True
            block = {"type": "tool_use", "id": item.call.id, "name": item.call.name, "input": {}}
            yield sse("content_block_start", {"index": index, "content_block": block})
        else:
            delta = {"type": "input_json_delta", "partial_json": item.text}
            yield sse("content_block_delta", {"index": index, "delta": delta})
