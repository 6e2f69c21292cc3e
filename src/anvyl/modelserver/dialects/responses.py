"""OpenAI Responses → the internal chat request, the engine's answer → a Response, and the
bounded store behind `previous_response_id` and `GET /v1/responses/{id}`.

The store (`response_store`) is in the memory of one model server; a `previous_response_id` not
found there is a 400 saying so, never a silent fresh start.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from pydantic import ValidationError

from anvyl.modelserver.dialects.errors import refuse_fields
from anvyl.modelserver.dialects.generation import Output
from anvyl.modelserver.dialects.response_store import STORE_SIZE, STORE_TTL_S, ResponseStore
from anvyl.modelserver.dialects.responses_protocol import Item, ResponsesRequest
from anvyl.modelserver.errors import InvalidRequest
from anvyl.modelserver.events import FinishEvent
from anvyl.modelserver.protocol import ChatCompletionRequest
from anvyl.modelserver.routes import validation_error

TEXT_PARTS = ("input_text", "output_text", "text")
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")


def new_id(prefix: str) -> str:
    """An id in the Responses API's style (`resp_...`, `msg_...`, `fc_...`)."""
    return f"{prefix}_{uuid.uuid4().hex}"


def to_chat(
    body: ResponsesRequest, store: ResponseStore
) -> tuple[ChatCompletionRequest, list[dict[str, Any]]]:
    """The internal chat request, and the conversation without the instructions (to store)."""
    refuse_unsupported(body)
    history: list[dict[str, Any]] = []
    if body.previous_response_id:
        previous = store.get(body.previous_response_id)
        if previous is None:
            raise InvalidRequest(
                f"previous_response_id {body.previous_response_id!r} is not stored on this model"
                f" server (responses are kept {int(STORE_TTL_S)} s, at most {STORE_SIZE}, in the"
                " memory of the replica that made them); send the whole conversation as input",
                param="previous_response_id",
            )
        history = list(previous.history)
    if isinstance(body.input, str):
        history.append({"role": "user", "content": body.input})
    else:
        for i, item in enumerate(body.input):
            _add_item(history, item, f"input[{i}]")
    messages = [{"role": "system", "content": body.instructions}] if body.instructions else []
    effort = _effort(getattr(body, "reasoning", None))
    chat: dict[str, Any] = {
        "model": body.model, "messages": messages + history, "stream": body.stream,
        "max_tokens": body.max_output_tokens, "temperature": body.temperature,
        "top_p": body.top_p, "parallel_tool_calls": body.parallel_tool_calls,
    }  # fmt: skip
    if effort is not None:  # a reasoning template (Qwen3) reads the switch; grades are not kept
        chat["chat_template_kwargs"] = {"enable_thinking": effort != "none"}
    if body.tools:
        chat["tools"] = [_tool(t.model_dump(by_alias=True), i) for i, t in enumerate(body.tools)]
    if body.tool_choice is not None:
        chat["tool_choice"] = _tool_choice(body.tool_choice)
    fmt = body.text.format if body.text else None
    if fmt is not None and fmt.type == "json_object":
        chat["response_format"] = {"type": "json_object"}
    elif fmt is not None and fmt.type == "json_schema":
        if fmt.schema_ is None:
            raise InvalidRequest("text.format json_schema needs a schema", param="text.format")
        schema = {"name": fmt.name, "schema": fmt.schema_}
        chat["response_format"] = {"type": "json_schema", "json_schema": schema}
    try:
        return ChatCompletionRequest.model_validate(chat), history
    except ValidationError as exc:
        raise validation_error(exc.errors()) from None


def _effort(reasoning: Any) -> str | None:
    """`reasoning.effort`, checked (None when not sent)."""
    effort = reasoning.get("effort") if isinstance(reasoning, dict) else None
    if (reasoning is not None and not isinstance(reasoning, dict)) or (
        effort is not None and effort not in EFFORTS
    ):
        raise InvalidRequest(
            f"reasoning must be an object whose effort is one of {', '.join(EFFORTS)}",
            param="reasoning",
        )
    return effort


