"""Pure logic of the dialects: each request becomes the internal chat request it should."""

from __future__ import annotations

import json

import pytest

from anvyl.gateway.dialects import parse_aliases, routed_model
from anvyl.gateway.routing import RoutingTable, Target
from anvyl.modelserver.dialects.anthropic import omits_thinking
from anvyl.modelserver.dialects.anthropic import to_chat as anthropic_chat
from anvyl.modelserver.dialects.anthropic_protocol import MessagesRequest
from anvyl.modelserver.dialects.errors import dialect_of, error_payload
from anvyl.modelserver.dialects.ollama import _messages as ollama_messages
from anvyl.modelserver.dialects.ollama_protocol import OllamaMessage
from anvyl.modelserver.dialects.response_store import ResponseStore
from anvyl.modelserver.dialects.responses import to_chat as responses_chat
from anvyl.modelserver.dialects.responses_protocol import ResponsesRequest
from anvyl.modelserver.errors import InvalidRequest

TOOL = {"name": "f", "description": "d", "input_schema": {"type": "object"}}


def test_anthropic_turns_become_chat_messages() -> None:
    """System blocks, tool_use and tool_result blocks, tool_choice any, stop_sequences."""
    body = MessagesRequest.model_validate({
        "model": "m", "max_tokens": 9, "stop_sequences": ["x"], "tools": [TOOL],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "system": [{"type": "text", "text": "a", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "calling"},
                {"type": "tool_use", "id": "t1", "name": "f", "input": {"k": 1}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": [
                    {"type": "text", "text": "out"}], "is_error": True},
                {"type": "text", "text": "and?"}]},
        ],
    })  # fmt: skip
    chat = anthropic_chat(body)
    roles = [m.role for m in chat.messages]
    assert roles == ["system", "user", "assistant", "tool", "user"]
    call = chat.messages[2].tool_calls[0]  # type: ignore[index]
    assert (call.id, call.function.name, json.loads(call.function.arguments)) == (
        "t1",
        "f",
        {"k": 1},
    )
    assert chat.messages[3].tool_call_id == "t1" and chat.messages[3].content == "Error: out"
    assert chat.tool_choice == "required" and chat.parallel_tool_calls is False
    assert chat.stop == ["x"] and chat.max_tokens == 9


@pytest.mark.parametrize(
    ("block", "param"),
    [
        ({"type": "image", "source": {}}, "messages[0].content[0]"),
        ({"type": "document", "source": {}}, "messages[0].content[0]"),
        ({"type": "tool_use", "id": "x", "name": "f"}, "messages[0].content[0]"),
    ],
)
def test_anthropic_refuses_blocks_by_name(block: dict[str, object], param: str) -> None:
    """Images, documents and a user's tool_use are 400s naming the block."""
    body = MessagesRequest.model_validate(
        {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [block]}]}
    )
    with pytest.raises(InvalidRequest) as raised:
        anthropic_chat(body)
    assert raised.value.param == param and str(block["type"]) in raised.value.message


def test_ollama_tool_results_match_calls_by_name() -> None:
    """Ids are made up for the calls; each result answers the earliest open call of its name."""
    messages = [
        OllamaMessage(role="user", content="q"),
        OllamaMessage.model_validate({"role": "assistant", "tool_calls": [
            {"function": {"name": "a", "arguments": {"x": 1}}},
            {"function": {"name": "b", "arguments": {}}}]}),
        OllamaMessage(role="tool", content="B", tool_name="b"),
        OllamaMessage(role="tool", content="A"),
    ]  # fmt: skip
    out = ollama_messages(messages)
    ids = [c["id"] for c in out[1]["tool_calls"]]
    assert [out[2]["tool_call_id"], out[3]["tool_call_id"]] == [ids[1], ids[0]]
    with pytest.raises(InvalidRequest):
        ollama_messages([OllamaMessage(role="tool", content="orphan", tool_name="a")])


def test_responses_items_and_previous_response() -> None:
    """Consecutive function_call items are one assistant turn; a missing previous id is a 400."""
    store = ResponseStore(size=1)
    body = ResponsesRequest.model_validate({
        "model": "m", "instructions": "be nice", "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "q"}]},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call", "call_id": "c2", "name": "g", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "1"},
        ],
    })  # fmt: skip
    chat, history = responses_chat(body, store)
    assert [m.role for m in chat.messages] == ["system", "user", "assistant", "tool"]
    assert len(chat.messages[2].tool_calls or []) == 2 and history[0]["role"] == "user"
    store.put({"id": "r1"}, history)
    store.put({"id": "r2"}, history)  # the oldest goes
    assert store.get("r1") is None and store.get("r2") is not None
    follow = ResponsesRequest(model="m", input="more", previous_response_id="r1")
    with pytest.raises(InvalidRequest) as raised:
        responses_chat(follow, store)
    assert raised.value.param == "previous_response_id"


