"""Anthropic Messages → the internal chat request, and the engine's answer → a Message.

`system` becomes a system message, text blocks become message text, `tool_use` blocks become an
assistant's tool calls and `tool_result` blocks become tool messages, `tools`/`tool_choice`
become function tools enforced by the same grammar as the OpenAI route's, and
`output_config.format` becomes `response_format` (a JSON schema, enforced).
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from anvyl.modelserver.dialects.anthropic_protocol import (
    Block,
    CountTokensRequest,
    Message,
    MessagesRequest,
)
from anvyl.modelserver.dialects.errors import refuse_fields
from anvyl.modelserver.dialects.generation import Output, call_input
from anvyl.modelserver.errors import InvalidRequest
from anvyl.modelserver.events import FinishEvent
from anvyl.modelserver.protocol import ChatCompletionRequest, new_id
from anvyl.modelserver.routes import validation_error

UNREADABLE = {
    "image": "image blocks are not supported: this server runs text-only models",
    "document": "document blocks are not supported: send the document's text as a text block",
    "search_result": "search_result blocks are not supported; send their text as text blocks",
    "server_tool_use": "server tools are not supported by a local model",
    "web_search_tool_result": "server tools are not supported by a local model",
    "container_upload": "container_upload blocks are not supported",
}
# Request fields that need Anthropic's servers (remote tool execution): refused by name.
REFUSED = {
    "mcp_servers": "remote MCP servers are not called by a local model server; declare their"
    " tools as client tools",
    "container": "code-execution containers and skills do not exist on a local model server",
}
SKIPPED = {"thinking", "redacted_thinking"}  # earlier reasoning sent back: not re-read
THINKING_TYPES = ("enabled", "adaptive", "disabled")
DISPLAYS = ("summarized", "omitted")


def wants_thinking(body: CountTokensRequest) -> bool:
    """Whether the client asked for `thinking` blocks (`enabled` or `adaptive`)."""
    if body.thinking is None:
        return False
    kind = body.thinking.get("type")
    if kind not in THINKING_TYPES:
        raise InvalidRequest(
            f"thinking.type must be one of {', '.join(THINKING_TYPES)}, not {kind!r}",
            param="thinking.type",
        )
    return kind != "disabled"


def omits_thinking(body: CountTokensRequest) -> bool:
    """Whether `thinking.display` is `omitted`: blocks come back without their text."""
    display = (body.thinking or {}).get("display")
    if display is not None and display not in DISPLAYS:
        raise InvalidRequest(
            f"thinking.display must be one of {', '.join(DISPLAYS)}, not {display!r}",
            param="thinking.display",
        )
    return display == "omitted"


def to_chat(body: CountTokensRequest) -> ChatCompletionRequest:
    """The internal chat request of an Anthropic request (a 400 naming what it cannot take)."""
    refuse_fields(body.model_extra, REFUSED)
    messages: list[dict[str, Any]] = []
    if body.system:
        messages.append({"role": "system", "content": _text(body.system, "system")})
    for i, message in enumerate(body.messages):
        messages.extend(_turn(message, f"messages[{i}]"))
    chat: dict[str, Any] = {"model": body.model, "messages": messages}
    # A reasoning template (Qwen3) skips its reasoning when not asked for it, as Claude does.
    chat["chat_template_kwargs"] = {"enable_thinking": wants_thinking(body)}
    if body.tools:
        chat["tools"] = [_tool(t, i) for i, t in enumerate(body.tools)]
    if body.tool_choice is not None:
        choice = body.tool_choice
        if choice.type == "tool":
            if not choice.name:
                raise InvalidRequest("tool_choice type 'tool' needs a name", param="tool_choice")
            chat["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
        else:
            chat["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[choice.type]
        if choice.disable_parallel_tool_use:
            chat["parallel_tool_calls"] = False
    fmt = body.output_config.format if body.output_config else None
    if fmt is not None:
        if body.tools and chat.get("tool_choice") != "none":
            raise InvalidRequest(
                "output_config.format together with tools is not supported",
                param="output_config.format",
            )
        chat.pop("tools", None)
        chat.pop("tool_choice", None)
        schema = {"name": "output", "schema": fmt.schema_}
        chat["response_format"] = {"type": "json_schema", "json_schema": schema}
    if isinstance(body, MessagesRequest):
        chat |= {"max_tokens": body.max_tokens, "temperature": body.temperature,
                 "top_p": body.top_p, "stop": body.stop_sequences or None,
                 "stream": body.stream}  # fmt: skip
    try:
        return ChatCompletionRequest.model_validate(chat)
    except ValidationError as exc:
        raise validation_error(exc.errors()) from None


def _text(content: str | list[Block], param: str) -> str:
    """Text of a string or of text blocks (anything else refused)."""
    if isinstance(content, str):
        return content
    parts = []
    for j, block in enumerate(content):
        _check_block(block, f"{param}[{j}]", allowed={"text"})
        parts.append(block.text or "")
    return "\n\n".join(parts) if len(parts) > 1 else "".join(parts)


def _check_block(block: Block, param: str, allowed: set[str]) -> None:
    """Refuse a block of a type that cannot appear here."""
    if block.type in UNREADABLE:
        raise InvalidRequest(UNREADABLE[block.type], param=param, code="unsupported_feature")
    if block.type not in allowed:
        raise InvalidRequest(
            f"a {block.type!r} block is not allowed here (allowed: {sorted(allowed)})", param=param
        )


def _turn(message: Message, param: str) -> list[dict[str, Any]]:
    """The chat messages of one Anthropic turn."""
    if isinstance(message.content, str):
        return [{"role": message.role, "content": message.content}]
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    allowed = {"text", "tool_use", *SKIPPED} if message.role == "assistant" else {
        "text", "tool_result"}  # fmt: skip
    for j, block in enumerate(message.content):
        where = f"{param}.content[{j}]"
        _check_block(block, where, allowed)
        if block.type == "text":
            texts.append(block.text or "")
        elif block.type == "tool_use":
            if not block.id or not block.name:
                raise InvalidRequest("a tool_use block needs an id and a name", param=where)
            arguments = json.dumps(block.input or {}, ensure_ascii=False)
            calls.append({"id": block.id, "type": "function",
                          "function": {"name": block.name, "arguments": arguments}})  # fmt: skip
        elif block.type == "tool_result":
            if not block.tool_use_id:
                raise InvalidRequest("a tool_result block needs a tool_use_id", param=where)
            content = _text(block.content or "", f"{where}.content")
            if block.is_error:
                content = f"Error: {content}"
            results.append({"role": "tool", "tool_call_id": block.tool_use_id,
                            "content": content})  # fmt: skip
    text = "".join(texts)
    if message.role == "assistant":
        out: dict[str, Any] = {"role": "assistant", "content": text}
        if calls:
            out["tool_calls"] = calls
        return [out]
    return results + ([{"role": "user", "content": text}] if texts or not results else [])


def _tool(tool: Any, i: int) -> dict[str, Any]:
    """An Anthropic client tool as a function tool."""
    if tool.type not in (None, "custom"):
        raise InvalidRequest(
            f"the server tool {tool.type!r} is not supported; declare client tools with"
            " name, description and input_schema",
            param=f"tools[{i}]",
            code="unsupported_feature",
        )
    function = {"name": tool.name, "parameters": tool.input_schema}
    description = (tool.description or "") + _examples(tool, i)
    if description:
        function["description"] = description.strip()
    return {"type": "function", "function": function}


def _examples(tool: Any, i: int) -> str:
    """`input_examples`, shown to the model after the description (as Anthropic shows them)."""
    examples = (tool.model_extra or {}).get("input_examples")
    if not examples:
        return ""
    if not isinstance(examples, list) or not all(isinstance(e, dict) for e in examples):
        raise InvalidRequest("input_examples must be a list of objects",
                             param=f"tools[{i}].input_examples")  # fmt: skip
    lines = "\n".join(json.dumps(e, ensure_ascii=False) for e in examples)
    return f"\n\nExample inputs:\n{lines}"


def stop_reason(finish: FinishEvent, called: bool) -> str:
    """Anthropic's `stop_reason` of an engine finish."""
    if finish.reason == "length":
        return "max_tokens"
    if called:
        return "tool_use"
    if finish.stop_sequence is not None:
        return "stop_sequence"
    return "end_turn"


