"""The Responses API's stream: `response.created`, `response.in_progress`, per output item
`response.output_item.added` ... `response.output_item.done` (text through
`response.content_part.added`, `response.output_text.delta`/`.done`, `response.content_part.done`;
calls through `response.function_call_arguments.delta`/`.done`), then `response.completed` (or
`response.incomplete` when cut by `max_output_tokens`); `error` if generation fails."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from anvyl.modelserver.dialects.generation import Generation
from anvyl.modelserver.dialects.responses import (
    dumps,
    message_item,
    new_id,
    output_items,
    output_text,
    reasoning_item,
)
from anvyl.modelserver.events import FinishEvent


class Events:
    """Numbered SSE events."""

    def __init__(self) -> None:
        self.sequence = 0

    def __call__(self, kind: str, **data: Any) -> bytes:
        """One event, `sequence_number` counted."""
        payload = dumps({"type": kind, "sequence_number": self.sequence, **data})
        self.sequence += 1
        return f"event: {kind}\ndata: {payload}\n\n".encode()


async def response_events(
    generation: Generation,
    make_body: Callable[[list[dict[str, Any]], FinishEvent | None], dict[str, Any]],
    on_done: Callable[[dict[str, Any]], None],
) -> AsyncIterator[bytes]:
    """The whole event sequence of one streamed response; `on_done` gets the final body."""
    event = Events()
    yield event("response.created", response=make_body([], None))
    yield event("response.in_progress", response=make_body([], None))
    index = -1
    item: dict[str, Any] | None = None  # the open output item
    text = ""
    message_id, reasoning_id = new_id("msg"), new_id("rs")
    async for piece in generation.pieces():
        if isinstance(piece, FinishEvent):
            if item is not None:
                for out in _close(event, item, index, text):
                    yield out
            if piece.reason in ("error", "cancelled"):
                message = piece.error or "the generation was cancelled"
                yield event("error", code="server_error", message=message, param=None)
                return
            items = output_items(
                generation.output, message_id=message_id, reasoning_id=reasoning_id
            )
            final = make_body(items, piece)
            on_done(final)
            kind = (
                "response.incomplete" if final["status"] == "incomplete" else "response.completed"
            )
            yield event(kind, response=final)
            return
        if piece.kind == "thinking":
            if item is None:
                index, item = index + 1, reasoning_item(reasoning_id, None)
                yield event("response.output_item.added", output_index=index, item=item)
            text += piece.text
            yield event("response.reasoning_text.delta", item_id=reasoning_id,
                        output_index=index, content_index=0, delta=piece.text)  # fmt: skip
        elif piece.kind == "text":
            if item is not None and item["type"] == "reasoning":
                for out in _close(event, item, index, text):
                    yield out
                item, text = None, ""
            if item is None:
                index, item = index + 1, message_item(message_id, None, "in_progress")
                yield event("response.output_item.added", output_index=index, item=item)
                yield event("response.content_part.added", item_id=message_id,
                            output_index=index, content_index=0, part=output_text(""))  # fmt: skip
            text += piece.text
            yield event("response.output_text.delta", item_id=message_id, output_index=index,
                        content_index=0, delta=piece.text, logprobs=[])  # fmt: skip
        elif piece.kind == "call":
            assert piece.call is not None
            if item is not None:
                for out in _close(event, item, index, text):
                    yield out
            call = piece.call
            index, text = index + 1, ""
            item = {"type": "function_call", "id": f"fc_{call.id}", "call_id": call.id,
                    "name": call.name, "arguments": "", "status": "in_progress"}  # fmt: skip
            yield event("response.output_item.added", output_index=index, item=item)
        elif item is not None:
            text += piece.text
            yield event("response.function_call_arguments.delta", item_id=item["id"],
                        output_index=index, delta=piece.text)  # fmt: skip


def _close(event: Events, item: dict[str, Any], index: int, text: str) -> list[bytes]:
    """The events that finish an output item."""
    out = []
    if item["type"] == "reasoning":
        ids = {"item_id": item["id"], "output_index": index, "content_index": 0}
        out.append(event("response.reasoning_text.done", **ids, text=text))
        done = reasoning_item(item["id"], text)
    elif item["type"] == "message":
        ids = {"item_id": item["id"], "output_index": index, "content_index": 0}
        out.append(event("response.output_text.done", **ids, text=text, logprobs=[]))
        out.append(event("response.content_part.done", **ids, part=output_text(text)))
        done = message_item(item["id"], text, "completed")
    else:
        out.append(event("response.function_call_arguments.done", item_id=item["id"],
                         output_index=index, name=item["name"], arguments=text))  # fmt: skip
        done = item | {"arguments": text, "status": "completed"}
    out.append(event("response.output_item.done", output_index=index, item=done))
    return out
