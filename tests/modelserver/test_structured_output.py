"""Structured output on a real model server: `response_format` enforced token by token.

The official `openai` SDK's `parse` with pydantic models, json_object, completions, concurrent
constrained and free requests in one batch, and the refusals. One shared server
(`structured_server`); outputs are validated with `jsonschema`, not taken on trust.
"""

from __future__ import annotations

import concurrent.futures
import json
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from modelserver_harness import MODEL_ID, RunningServer
from openai.lib._pydantic import to_strict_json_schema
from pydantic import BaseModel
from structured_cases import MODELS

FREE_PROMPTS = [
    "What is the capital of France?",
    "Count from one to five.",
    "Name a color.",
    "Say hello.",
]


@pytest.fixture(scope="module")
def client(structured_server: RunningServer) -> openai.OpenAI:
    """The official SDK pointed at the shared server."""
    return openai.OpenAI(base_url=f"{structured_server.url}/v1", api_key="x", max_retries=0)


def parse_one(client: openai.OpenAI, model: type[BaseModel]) -> tuple[Any, str, str]:
    """`parse` one model: (parsed object, raw content, finish reason)."""
    completion = client.chat.completions.parse(
        model=MODEL_ID,
        messages=[{"role": "user", "content": f"Give me an example {model.__name__} as JSON."}],
        response_format=model,
        temperature=0,
        max_tokens=200,
    )
    choice = completion.choices[0]
    return choice.message.parsed, choice.message.content or "", choice.finish_reason


def create_one(client: openai.OpenAI, model: type[BaseModel]) -> tuple[Any, str, str]:
    """`parse_one`, with a cut answer reported instead of raised."""
    try:
        return parse_one(client, model)
    except openai.LengthFinishReasonError as exc:
        return None, exc.completion.choices[0].message.content or "", "length"


def test_parse_returns_validated_objects_for_varied_schemas(client: openai.OpenAI) -> None:
    """20+ schemas (nesting, bounded arrays, enums, ranges, optional, $defs/$ref, anyOf)."""
    assert len(MODELS) >= 20
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda m: create_one(client, m), MODELS))
    cut = [
        (m.__name__, content)
        for m, (_, content, reason) in zip(MODELS, results, strict=True)
        if reason != "stop"
    ]
    assert not cut
    for model, (parsed, content, _) in zip(MODELS, results, strict=True):
        assert isinstance(parsed, model)
        jsonschema.validate(json.loads(content), to_strict_json_schema(model))
        assert content == json.dumps(json.loads(content), separators=(",", ":"), ensure_ascii=False)


def test_json_object_is_an_object(client: openai.OpenAI) -> None:
    """`json_object` gives a JSON object that parses."""
    r = client.chat.completions.create(
        model=MODEL_ID,
        messages=[{"role": "user", "content": "Describe a cat as JSON."}],
        response_format={"type": "json_object"},
        temperature=0,
        max_tokens=120,
    )
    choice = r.choices[0]
    if choice.finish_reason == "stop":
        assert isinstance(json.loads(choice.message.content or ""), dict)
    else:  # cut: it says so
        assert choice.finish_reason == "length"
        assert (choice.message.content or "").startswith("{")


@pytest.mark.parametrize(
    "sampling",
    [{"temperature": 5e-324}, {"temperature": 1e-6}, {"top_p": 5e-324}, {"top_p": 1e-6}],
)
def test_a_vanishing_temperature_or_top_p_decodes_greedily_within_the_grammar(
    client: openai.OpenAI, sampling: dict[str, float]
) -> None:
    """A temperature or top_p too small for float32 (at 5e-324 mlx-lm's sampler let a token the
    grammar had masked through: a 500) decodes greedily: the same text as temperature 0."""
    body: dict[str, Any] = {
        "model": MODEL_ID,
        "prompt": "0",
        "extra_body": {"response_format": {"type": "json_object"}},
        "max_tokens": 24,
    }
    tiny = client.completions.create(**body, **sampling)
    zero = client.completions.create(**body, temperature=0)
    assert tiny.choices[0].text == zero.choices[0].text
    assert tiny.choices[0].text.startswith("{")


