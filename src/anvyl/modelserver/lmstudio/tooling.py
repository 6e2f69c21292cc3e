"""LM Studio predictions with structured output (`respond(response_format=...)`) and tools (`act`).

The SDK's history and prediction config are turned into the OpenAI request the REST routes
build, so both APIs share one grammar, one prompt builder and one call parser. Tool calls go
back to the SDK as `toolCallGenerationStart` / `NameReceived` / `ArgumentFragmentGenerated` /
`toolCallGenerationEnd` messages, the last one carrying the parsed `toolCallRequest`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from anvyl.modelserver.lmstudio.protocol import ProtocolError
from anvyl.modelserver.protocol import ChatCompletionRequest
from anvyl.modelserver.tools import CallParser, ToolFormat


def structured_grammar(setting: Any) -> str | None:
    """The grammar of an `llm.prediction.structured` setting (JSON schema or GBNF)."""
    if not isinstance(setting, dict) or setting.get("type", "none") == "none":
        return None
    import llguidance

    from anvyl.modelserver.grammar import json_schema_grammar

    if setting.get("type") == "json" and isinstance(setting.get("jsonSchema"), dict):
        return json_schema_grammar(setting["jsonSchema"])
    if setting.get("type") == "gbnf" and isinstance(setting.get("gbnfGrammar"), str):
        try:
            return llguidance.grammar_from("gbnf", setting["gbnfGrammar"])
        except ValueError as exc:
            raise ProtocolError(f"the GBNF grammar cannot be read: {exc}") from None
    raise ProtocolError(f"unsupported structured setting {setting.get('type')!r}")


def chat_request(history: Any, model: str, tools: Any) -> ChatCompletionRequest:
    """The SDK's history (text, tool call requests and results) and tools as an OpenAI request."""
    messages = history.get("messages") if isinstance(history, dict) else None
    if not isinstance(messages, list) or not messages:
        raise ProtocolError("the prediction has no messages")
    body: dict[str, Any] = {"model": model, "messages": [_message(m) for m in messages]}
    if isinstance(tools, dict) and tools.get("type") == "toolArray" and tools.get("tools"):
        body["tools"] = tools["tools"]
        body["tool_choice"] = "required" if tools.get("force") else "auto"
    try:
        return ChatCompletionRequest.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise ProtocolError(f"invalid prediction: {where}: {first.get('msg')}") from None


def _message(message: Any) -> dict[str, Any]:
    """One SDK history message as an OpenAI message."""
    role = message.get("role") if isinstance(message, dict) else None
    if role not in ("system", "user", "assistant", "tool"):
        raise ProtocolError(f"Anvyl does not support {role!r} messages")
    parts = message.get("content", [])
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in parts if isinstance(parts, list) else [parts]:
        kind = part.get("type") if isinstance(part, dict) else None
        if isinstance(part, str):
            texts.append(part)
        elif kind == "text":
            texts.append(str(part.get("text", "")))
        elif kind == "toolCallRequest":
            request = part.get("toolCallRequest") or {}
            calls.append({"id": request.get("id") or "", "type": "function", "function": {
                "name": request.get("name"),
                "arguments": json.dumps(request.get("arguments") or {})}})  # fmt: skip
        elif kind == "toolCallResult" and role == "tool":
            return {"role": "tool", "content": str(part.get("content", "")),
                    "tool_call_id": part.get("toolCallId")}  # fmt: skip
        else:
            raise ProtocolError(f"Anvyl does not support {kind!r} message parts")
    out: dict[str, Any] = {"role": role, "content": "".join(texts)}
    if calls:
        out["tool_calls"] = calls
    return out


@dataclass
class ToolEvents:
    """Turns generated text into the SDK's fragment and tool-call messages."""

    fmt: ToolFormat
    parser: CallParser = field(init=False)
    _announced: dict[int, int] = field(default_factory=dict)  # index -> argument chars sent
    _ended: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.parser = CallParser(self.fmt)

    def feed(self, text: str) -> tuple[str, list[dict[str, Any]]]:
        """(text to send as fragments, tool-call messages) for a new piece."""
        decided = self.parser.is_text is not None
        self.parser.feed(text)
        if self.parser.is_text:
            return (text if decided else self.parser.text), []
        out: list[dict[str, Any]] = []
        for call in self.parser.calls:
            if call.name is None:
                break
            if call.index not in self._announced:
                self._announced[call.index] = 0
                out.append({"type": "toolCallGenerationStart", "toolCallId": call.id})
                out.append({"type": "toolCallGenerationNameReceived", "name": call.name})
            fresh = call.arguments[self._announced[call.index] :]
            if fresh:
                self._announced[call.index] = len(call.arguments)
                out.append({"type": "toolCallGenerationArgumentFragmentGenerated",
                            "content": fresh})  # fmt: skip
            if call.complete and call.index not in self._ended:
                self._ended.add(call.index)
                request = {"type": "function", "id": call.id, "name": call.name,
                           "arguments": json.loads(call.arguments)}  # fmt: skip
                out.append({"type": "toolCallGenerationEnd", "toolCallRequest": request})
        return "", out

    def leftover(self) -> str:
        """Undecided text at the end of the prediction (sent as a fragment)."""
        return self.parser.text if self.parser.is_text is None else ""