def test_errors_and_aliases_by_path() -> None:
    """Each path answers in its API's error shape; aliases are globs, tried in order."""
    assert dialect_of("/v1/messages/count_tokens") == "anthropic"
    assert dialect_of("/api/chat") == "ollama" and dialect_of("/api/v0/models") == "openai"
    assert error_payload("/api/tags", 404, "gone", "x") == {"error": "gone"}
    anthropic_body = error_payload("/v1/messages", 429, "busy", "x")
    assert anthropic_body["error"]["type"] == "rate_limit_error"
    table = RoutingTable()
    table.update([Target(key="r", model_id="real", base_url="http://x")])
    aliases = parse_aliases(["claude-*=real", "gpt-4o=other"])
    assert routed_model("/v1/messages", "claude-opus-4", table, aliases) == "real"
    assert routed_model("/v1/messages", "real", table, aliases) == "real"
    assert routed_model("/api/chat", "real:latest", table, aliases) == "real"
    with pytest.raises(ValueError, match="NAME=MODEL"):
        parse_aliases(["nope"])


@pytest.mark.parametrize(
    ("thinking", "enabled"),
    [(None, False), ({"type": "disabled"}, False),
     ({"type": "enabled", "budget_tokens": 2048}, True), ({"type": "adaptive"}, True)],
)  # fmt: skip
def test_anthropic_thinking_switches_the_template(
    thinking: dict[str, object] | None, enabled: bool
) -> None:
    body = MessagesRequest.model_validate(
        {"model": "m", "max_tokens": 9, "messages": [{"role": "user", "content": "hi"}],
         "thinking": thinking})  # fmt: skip
    kwargs = anthropic_chat(body).chat_template_kwargs
    assert kwargs is not None and kwargs.enable_thinking is enabled


@pytest.mark.parametrize(
    ("reasoning", "enabled"),
    [(None, None), ({"effort": "none"}, False), ({"effort": "high"}, True)],
)
def test_responses_reasoning_effort_switches_the_template(
    reasoning: dict[str, str] | None, enabled: bool | None
) -> None:
    body = ResponsesRequest.model_validate({"model": "m", "input": "hi", "reasoning": reasoning})
    kwargs = responses_chat(body, ResponseStore())[0].chat_template_kwargs
    assert (kwargs.enable_thinking if kwargs else None) is enabled


@pytest.mark.parametrize(
    ("make", "param"),
    [(lambda: anthropic_chat(MessagesRequest.model_validate(
        {"model": "m", "max_tokens": 9, "messages": [{"role": "user", "content": "hi"}],
         "thinking": {"type": "on"}})), "thinking.type"),
     (lambda: responses_chat(ResponsesRequest.model_validate(
        {"model": "m", "input": "hi", "reasoning": {"effort": "max"}}), ResponseStore()),
      "reasoning"),
     (lambda: omits_thinking(MessagesRequest.model_validate(
        {"model": "m", "max_tokens": 9, "messages": [{"role": "user", "content": "hi"}],
         "thinking": {"type": "enabled", "display": "hidden"}})), "thinking.display")],
)  # fmt: skip
def test_bad_thinking_switches_are_refused(make: object, param: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        make()  # type: ignore[operator]
    assert refused.value.param == param


def test_anthropic_input_examples_are_shown_after_the_description() -> None:
    """`input_examples` reach the model in the tool's description; a bad list is a 400."""
    examples = [{"city": "Paris"}, {"city": "Rome"}]
    tool = TOOL | {"input_examples": examples}
    body = {"model": "m", "max_tokens": 9, "messages": [{"role": "user", "content": "hi"}]}
    chat = anthropic_chat(MessagesRequest.model_validate(body | {"tools": [tool]}))
    assert chat.tools is not None
    description = chat.tools[0].function.description
    assert description == 'd\n\nExample inputs:\n{"city": "Paris"}\n{"city": "Rome"}'
    bad = TOOL | {"input_examples": "Paris"}
    with pytest.raises(InvalidRequest) as refused:
        anthropic_chat(MessagesRequest.model_validate(body | {"tools": [bad]}))
    assert refused.value.param == "tools[0].input_examples"
