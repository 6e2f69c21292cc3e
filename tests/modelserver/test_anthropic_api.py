"""Anthropic Messages on the model server, driven by the real `anthropic` SDK and the real model."""

from __future__ import annotations

import json
from pathlib import Path

import anthropic
import httpx
import jsonschema
import pytest
from modelserver_harness import MODEL_ID, RunningServer, start_server, stop_server
from structured_cases import WEATHER

PARIS = [{"role": "user", "content": "What is the capital of France?"}]
GREEDY = {"temperature": 0}  # the current SDK no longer has the argument; older clients send it
WEATHER_TOOL = {"name": "get_weather", "description": "get weather", "input_schema": WEATHER}


@pytest.fixture(scope="module")
def client(structured_server: RunningServer) -> anthropic.Anthropic:
    """An Anthropic client pointed at the model server."""
    return anthropic.Anthropic(base_url=structured_server.url, api_key="x", max_retries=0)


def test_create_answers_paris_with_usage(client: anthropic.Anthropic) -> None:
    """A plain Message: one text block, end_turn, usage counted."""
    r = client.messages.create(
        model=MODEL_ID, max_tokens=40, messages=PARIS, extra_body=GREEDY,
        system="You are a helpful assistant.", metadata={"user_id": "u1"},
    )  # fmt: skip
    assert r.type == "message" and r.role == "assistant"
    assert r.content[0].type == "text" and "Paris" in r.content[0].text
    assert r.stop_reason in ("end_turn", "max_tokens")
    assert r.usage.input_tokens > 10 and 0 < r.usage.output_tokens <= 40


def test_stream_deltas_equal_the_final_text(client: anthropic.Anthropic) -> None:
    """`messages.stream`: text deltas add up to the final message, which matches `create`."""
    with client.messages.stream(
        model=MODEL_ID, max_tokens=40, messages=PARIS, extra_body=GREEDY
    ) as stream:
        deltas = list(stream.text_stream)
        final = stream.get_final_message()
    text = "".join(deltas)
    assert "Paris" in text and len(deltas) > 1
    assert final.content[0].type == "text" and final.content[0].text == text
    whole = client.messages.create(model=MODEL_ID, max_tokens=40, messages=PARIS, extra_body=GREEDY)
    assert whole.content[0].text == text
    assert final.usage.output_tokens == whole.usage.output_tokens


def test_raw_stream_has_anthropics_event_sequence(structured_server: RunningServer) -> None:
    """message_start, ping, one block's start/deltas/stop, message_delta, message_stop."""
    body = {"model": MODEL_ID, "max_tokens": 8, "messages": PARIS, "stream": True}
    with httpx.stream("POST", f"{structured_server.url}/v1/messages", json=body) as r:
        names = [line[7:] for line in r.iter_lines() if line.startswith("event: ")]
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert set(names[3:-3]) == {"content_block_delta"}
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]


def test_stop_sequence_and_max_tokens(client: anthropic.Anthropic) -> None:
    """The stop sequence that fired is named; a cut answer says max_tokens."""
    r = client.messages.create(
        model=MODEL_ID, max_tokens=40, messages=PARIS, extra_body=GREEDY, stop_sequences=["Paris"]
    )
    assert r.stop_reason == "stop_sequence" and r.stop_sequence == "Paris"
    assert "Paris" not in r.content[0].text
    cut = client.messages.create(model=MODEL_ID, max_tokens=2, messages=PARIS, extra_body=GREEDY)
    assert cut.stop_reason == "max_tokens" and cut.usage.output_tokens == 2


def test_tool_round_trip_with_tool_choice_any(client: anthropic.Anthropic) -> None:
    """`any` forces a valid tool_use; its result goes back as a tool_result block."""
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    r = client.messages.create(
        model=MODEL_ID, max_tokens=100, messages=ask, tools=[WEATHER_TOOL],
        tool_choice={"type": "any"}, extra_body=GREEDY,
    )  # fmt: skip
    assert r.stop_reason == "tool_use"
    (use,) = [b for b in r.content if b.type == "tool_use"]
    assert use.name == "get_weather"
    jsonschema.validate(use.input, WEATHER)
    with client.messages.stream(
        model=MODEL_ID,
        max_tokens=100,
        messages=ask,
        tools=[WEATHER_TOOL],
        tool_choice={"type": "any"},
        extra_body=GREEDY,
    ) as stream:
        streamed = stream.get_final_message()
    assert [b.input for b in streamed.content if b.type == "tool_use"] == [use.input]
    follow = [
        *ask,
        {"role": "assistant", "content": [b.model_dump() for b in r.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                      "content": "Sunny, 21 C"}]},
    ]  # fmt: skip
    answer = client.messages.create(
        model=MODEL_ID, max_tokens=30, messages=follow, tools=[WEATHER_TOOL], extra_body=GREEDY
    )
    assert answer.stop_reason in ("end_turn", "max_tokens", "tool_use")