def test_completions_enforce_response_format(client: openai.OpenAI) -> None:
    """`/v1/completions` with a schema is enforced, never ignored."""
    schema = to_strict_json_schema(MODELS[0])
    r = client.completions.create(
        model=MODEL_ID,
        prompt="A person:",
        temperature=0,
        max_tokens=60,
        extra_body={
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "person", "schema": schema},
            }
        },
    )
    assert r.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(r.choices[0].text), schema)


def test_whitespace_padding_schema_ends_well_before_max_tokens(client: openai.OpenAI) -> None:
    """A prompt asking for padding still gets a closed, compact document that ends early."""
    schema = {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "array", "items": {}}},
        "required": ["a", "b"],
    }
    r = client.chat.completions.create(
        model=MODEL_ID,
        messages=[
            {
                "role": "user",
                "content": "Write JSON with many spaces, tabs and blank lines between tokens:\n"
                '{\n\n    "a" :   1 ,\n\n\n    "b" :   [   ]\n\n}',
            }
        ],
        response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": schema}},
        temperature=0,
        max_tokens=256,
    )
    choice = r.choices[0]
    assert choice.finish_reason == "stop", choice.message.content
    assert r.usage is not None and r.usage.completion_tokens < 128
    jsonschema.validate(json.loads(choice.message.content or ""), schema)


def test_cut_document_says_length(client: openai.OpenAI) -> None:
    """Cut by max_tokens: `finish_reason` is length (the only case output may not validate)."""
    r = client.chat.completions.create(
        model=MODEL_ID,
        messages=[{"role": "user", "content": "A person as JSON."}],
        response_format={"type": "json_object"},
        temperature=0,
        max_tokens=3,
    )
    assert r.choices[0].finish_reason == "length"


def test_half_constrained_batch_leaves_free_greedy_output_unchanged(
    client: openai.OpenAI,
) -> None:
    """8 concurrent requests, 4 constrained: all valid, the free ones as without neighbours."""

    def free(prompt: str) -> str:
        r = client.chat.completions.create(
            model=MODEL_ID,
            messages=[{"role": "user", "content": prompt}],
            temperature=0,
            max_tokens=24,
        )
        return r.choices[0].message.content or ""

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        alone = list(pool.map(free, FREE_PROMPTS))
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        constrained = [pool.submit(parse_one, client, m) for m in MODELS[:4]]
        mixed = [pool.submit(free, p) for p in FREE_PROMPTS]
        assert [f.result() for f in mixed] == alone
        for model, future in zip(MODELS[:4], constrained, strict=True):
            parsed, _, reason = future.result()
            assert reason == "stop"
            assert isinstance(parsed, model)


BAD: list[tuple[str, dict[str, Any], str]] = [
    (
        "invalid-schema",
        {"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "strin"}}}},
        "response_format",
    ),
    (
        "unsupported-keyword",
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"schema": {"type": "object", "not": {"required": ["a"]}}},
            }
        },
        "response_format",
    ),
    (
        "tool-without-name",
        {"tools": [{"type": "function", "function": {"description": "x"}}]},
        "tools.0.function.name",
    ),
    (
        "tool-parameters-keyword",
        {
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "f",
                        "parameters": {"type": "object", "if": {}, "then": {}},
                    },
                }
            ]
        },
        "tools[0].function.parameters",
    ),
    (
        "unknown-named-tool",
        {
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "tool_choice": {"type": "function", "function": {"name": "g"}},
        },
        "tool_choice",
    ),
    (
        "unmatched-tool-call-id",
        {
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "tool", "tool_call_id": "call_nothing", "content": "42"},
            ]
        },
        "messages[1].tool_call_id",
    ),
]


@pytest.mark.parametrize(("extra", "param"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_structured_input_is_a_400_naming_the_field(
    structured_server: RunningServer, extra: dict[str, Any], param: str
) -> None:
    """Each defect is a 400 naming its field; the server stays healthy."""
    body = {"model": MODEL_ID, "messages": [{"role": "user", "content": "hi"}]} | extra
    r = httpx.post(f"{structured_server.url}/v1/chat/completions", json=body, timeout=30)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param, error
    if error.get("code") == "unsupported_schema_keyword":
        assert any(k in error["message"] for k in ("not", "if")), error
    assert structured_server.health() == 200
