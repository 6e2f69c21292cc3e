"""The conversation as chat-template messages, tools, tool calls and tool results included.

A template that knows tools (`ToolFormat.native`) gets them as `tools=` and the messages in the
shape Hugging Face templates expect (assistant `tool_calls` with parsed arguments, `tool`
messages with `tool_call_id` and `name`). A template without tools gets Anvyl's generic format:
the schemas and the call syntax in the system prompt, earlier calls written back as the assistant
wrote them, and each tool result as a user message `<tool_response>{...}</tool_response>`.
"""

from __future__ import annotations

import json
from typing import Any

from anvyl.modelserver.errors import InvalidRequest
from anvyl.modelserver.protocol import ChatCompletionRequest, ChatMessage, message_text
from anvyl.modelserver.tools import ToolFormat

GENERIC_INSTRUCTIONS = (
    "You can call these functions. Each line gives a function's name, what it does and the JSON"
    " Schema of its arguments:\n{functions}\n"
    "To call functions, reply with only the calls, one per line, each written exactly as\n"
    '<tool_call>{{"name":"<function name>","arguments":<arguments as a JSON object>}}</tool_call>\n'
    "The results come back in <tool_response></tool_response>.{otherwise}"
)


def template_messages(
    request: ChatCompletionRequest, fmt: ToolFormat, *, with_tools: bool
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Messages for the chat template and extra template arguments (`tools=` when `with_tools`)."""
    names = _check_tool_results(request.messages)
    native = fmt.native
    out: list[dict[str, Any]] = []
    for i, message in enumerate(request.messages):
        role = "system" if message.role == "developer" else message.role
        text = message_text(message)
        if message.role == "tool":
            name = names[i]
            if native:
                out.append({"role": "tool", "content": text, "tool_call_id": message.tool_call_id,
                            "name": name})  # fmt: skip
            else:
                result = json.dumps({"name": name, "content": text}, ensure_ascii=False)
                out.append({"role": "user", "content": f"<tool_response>{result}</tool_response>"})
        elif message.tool_calls:
            out.append(_assistant_calls(message, text, fmt, native))
        else:
            out.append({"role": role, "content": text})
    kwargs: dict[str, Any] = {}
    if with_tools and request.tools:
        if native:
            kwargs["tools"] = [t.model_dump(exclude_none=True) for t in request.tools]
        else:
            _add_instructions(out, request)
    return out, kwargs


def _assistant_calls(
    message: ChatMessage, text: str, fmt: ToolFormat, native: bool
) -> dict[str, Any]:
    """An assistant message that made tool calls."""
    calls = message.tool_calls or []
    if native:
        return {
            "role": "assistant",
            "content": text,
            "tool_calls": [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.function.name, "arguments": _arguments(c.function)},
                }
                for c in calls
            ],
        }
    written = "\n".join(
        "<tool_call>"
        + json.dumps(
            {"name": c.function.name, "arguments": _arguments(c.function)},
            ensure_ascii=False,
            separators=(",", ":"),
        )
        + "</tool_call>"
        for c in calls
    )
    return {"role": "assistant", "content": (text + "\n" if text else "") + written}


def _arguments(function: Any) -> Any:
    """A call's arguments as a value (they travel as JSON text)."""
    try:
        return json.loads(function.arguments or "{}")
    except json.JSONDecodeError:
        return function.arguments


def _check_tool_results(messages: list[ChatMessage]) -> dict[int, str]:
    """Each tool message's function name; a 400 when its `tool_call_id` matches no call."""
    calls: dict[str, str] = {}
    names: dict[int, str] = {}
    for i, message in enumerate(messages):
        for call in message.tool_calls or []:
            calls[call.id] = call.function.name
        if message.role == "tool":
            if not message.tool_call_id:
                raise InvalidRequest(
                    "a tool message needs the tool_call_id of the call it answers",
                    param=f"messages[{i}].tool_call_id",
                )
            if message.tool_call_id not in calls:
                raise InvalidRequest(
                    f"tool_call_id {message.tool_call_id!r} matches no tool call of an earlier"
                    " assistant message",
                    param=f"messages[{i}].tool_call_id",
                )
            names[i] = calls[message.tool_call_id]
    return names


def _add_instructions(out: list[dict[str, Any]], request: ChatCompletionRequest) -> None:
    """Put the generic format's tool instructions into the system prompt."""
    lines = []
    for tool in request.tools or []:
        fn = tool.function
        entry = {"name": fn.name, "description": fn.description or "",
                 "parameters": fn.parameters or {"type": "object", "properties": {}}}  # fmt: skip
        lines.append(json.dumps(entry, ensure_ascii=False))
    otherwise = "" if request.tool_choice == "required" else " Otherwise answer in plain text."
    text = GENERIC_INSTRUCTIONS.format(functions="\n".join(lines), otherwise=otherwise)
    if out and out[0]["role"] == "system":
        out[0] = {**out[0], "content": f"{out[0]['content']}\n\n{text}".strip()}
    else:
        out.insert(0, {"role": "system", "content": text})
