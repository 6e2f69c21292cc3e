"""Ollama's `/api/chat` and `/api/generate` → the internal chat request, and the engine's answer
→ Ollama's chunks (durations in nanoseconds, `done_reason`, `tool_calls` with object arguments).

Ollama's tool results name the tool (`tool_name`) instead of a call id: each is matched to the
earliest unanswered call of that name (or simply the earliest unanswered call), and ids are made
up for the assistant's calls so the chat template sees an ordinary OpenAI conversation.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from anvyl.modelserver.dialects.errors import refuse_fields
from anvyl.modelserver.dialects.generation import Output, call_input
from anvyl.modelserver.dialects.ollama_protocol import (
    HONOURED,
    INERT,
    ChatRequest,
    GenerateRequest,
    OllamaMessage,
    OllamaRequest,
)
from anvyl.modelserver.errors import InvalidRequest, ModelNotFound
from anvyl.modelserver.events import FinishEvent
from anvyl.modelserver.protocol import ChatCompletionRequest
from anvyl.modelserver.routes import validation_error
from anvyl.modelserver.state import ServerState

NS = 1_000_000_000
SAMPLING_KEYS = ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty")
# Options the engine's sampling takes directly: (its name, what values are valid).
SAMPLING_EXTRA: dict[str, tuple[str, Callable[[float], bool]]] = {
    "top_k": ("top_k", lambda v: v >= 0 and v == int(v)),
    "min_p": ("min_p", lambda v: 0.0 <= v <= 1.0),
    "repeat_penalty": ("repetition_penalty", lambda v: 0.0 < v <= 10.0),
    "repeat_last_n": ("repetition_context", lambda v: 0 < v <= 4096 and v == int(v)),
}


def resolve_model(state: ServerState, name: str) -> str:
    """The served model id for an Ollama name (`id` or `id:latest`); a 404 otherwise."""
    model_id = state.config.model_id
    if name in (model_id, f"{model_id}:latest"):
        return model_id
    raise ModelNotFound(
        f"model {name!r} not found: this server serves {model_id!r} (also as"
        f" '{model_id}:latest'); models are added with `anvyl model pull`"
        " or `anvyl model import`",
        param="model",
    )


def options_fields(
    state: ServerState, body: OllamaRequest
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Chat-request fields from `options` and `format`, and the sampling the chat request has
    no field for (`top_k`, `min_p`, the repetition penalty)."""
    fields: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in (body.options or {}).items():
        if value is None:
            continue
        if key == "num_ctx" and isinstance(value, int) and value > state.context_length():
            raise InvalidRequest(
                f"options.num_ctx {value} is above the loaded context of"
                f" {state.context_length()} tokens; start the model with a larger --ctx",
                param="options.num_ctx",
            )
        if key in INERT:
            continue
        if key not in HONOURED:
            raise InvalidRequest(
                f"option {key!r} is not supported; honoured: {', '.join(sorted(HONOURED))};"
                f" accepted and inert: {', '.join(sorted(INERT))}",
                param=f"options.{key}",
                code="unsupported_feature",
            )
        if key in SAMPLING_KEYS:
            fields[key] = value
        elif key == "stop":
            fields["stop"] = [value] if isinstance(value, str) else value
        elif key == "num_predict":
            fields["max_tokens"] = value if isinstance(value, int) and value > 0 else None
        else:
            name, valid = SAMPLING_EXTRA[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or not valid(value):
                raise InvalidRequest(f"options.{key} is out of range: {value!r}", param=key)
            extra[name] = int(value) if name in ("top_k", "repetition_context") else value
    if body.format == "json":
        fields["response_format"] = {"type": "json_object"}
    elif isinstance(body.format, dict):
        schema = {"name": "format", "schema": body.format}
        fields["response_format"] = {"type": "json_schema", "json_schema": schema}
    if isinstance(body.think, str):
        raise InvalidRequest(
            f"think levels ({body.think!r}) are not supported; send true or false", param="think"
        )
    if body.think and not state.reasons():
        raise InvalidRequest(
            f"{state.config.model_id!r} does not support thinking; leave think unset",
            param="think",
        )
    if body.think is not None:  # a reasoning template (Qwen3) reads the switch
        fields["chat_template_kwargs"] = {"enable_thinking": body.think}
    return fields, extra


# Request fields Anvyl cannot honour (extra fields pass validation: each is refused by name).
REFUSED = {
    "logprobs": "log probabilities are not given on Ollama's routes; use /v1/chat/completions"
    " with logprobs",
    "top_logprobs": "log probabilities are not given on Ollama's routes; use"
    " /v1/chat/completions with logprobs",
}
IMAGE_GENERATION = {name: "image generation is not supported: this server runs a text model"
                    for name in ("width", "height", "steps")}  # fmt: skip


def chat_request(
    state: ServerState, body: ChatRequest
) -> tuple[ChatCompletionRequest, dict[str, Any]]:
    """The internal chat request of `/api/chat`, and its extra sampling."""
    model = resolve_model(state, body.model)
    refuse_fields(body.model_extra, REFUSED)
    fields, extra = options_fields(state, body)
    messages = _messages(body.messages)
    chat = {"model": model, "messages": messages, "stream": body.stream, **fields}
    if body.tools:
        chat["tools"] = body.tools
    if body.tool_choice is not None:
        chat["tool_choice"] = body.tool_choice
    return _validate(chat), extra


def generate_request(
    state: ServerState, body: GenerateRequest
) -> tuple[ChatCompletionRequest, dict[str, Any]]:
    """The internal chat request of `/api/generate` (system and prompt, chat-templated)."""
    model = resolve_model(state, body.model)
    for name, why in (
        ("raw", "raw prompts are not supported here; use POST /v1/completions"),
        ("suffix", "suffix (fill-in-the-middle) is not supported"),
        ("template", "a custom template is not supported; the model's own chat template is used"),
        ("context", "context (deprecated in Ollama) is not supported; use /api/chat"),
        ("images", "images are not supported: this server runs text-only models"),
    ):
        if getattr(body, name):
            raise InvalidRequest(why, param=name, code="unsupported_feature")
    refuse_fields(body.model_extra, REFUSED | IMAGE_GENERATION)
    fields, extra = options_fields(state, body)
    messages = [{"role": "system", "content": body.system}] if body.system else []
    messages.append({"role": "user", "content": body.prompt})
    chat = {"model": model, "messages": messages, "stream": body.stream, **fields}
    return _validate(chat), extra


def _validate(chat: dict[str, Any]) -> ChatCompletionRequest:
    """A chat request, or the 400 naming its first bad field."""
    try:
        return ChatCompletionRequest.model_validate(chat)
    except ValidationError as exc:
        raise validation_error(exc.errors()) from None


def _messages(messages: list[OllamaMessage]) -> list[dict[str, Any]]:
    """OpenAI-shaped messages, with ids for the calls and the results matched to them."""
    out: list[dict[str, Any]] = []
    pending: list[tuple[str, str]] = []  # unanswered calls: (id, name)
    for i, message in enumerate(messages):
        if message.images:
            raise InvalidRequest(
                "images are not supported: this server runs text-only models",
                param=f"messages[{i}].images",
                code="unsupported_feature",
            )
        entry: dict[str, Any] = {"role": message.role, "content": message.content}
        if message.tool_calls:
            calls = []
            for call in message.tool_calls:
                call_id = f"call_{i}_{len(calls)}"
                args = call.function.arguments
                text = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)
                function = {"name": call.function.name, "arguments": text}
                calls.append({"id": call_id, "type": "function", "function": function})
                pending.append((call_id, call.function.name))
            entry["tool_calls"] = calls
        if message.role == "tool":
            match = next((p for p in pending if message.tool_name in (None, p[1])), None)
            if match is None:
                raise InvalidRequest(
                    "a tool message answers no earlier tool call"
                    + (f" of {message.tool_name!r}" if message.tool_name else ""),
                    param=f"messages[{i}]",
                )
            pending.remove(match)
            entry["tool_call_id"] = match[0]
        out.append(entry)
    if not out:
        raise InvalidRequest("messages must not be empty", param="messages")
    return out


def timestamp() -> str:
    """Ollama's `created_at`: RFC 3339 in UTC."""
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def done_fields(finish: FinishEvent, total_seconds: float) -> dict[str, Any]:
    """The final chunk's `done_reason`, counts and durations (nanoseconds)."""
    return {
        "done": True,
        "done_reason": "length" if finish.reason == "length" else "stop",
        "total_duration": int(total_seconds * NS),
        "load_duration": 0,
        "prompt_eval_count": finish.prompt_tokens,
        "prompt_eval_duration": int(finish.time_to_first_token * NS),
        "eval_count": finish.completion_tokens,
        "eval_duration": int(finish.generation_time * NS),
    }


def tool_calls(output: Output) -> list[dict[str, Any]]:
    """The finished calls in Ollama's shape (arguments as an object)."""
    return [
        {"function": {"index": c.index, "name": c.name, "arguments": call_input(c)}}
        for c in output.calls()
    ]
