"""The gateway passes structured output and tool calls through unchanged, streams included.

An in-process gateway in front of one real model server (the bundled model, no Docker): the
official `openai` SDK's `parse` and a streamed tool call through both, compared.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from helpers import wait_for
from modelserver_harness import MODEL_ID, RunningServer, start_server, stop_server
from openai.lib._pydantic import to_strict_json_schema
from structured_cases import MODELS, TOOLS, assemble

from anvyl.gateway import GatewayConfig, open_gateway
from anvyl.gateway.routing import Target
from anvyl.gateway.server import GatewayServer


@pytest.fixture(scope="module")
def replica(
    bundled_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """One model server behind the gateway."""
    log = tmp_path_factory.mktemp("gw-structured") / "server.log"
    s = start_server(bundled_model, log, "--max-batch", "8", "--ctx", "2048")
    yield s
    stop_server(s)


@pytest.fixture(scope="module")
def gateway(replica: RunningServer) -> Iterator[GatewayServer]:
    """A loopback gateway whose one target is `replica`, ready once it routes to it."""
    target = Target(key="r1", model_id=MODEL_ID, base_url=replica.url)
    server = open_gateway(
        lambda: [target], GatewayConfig(port=0, interval=0.2), host="127.0.0.1", token=None,
        loopback=True,
    )  # fmt: skip
    assert server is not None
    server.start()

    def ready() -> bool:
        data = httpx.get(f"{server.url}/v1/models", timeout=5).json()["data"]
        return bool(data) and data[0].get("ready_replicas") == 1

    try:
        wait_for(ready, timeout=30, interval=0.2, what="the gateway to see its replica")
        yield server
    finally:
        server.stop()


def clients(replica: RunningServer, gateway: GatewayServer) -> list[openai.OpenAI]:
    """The SDK on the replica and on the gateway."""
    return [
        openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        for url in (replica.url, gateway.url)
    ]


def test_parse_through_the_gateway_equals_direct(
    replica: RunningServer, gateway: GatewayServer
) -> None:
    """Greedy `parse` gives the same validated object directly and through the gateway."""
    for model in MODELS[:4]:
        outputs = []
        for client in clients(replica, gateway):
            completion = client.chat.completions.parse(
                model=MODEL_ID,
                messages=[{"role": "user", "content": f"An example {model.__name__} as JSON."}],
                response_format=model,
                temperature=0,
                max_tokens=200,
            )
            content = completion.choices[0].message.content or ""
            jsonschema.validate(json.loads(content), to_strict_json_schema(model))
            assert isinstance(completion.choices[0].message.parsed, model)
            outputs.append(content)
        assert outputs[0] == outputs[1]


def test_streamed_tool_calls_pass_through(replica: RunningServer, gateway: GatewayServer) -> None:
    """A streamed required call assembles the same through the gateway as directly."""
    results: list[Any] = []
    for client in clients(replica, gateway):
        stream = client.chat.completions.create(
            model=MODEL_ID,
            messages=[{"role": "user", "content": "What is the weather in Paris?"}],
            tools=TOOLS,
            tool_choice="required",
            parallel_tool_calls=False,
            temperature=0,
            max_tokens=200,
            stream=True,
        )
        calls, reason, _ = assemble(stream)
        assert reason == "tool_calls" and calls
        results.append([(c["name"], c["arguments"]) for c in calls.values()])
    assert results[0] == results[1]


def test_lmstudio_sdk_structured_and_act_through_the_gateway(gateway: GatewayServer) -> None:
    """`respond(response_format=...)` and `.act()` work through the gateway's websocket relay."""
    import lmstudio as lms

    schema = to_strict_json_schema(MODELS[0])
    calls: list[str] = []

    def get_secret(user: str) -> str:
        """Returns the secret code of a user."""
        calls.append(user)
        return "5678"

    with lms.Client(f"127.0.0.1:{gateway.port}") as client:
        model = client.llm.model(MODEL_ID)
        result = model.respond(
            "A person as JSON.", response_format=schema, config={"temperature": 0.0}
        )
        jsonschema.validate(result.parsed, schema)
        chat = lms.Chat()
        chat.add_user_message("Get the secret code of bob.")
        request = {"type": "function", "id": "call_1", "name": "get_secret",
                   "arguments": {"user": "bob"}}  # fmt: skip
        chat.add_assistant_response(
            "", tool_call_requests=[{"type": "toolCallRequest", "toolCallRequest": request}]
        )
        chat.add_tool_results([{"toolCallId": "call_1", "content": "1234"}])
        chat.add_assistant_response("Bob's code is 1234.")
        chat.add_user_message("Get the secret code of alice.")
        acted = model.act(chat, [get_secret], max_prediction_rounds=2,
                          config={"temperature": 0.0, "maxTokens": 60})  # fmt: skip
    assert calls and acted.rounds == 2
