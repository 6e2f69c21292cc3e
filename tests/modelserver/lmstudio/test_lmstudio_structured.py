"""LM Studio's Python SDK: `respond(response_format=...)` and `.act()` against a real server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated

import jsonschema
import lmstudio as lms
import pytest
from modelserver_harness import MODEL_ID, RunningServer
from pydantic import BaseModel, Field


class City(BaseModel):
    """The schema `respond` is asked for."""

    name: Annotated[str, Field(max_length=20)]
    population: Annotated[int, Field(ge=0, le=50_000_000)]


@pytest.fixture
def client(structured_server: RunningServer) -> Iterator[lms.Client]:
    """An SDK client on the shared structured server."""
    with lms.Client(f"127.0.0.1:{structured_server.port}") as c:
        yield c


def test_respond_with_a_response_format_gives_a_valid_object(client: lms.Client) -> None:
    """The SDK parses the reply; it validates against the schema."""
    result = client.llm.model(MODEL_ID).respond(
        "Describe Paris as JSON.",
        response_format=City,
        config={"temperature": 0.0, "maxTokens": 80},
    )
    assert result.stats.stop_reason == "eosFound"
    assert isinstance(result.parsed, dict)
    jsonschema.validate(result.parsed, City.model_json_schema())
    assert json.loads(result.content) == result.parsed


def test_act_calls_a_python_function_tool(client: lms.Client) -> None:
    """`.act()` with one tool: the model calls it with valid arguments, then answers.

    The 135M model only calls a tool on its own (`act` cannot force one) after an example
    exchange, so the chat starts with one.
    """
    calls: list[str] = []

    def get_secret(user: str) -> str:
        """Returns the secret code of a user."""
        calls.append(user)
        return "5678"

    chat = lms.Chat()
    chat.add_user_message("Get the secret code of bob.")
    request = {"type": "function", "id": "call_1", "name": "get_secret",
               "arguments": {"user": "bob"}}  # fmt: skip
    example = {"type": "toolCallRequest", "toolCallRequest": request}
    chat.add_assistant_response("", tool_call_requests=[example])
    chat.add_tool_results([{"toolCallId": "call_1", "content": "1234"}])
    chat.add_assistant_response("Bob's code is 1234.")
    chat.add_user_message("Get the secret code of alice.")
    messages: list[object] = []
    result = client.llm.model(MODEL_ID).act(
        chat,
        [get_secret],
        max_prediction_rounds=2,
        on_message=messages.append,
        config={"temperature": 0.0, "maxTokens": 60},
    )
    assert calls and all(isinstance(user, str) for user in calls)
    assert result.rounds == 2
    assert len(messages) >= 3  # the assistant's call, the tool result, the final answer