def message_body(
    model: str,
    output: Output,
    finish: FinishEvent,
    message_id: str | None = None,
    *,
    thinking: bool = False,
    omitted: bool = False,
) -> dict[str, Any]:
    """The non-streamed Message (its reasoning as a `thinking` block when asked for, empty
    when `omitted`)."""
    calls = output.calls()
    content: list[dict[str, Any]] = []
    if thinking and output.thinking:
        content.append(thinking_block("" if omitted else output.thinking))
    if calls:
        content += [{"type": "tool_use", "id": c.id, "name": c.name, "input": call_input(c)}
                    for c in calls]  # fmt: skip
    else:
        content.append({"type": "text", "text": output.text})
    reason = stop_reason(finish, bool(calls))
    return message_head(model, message_id) | {
        "content": content,
        "stop_reason": reason,
        "stop_sequence": finish.stop_sequence if reason == "stop_sequence" else None,
        "usage": usage(finish.prompt_tokens, finish.completion_tokens),
    }


def thinking_block(text: str) -> dict[str, Any]:
    """A `thinking` block; unsigned, as a local model's reasoning has no signature to check."""
    return {"type": "thinking", "thinking": text, "signature": ""}


def message_head(model: str, message_id: str | None = None) -> dict[str, Any]:
    """The fields a Message starts with."""
    return {"id": message_id or new_id("msg"), "type": "message", "role": "assistant",
            "model": model}  # fmt: skip


def usage(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    """Anthropic's `usage` (no prompt caching here: the cache counts are zero)."""
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