def test_output_config_format_is_enforced(structured_server: RunningServer) -> None:
    """`output_config.format` (how the SDK sends structured output) gives schema-valid JSON."""
    body = {
        "model": MODEL_ID, "max_tokens": 100, "messages": PARIS,
        "output_config": {"format": {"type": "json_schema", "schema": WEATHER}},
    }  # fmt: skip
    r = httpx.post(f"{structured_server.url}/v1/messages", json=body, timeout=60)
    assert r.status_code == 200, r.text
    jsonschema.validate(json.loads(r.json()["content"][0]["text"]), WEATHER)


def test_top_k_is_honoured(client: anthropic.Anthropic) -> None:
    """top_k 1 at temperature 1 is greedy decoding, every time."""
    greedy = client.messages.create(model=MODEL_ID, max_tokens=20, messages=PARIS,
                                    extra_body=GREEDY)  # fmt: skip
    for _ in range(2):
        hot = {"temperature": 1.0, "top_k": 1}
        r = client.messages.create(model=MODEL_ID, max_tokens=20, messages=PARIS, extra_body=hot)
        assert r.content[0].text == greedy.content[0].text


def test_count_tokens(client: anthropic.Anthropic) -> None:
    """count_tokens counts the prompt create() reports, and tools make it longer."""
    counted = client.messages.count_tokens(model=MODEL_ID, messages=PARIS)
    r = client.messages.create(model=MODEL_ID, max_tokens=1, messages=PARIS)
    assert counted.input_tokens == r.usage.input_tokens
    with_tools = client.messages.count_tokens(model=MODEL_ID, messages=PARIS, tools=[WEATHER_TOOL])
    assert with_tools.input_tokens > counted.input_tokens


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"messages": PARIS}, "max_tokens"),
        ({"max_tokens": 5, "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": "AA=="}}]}]}, "image"),
        ({"max_tokens": 5, "messages": PARIS, "temperature": 1.5}, "temperature"),
        ({"max_tokens": 5, "messages": PARIS, "model": "claude-nope"}, "claude-nope"),
        ({"max_tokens": 5, "messages": PARIS, "mcp_servers": [
            {"type": "url", "url": "https://mcp.example", "name": "x"}]}, "mcp_servers"),
    ],
)  # fmt: skip
def test_errors_come_in_anthropics_shape(
    structured_server: RunningServer, body: dict[str, object], needle: str
) -> None:
    """Missing max_tokens, an image, temperature > 1, a wrong model: Anthropic's error shape."""
    r = httpx.post(f"{structured_server.url}/v1/messages", json={"model": MODEL_ID, **body})
    assert r.status_code in (400, 404)
    error = r.json()
    assert error["type"] == "error" and needle in error["error"]["message"]
    expected = "not_found_error" if r.status_code == 404 else "invalid_request_error"
    assert error["error"]["type"] == expected
    if "max_tokens" in body:  # the SDK itself refuses a call without max_tokens
        client = anthropic.Anthropic(base_url=structured_server.url, api_key="x", max_retries=0)
        with pytest.raises(anthropic.APIStatusError) as raised:
            client.messages.create(model=MODEL_ID, max_tokens=5, messages=body["messages"],
                                   extra_body=body)  # type: ignore[arg-type]  # fmt: skip
        assert needle in str(raised.value)


def test_keyed_server_takes_x_api_key(bundled_model: Path, tmp_path: Path) -> None:
    """With a key, the SDK's `x-api-key` works, a wrong key is a 401 in Anthropic's shape."""
    server = start_server(bundled_model, tmp_path / "server.log", "--ctx", "512", api_key="k1")
    try:
        good = anthropic.Anthropic(base_url=server.url, api_key="k1", max_retries=0)
        r = good.messages.create(model=MODEL_ID, max_tokens=3, messages=PARIS)
        assert r.usage.output_tokens > 0
        bad = httpx.post(f"{server.url}/v1/messages", headers={"x-api-key": "nope"},
                         json={"model": MODEL_ID, "max_tokens": 3, "messages": PARIS})  # fmt: skip
        assert bad.status_code == 401
        assert bad.json()["error"]["type"] == "authentication_error"
        openai_shape = httpx.get(f"{server.url}/v1/models", headers={"x-api-key": "k1"})
        assert openai_shape.status_code == 200
    finally:
        stop_server(server)