# Fields of OpenAI's Responses API that would change the answer and that Anvyl cannot honour.
REFUSED = {
    "conversation": "server-side conversations are not kept; continue with"
    " previous_response_id or send the whole conversation as input",
    "prompt": "stored prompt templates do not exist here; send instructions and input",
    "top_logprobs": "log probabilities are not given on /v1/responses; use"
    " /v1/chat/completions with logprobs",
    "context_management": "context compaction is not done here; a prompt longer than the"
    " context is a 400",
    "moderation": "no moderation runs on a local model server",
    "access_programs": "OpenAI's access programs do not apply to a local model",
}
INCLUDE_REFUSED = ("message.output_text.logprobs",)


def refuse_unsupported(body: ResponsesRequest) -> None:
    """A 400 for what a local model server cannot do."""
    refuse_fields(body.model_extra, REFUSED)
    include = (body.model_extra or {}).get("include") or []
    for value in include if isinstance(include, list) else []:
        if value in INCLUDE_REFUSED:
            raise InvalidRequest(
                f"include {value!r} is not supported: use /v1/chat/completions with logprobs",
                param="include", code="unsupported_feature",
            )  # fmt: skip
    if body.background:
        raise InvalidRequest("background responses are not supported", param="background")
    if body.truncation == "auto":
        raise InvalidRequest(
            "truncation 'auto' is not supported; a prompt longer than the context is a 400",
            param="truncation",
        )


def _add_item(history: list[dict[str, Any]], item: Item, param: str) -> None:
    """Append one input item as chat messages."""
    kind = item.type or "message"
    if kind == "message":
        if item.role not in ("user", "assistant", "system", "developer"):
            raise InvalidRequest(f"a message needs a role, not {item.role!r}", param=param)
        history.append({"role": item.role, "content": _text(item.content, f"{param}.content")})
    elif kind == "function_call":
        if not item.call_id or not item.name:
            raise InvalidRequest("a function_call item needs call_id and name", param=param)
        call = {"id": item.call_id, "type": "function",
                "function": {"name": item.name, "arguments": item.arguments or "{}"}}  # fmt: skip
        last = history[-1] if history else None
        if last is not None and last["role"] == "assistant" and "tool_calls" in last:
            last["tool_calls"].append(call)
        else:
            history.append({"role": "assistant", "content": "", "tool_calls": [call]})
    elif kind == "function_call_output":
        if not item.call_id:
            raise InvalidRequest("a function_call_output item needs call_id", param=param)
        output = _text(item.output, f"{param}.output")
        history.append({"role": "tool", "tool_call_id": item.call_id, "content": output})
    elif kind != "reasoning":  # earlier reasoning: nothing to re-read for these models
        raise InvalidRequest(
            f"input items of type {kind!r} are not supported (messages, function_call and"
            " function_call_output are)",
            param=param,
            code="unsupported_feature",
        )


def _text(content: Any, param: str) -> str:
    """Text of a string or of text parts (images and files refused)."""
    if content is None or isinstance(content, str):
        return content or ""
    parts = []
    for j, part in enumerate(content):
        if part.get("type") not in TEXT_PARTS:
            raise InvalidRequest(
                f"content parts of type {part.get('type')!r} are not supported; only text",
                param=f"{param}[{j}]",
                code="unsupported_feature",
            )
        parts.append(str(part.get("text", "")))
    return "".join(parts)


def _tool(tool: dict[str, Any], i: int) -> dict[str, Any]:
    """A Responses function tool as a chat tool."""
    if tool.get("type") != "function" or not tool.get("name"):
        raise InvalidRequest(
            f"tools of type {tool.get('type')!r} are not supported; only function tools",
            param=f"tools[{i}]",
            code="unsupported_feature",
        )
    function = {k: tool[k] for k in ("name", "description", "parameters", "strict")
                if tool.get(k) is not None}  # fmt: skip
    return {"type": "function", "function": function}


