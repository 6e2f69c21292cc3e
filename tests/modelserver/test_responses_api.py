"""OpenAI Responses on the model server, driven by the real `openai` SDK and the real model."""

from __future__ import annotations

import json

import httpx
import jsonschema
import openai
import pytest
from modelserver_harness import MODEL_ID, RunningServer
from structured_cases import WEATHER

QUESTION = "What is the capital of France?"
WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "get weather",
    "parameters": WEATHER,
    "strict": True,
}


@pytest.fixture(scope="module")
def client(structured_server: RunningServer) -> openai.OpenAI:
    """The SDK pointed at the model server."""
    return openai.OpenAI(base_url=f"{structured_server.url}/v1", api_key="x", max_retries=0)


def test_create_answers_paris_and_is_stored(client: openai.OpenAI) -> None:
    """A string input gives one message; the response is stored and can be continued."""
    r = client.responses.create(
        model=MODEL_ID,
        input=QUESTION,
        temperature=0,
        max_output_tokens=40,
    )
    assert r.status in ("completed", "incomplete") and "Paris" in r.output_text
    assert r.usage is not None and r.usage.input_tokens > 5 and r.usage.output_tokens > 0
    sizes = []
    for instructions in ("Be brief.", "Be brief. " * 10):  # a template's default system prompt
        told = client.responses.create(model=MODEL_ID, input=QUESTION, max_output_tokens=1,
                                       instructions=instructions, store=False)  # fmt: skip
        assert told.usage is not None
        sizes.append(told.usage.input_tokens)
    assert sizes[1] > sizes[0]  # instructions reach the prompt
    assert client.responses.retrieve(r.id).output_text == r.output_text
    follow = client.responses.create(
        model=MODEL_ID,
        input="And of Italy?",
        temperature=0,
        max_output_tokens=20,
        previous_response_id=r.id,
    )
    assert follow.usage is not None and follow.usage.input_tokens > r.usage.input_tokens


def test_stream_deltas_equal_the_final_text(client: openai.OpenAI) -> None:
    """`response.output_text.delta` events add up to the completed response's text."""
    events = list(
        client.responses.create(
            model=MODEL_ID, input=QUESTION, temperature=0, max_output_tokens=40, stream=True
        )
    )
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert "Paris" in text and events[-1].response.output_text == text
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_function_call_round_trip(client: openai.OpenAI) -> None:
    """A forced call, streamed like the whole, and its output sent back as an item."""
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    r = client.responses.create(
        model=MODEL_ID,
        input=ask,
        tools=[WEATHER_TOOL],
        tool_choice="required",
        temperature=0,
        store=False,
    )
    (call,) = [o for o in r.output if o.type == "function_call"]
    assert call.name == "get_weather"
    jsonschema.validate(json.loads(call.arguments), WEATHER)
    events = list(
        client.responses.create(
            model=MODEL_ID,
            input=ask,
            tools=[WEATHER_TOOL],
            tool_choice="required",
            temperature=0,
            stream=True,
        )
    )
    deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert deltas == call.arguments
    follow = [
        *ask,
        call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny"},
    ]
    answer = client.responses.create(
        model=MODEL_ID, input=follow, tools=[WEATHER_TOOL], temperature=0, max_output_tokens=20
    )
    assert answer.status in ("completed", "incomplete")


def test_text_format_json_schema_is_enforced(client: openai.OpenAI) -> None:
    """`text.format` json_schema gives schema-valid JSON."""
    fmt = {"type": "json_schema", "name": "weather", "schema": WEATHER, "strict": True}
    r = client.responses.create(
        model=MODEL_ID,
        input="Weather in Paris as JSON.",
        text={"format": fmt},
        temperature=0,
        max_output_tokens=100,
    )
    jsonschema.validate(json.loads(r.output_text), WEATHER)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "hi", "previous_response_id": "resp_nope"}, "previous_response_id"),
        ({"input": "hi", "tools": [{"type": "web_search"}]}, "tools[0]"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
            "input[0].content[0]",
        ),
        ({"input": "hi", "conversation": "conv_1"}, "conversation"),
        ({"input": "hi", "top_logprobs": 3}, "top_logprobs"),
        ({"input": "hi", "include": ["message.output_text.logprobs"]}, "include"),
    ],
)
def test_refusals_name_the_field(
    structured_server: RunningServer, body: dict[str, object], param: str
) -> None:
    """What cannot be done is a 400 naming the field."""
    r = httpx.post(f"{structured_server.url}/v1/responses", json={"model": MODEL_ID, **body})
    assert r.status_code == 400 and r.json()["error"]["param"] == param
