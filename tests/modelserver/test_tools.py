"""Tool calling on a real model server, through the official `openai` SDK.

The bundled SmolLM2's template knows no tools, so it uses Anvyl's generic format (the shared
`structured_server`); a second server serves the same weights with a Hermes-style template that
declares tools, for the native path. The model is tiny: these tests check validity and shape.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import lmstudio as lms
import openai
import pytest
from modelserver_harness import MODEL_ID, RunningServer, start_server, stop_server
from structured_cases import SCHEMAS, TOOLS, assemble

ASK = [{"role": "user", "content": "What is the weather in Paris?"}]

HERMES_TEMPLATE = (
    "{%- if tools %}<|im_start|>system\nYou are a function calling AI model. Function signatures"
    " are within <tools></tools>: <tools>{% for t in tools %}{{ t | tojson }}{% endfor %}</tools>"
    " For each call return a JSON object with the function name and arguments within"
    " <tool_call></tool_call> tags.<|im_end|>\n{% endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'assistant' and message.tool_calls %}<|im_start|>assistant\n"
    '{% for tool_call in message.tool_calls %}<tool_call>\n{"name": "{{ tool_call.function.name'
    ' }}", "arguments": {{ tool_call.function.arguments | tojson }}}\n</tool_call>{% endfor %}'
    "<|im_end|>\n"
    "{%- elif message.role == 'tool' %}<|im_start|>user\n<tool_response>\n{{ message.content }}"
    "\n</tool_response><|im_end|>\n"
    "{%- else %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n{% endif %}"
    "{%- endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def client(structured_server: RunningServer) -> openai.OpenAI:
    """The SDK on the shared server (generic format)."""
    return openai.OpenAI(base_url=f"{structured_server.url}/v1", api_key="x", max_retries=0)


@pytest.fixture(scope="module")
def hermes_server(
    bundled_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """The bundled weights with a Hermes-style template that declares tools."""
    model = tmp_path_factory.mktemp("hermes-model")
    for item in bundled_model.iterdir():
        if item.name != "tokenizer_config.json":
            os.symlink(item, model / item.name)
    config = json.loads((bundled_model / "tokenizer_config.json").read_text())
    (model / "tokenizer_config.json").write_text(
        json.dumps(config | {"chat_template": HERMES_TEMPLATE})
    )
    s = start_server(model, model.parent / "hermes.log", "--max-batch", "4", "--ctx", "2048")
    yield s
    stop_server(s)


def call(client: openai.OpenAI, **kwargs: Any) -> Any:
    """One greedy chat completion with the three tools."""
    args: dict[str, Any] = {"model": MODEL_ID, "messages": ASK, "tools": TOOLS, "temperature": 0,
                            "max_tokens": 200} | kwargs  # fmt: skip
    return client.chat.completions.create(**args)


def assert_valid_calls(choice: Any) -> list[Any]:
    """The choice is a tool-call answer whose calls name declared tools with valid arguments."""
    assert choice.finish_reason == "tool_calls", choice.message
    calls = choice.message.tool_calls
    assert calls
    for c in calls:
        assert c.type == "function" and c.id.startswith("call_")
        jsonschema.validate(json.loads(c.function.arguments), SCHEMAS[c.function.name])
    assert len({c.id for c in calls}) == len(calls)
    return calls


def test_required_calls_one_of_the_tools(client: openai.OpenAI) -> None:
    """`tool_choice=required` with three tools: a call with arguments that validate."""
    assert_valid_calls(call(client, tool_choice="required", parallel_tool_calls=False).choices[0])


def test_named_tool_choice_calls_that_function(client: openai.OpenAI) -> None:
    """A named `tool_choice` calls exactly that function, once."""
    choice = {"type": "function", "function": {"name": "add"}}
    calls = assert_valid_calls(call(client, tool_choice=choice).choices[0])
    assert [c.function.name for c in calls] == ["add"]


def test_no_parallel_calls_gives_one_call(client: openai.OpenAI) -> None:
    """`parallel_tool_calls=false` allows one call only."""
    r = call(client, tool_choice="required", parallel_tool_calls=False)
    assert len(assert_valid_calls(r.choices[0])) == 1


def test_tool_choice_none_answers_in_text(client: openai.OpenAI) -> None:
    """`tool_choice=none`: plain text, no calls."""
    r = call(client, tool_choice="none", max_tokens=20)
    assert r.choices[0].message.tool_calls is None
    assert r.choices[0].message.content


def test_streamed_calls_equal_the_whole_answer(client: openai.OpenAI) -> None:
    """Index, id and name first, argument fragments after; assembled == non-streamed."""
    ask: dict[str, Any] = {"tool_choice": "required", "parallel_tool_calls": False}
    whole = assert_valid_calls(call(client, **ask).choices[0])
    calls, reason, text = assemble(call(client, stream=True, **ask))
    assert reason == "tool_calls" and text == ""
    assert sorted(calls) == list(range(len(calls)))
    assert [(c["name"], c["arguments"]) for c in calls.values()] == [
        (c.function.name, c.function.arguments) for c in whole
    ]


def test_parallel_calls_have_distinct_indexes_and_ids(client: openai.OpenAI) -> None:
    """The greedy model makes several calls here: distinct indexes 0..n-1 and ids."""
    ask = [{"role": "user", "content": "Weather in Paris, in London and in Rome?"}]
    calls, reason, _ = assemble(call(client, messages=ask, tool_choice="required", stream=True))
    assert reason == "tool_calls"
    assert len(calls) >= 2, calls
    assert sorted(calls) == list(range(len(calls)))
    assert len({c["id"] for c in calls.values()}) == len(calls)


def agent_loop(client: openai.OpenAI) -> Any:
    """Call a tool, send its result back, get the final answer."""
    messages: list[Any] = list(ASK)
    named = {"type": "function", "function": {"name": "get_weather"}}
    first = call(client, messages=messages, tool_choice=named)
    message = first.choices[0].message
    assert_valid_calls(first.choices[0])
    messages.append(message.model_dump(exclude_none=True))
    for c in message.tool_calls or []:
        messages.append({"role": "tool", "tool_call_id": c.id, "content": '{"temp": 21}'})
    final = call(client, messages=messages, tool_choice="none", max_tokens=40)
    assert final.choices[0].finish_reason in ("stop", "length")
    assert final.choices[0].message.content
    return final


def test_two_turn_agent_loop_completes(client: openai.OpenAI) -> None:
    """call → tool result → a text answer, with the generic format."""
    agent_loop(client)


def test_native_hermes_template_path(hermes_server: RunningServer) -> None:
    """A template that declares tools: listed as hermes, calls valid, the agent loop completes."""
    models = httpx.get(f"{hermes_server.url}/v1/models", timeout=10).json()
    assert models["data"][0]["tool_format"] == "hermes"
    lm = httpx.get(f"{hermes_server.url}/api/v0/models", timeout=10).json()
    assert lm["data"][0]["tool_format"] == "hermes"
    with lms.Client(f"127.0.0.1:{hermes_server.port}") as sdk:
        assert sdk.llm.model(MODEL_ID).get_info().trained_for_tool_use
    client = openai.OpenAI(base_url=f"{hermes_server.url}/v1", api_key="x", max_retries=0)
    assert_valid_calls(call(client, tool_choice="required").choices[0])
    agent_loop(client)


def test_generic_model_lists_its_tool_format(structured_server: RunningServer) -> None:
    """The bundled model's template has no tools: `generic`."""
    models = httpx.get(f"{structured_server.url}/v1/models", timeout=10).json()
    assert models["data"][0]["tool_format"] == "generic"