def _tool_choice(choice: str | dict[str, Any]) -> Any:
    """A Responses tool_choice as a chat one."""
    if isinstance(choice, str):
        return choice
    if choice.get("type") == "function" and choice.get("name"):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise InvalidRequest(
        "tool_choice must be auto, none, required or {'type': 'function', 'name': ...}",
        param="tool_choice",
    )


def output_items(
    output: Output, *, message_id: str, reasoning_id: str = ""
) -> list[dict[str, Any]]:
    """The `output` of a finished response: the reasoning (if any), then a message or the
    function calls."""
    items = [reasoning_item(reasoning_id or new_id("rs"), output.thinking)] if (
        output.thinking) else []  # fmt: skip
    calls = output.calls()
    if calls:
        return items + [{"type": "function_call", "id": f"fc_{c.id}", "call_id": c.id,
                         "name": c.name, "arguments": c.arguments, "status": "completed"}
                        for c in calls]  # fmt: skip
    return [*items, message_item(message_id, output.text, "completed")]


def reasoning_item(item_id: str, text: str | None) -> dict[str, Any]:
    """A reasoning item: the model's `<think>` text as `reasoning_text` (no summary is made)."""
    content = [] if text is None else [{"type": "reasoning_text", "text": text}]
    return {"type": "reasoning", "id": item_id, "summary": [], "content": content}


def message_item(message_id: str, text: str | None, status: str) -> dict[str, Any]:
    """An assistant message item (no content yet when `text` is None)."""
    content = [] if text is None else [output_text(text)]
    return {"type": "message", "id": message_id, "status": status, "role": "assistant",
            "content": content}  # fmt: skip


def output_text(text: str) -> dict[str, Any]:
    """An `output_text` content part."""
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def response_body(
    body: ResponsesRequest,
    response_id: str,
    created: int,
    *,
    output: list[dict[str, Any]],
    finish: FinishEvent | None,
    reasoning_tokens: int = 0,
) -> dict[str, Any]:
    """A Response object (in progress while `finish` is None); `reasoning_tokens`: of the
    output, those inside `<think>` tags."""
    status, incomplete = "in_progress", None
    if finish is not None:
        status = "incomplete" if finish.reason == "length" else "completed"
        if finish.reason == "length":
            incomplete = {"reason": "max_output_tokens"}
    fmt = body.text.format.model_dump(by_alias=True, exclude_none=True) if (
        body.text and body.text.format) else {"type": "text"}  # fmt: skip
    usage = None
    if finish is not None:
        usage = {"input_tokens": finish.prompt_tokens,
                 "input_tokens_details": {"cached_tokens": 0},
                 "output_tokens": finish.completion_tokens,
                 "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
                 "total_tokens": finish.prompt_tokens + finish.completion_tokens}  # fmt: skip
    return {
        "id": response_id, "object": "response", "created_at": created, "status": status,
        "model": body.model, "output": output, "error": None, "incomplete_details": incomplete,
        "instructions": body.instructions, "max_output_tokens": body.max_output_tokens,
        "temperature": body.temperature, "top_p": body.top_p,
        "tools": [t.model_dump(by_alias=True, exclude_none=True) for t in body.tools or []],
        "tool_choice": body.tool_choice or "auto",
        "parallel_tool_calls": body.parallel_tool_calls is not False,
        "previous_response_id": body.previous_response_id, "store": body.store,
        "text": {"format": fmt}, "truncation": "disabled", "usage": usage,
        "metadata": getattr(body, "metadata", None) or {},
    }  # fmt: skip


def assistant_turn(output: Output) -> dict[str, Any]:
    """The answer as a chat message, for the stored conversation."""
    calls = output.calls()
    if not calls:
        return {"role": "assistant", "content": output.text}
    return {"role": "assistant", "content": "", "tool_calls": [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for c in calls]}  # fmt: skip


def dumps(value: Any) -> str:
    """Compact JSON."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
