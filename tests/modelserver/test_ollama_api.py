"""Ollama's API on the model server, driven by the real `ollama` Python client and model."""

from __future__ import annotations

import json

import httpx
import jsonschema
import ollama
import pytest
from helpers import wait_for
from modelserver_harness import MODEL_ID, RunningServer
from pydantic import BaseModel, Field
from structured_cases import TOOLS, WEATHER

PARIS = [{"role": "user", "content": "What is the capital of France?"}]
GREEDY = {"temperature": 0, "num_predict": 40}


class City(BaseModel):
    """A schema passed as `format`."""

    name: str = Field(max_length=20)
    population: int = Field(ge=0, le=100_000_000)


@pytest.fixture(scope="module")
def client(structured_server: RunningServer) -> ollama.Client:
    """An Ollama client pointed at the model server."""
    return ollama.Client(host=structured_server.url)


def test_probe_version_list_and_ps(structured_server: RunningServer, client: ollama.Client) -> None:
    """`/` and `/api/version` answer as Ollama's; the served model is listed and loaded."""
    assert httpx.get(structured_server.url).text == "Ollama is running"
    assert httpx.head(structured_server.url).status_code == 200
    assert httpx.get(f"{structured_server.url}/api/version").json()["version"]
    listed = client.list()
    assert [m.model for m in listed.models] == [f"{MODEL_ID}:latest"]
    assert listed.models[0].details and listed.models[0].details.format == "mlx"
    running = client.ps()
    assert [m.model for m in running.models] == [f"{MODEL_ID}:latest"]


def test_show(client: ollama.Client) -> None:
    """`show` gives details, the context length and the capabilities."""
    shown = client.show(f"{MODEL_ID}:latest")
    assert shown.details and shown.details.family
    assert shown.modelinfo and any(k.endswith(".context_length") for k in shown.modelinfo)
    assert shown.capabilities and "tools" in shown.capabilities


def test_chat_whole_and_streamed_agree(client: ollama.Client) -> None:
    """`stream=False` and the NDJSON stream give the same greedy answer, with Ollama's counts."""
    whole = client.chat(model=MODEL_ID, messages=PARIS, options=GREEDY)
    assert "Paris" in whole.message.content and whole.done and whole.done_reason == "stop"
    assert whole.eval_count and whole.prompt_eval_count and whole.total_duration
    assert whole.eval_duration is not None and whole.total_duration >= whole.eval_duration
    parts = list(client.chat(model=f"{MODEL_ID}:latest", messages=PARIS, options=GREEDY,
                             stream=True))  # fmt: skip
    assert len(parts) > 2 and parts[-1].done and not any(p.done for p in parts[:-1])
    assert "".join(p.message.content for p in parts) == whole.message.content
    assert parts[-1].eval_count == whole.eval_count


def test_sampling_options_are_honoured(client: ollama.Client) -> None:
    """top_k 1 and min_p 1 at temperature 1 are greedy; repeat_penalty breaks a loop."""
    greedy = client.chat(model=MODEL_ID, messages=PARIS, options=GREEDY).message.content
    for option in ({"top_k": 1}, {"min_p": 1.0}):
        options = {"temperature": 1.0, "num_predict": 40, **option}
        assert client.chat(model=MODEL_ID, messages=PARIS, options=options).message.content == (
            greedy
        )
    looping = [{"role": "system", "content": "Answer briefly."}, *PARIS]
    plain = client.chat(model=MODEL_ID, messages=looping, options=GREEDY).message.content
    penalised = client.chat(model=MODEL_ID, messages=looping,
                            options={**GREEDY, "repeat_penalty": 1.5}).message.content  # fmt: skip
    assert penalised != plain


def test_abandoned_stream_frees_its_slot(structured_server: RunningServer) -> None:
    """Closing an NDJSON stream after its first line cancels the generation."""
    body = {"model": MODEL_ID, "prompt": "Count to 1000.", "options": {"num_predict": 200}}
    with httpx.stream("POST", f"{structured_server.url}/api/generate", json=body,
                      timeout=60) as r:  # fmt: skip
        first = json.loads(next(r.iter_lines()))
        assert first["done"] is False
    wait_for(lambda: structured_server.metrics()["anvyl_active_sequences"] == 0, timeout=10,
             what="the abandoned generation to be cancelled")  # fmt: skip


def test_generate_and_num_predict(client: ollama.Client) -> None:
    """generate templates the prompt; num_predict cuts with done_reason length."""
    r = client.generate(model=MODEL_ID, prompt="What is the capital of France?", options=GREEDY)
    assert "Paris" in r.response and r.done
    cut = client.generate(model=MODEL_ID, prompt="Count to 100.",
                          options={"temperature": 0, "num_predict": 3})  # fmt: skip
    assert cut.done_reason == "length" and cut.eval_count == 3
    streamed = list(client.generate(model=MODEL_ID, prompt="What is the capital of France?",
                                    options=GREEDY, stream=True))  # fmt: skip
    assert "".join(p.response for p in streamed) == r.response


def test_format_schema_and_json_are_enforced(client: ollama.Client) -> None:
    """`format` as a pydantic schema validates; `format="json"` parses."""
    r = client.chat(model=MODEL_ID, messages=[{"role": "user", "content": "A city, as JSON."}],
                    format=City.model_json_schema(), options={"temperature": 0})  # fmt: skip
    City.model_validate_json(r.message.content)
    j = client.generate(model=MODEL_ID, prompt="Describe Paris as JSON.", format="json",
                        options={"temperature": 0, "num_predict": 60})  # fmt: skip
    if j.done_reason == "stop":
        assert isinstance(json.loads(j.response), dict)


def test_tool_call_round_trip(structured_server: RunningServer, client: ollama.Client) -> None:
    """A forced call (Anvyl's `tool_choice` extension: the tiny model never calls on its own) in
    Ollama's shape, parsed by the client's own models; its result goes back by tool name."""
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    body = {"model": MODEL_ID, "messages": ask, "tools": TOOLS[:1], "tool_choice": "required",
            "options": {"temperature": 0}}  # fmt: skip
    url = f"{structured_server.url}/api/chat"
    r = ollama.ChatResponse.model_validate(
        httpx.post(url, json=body | {"stream": False}, timeout=60).json()
    )
    calls = r.message.tool_calls or []
    assert len(calls) == 1 and calls[0].function.name == "get_weather" and r.done
    arguments = dict(calls[0].function.arguments)
    jsonschema.validate(arguments, WEATHER)
    with httpx.stream("POST", url, json=body, timeout=60) as streamed:
        chunks = [ollama.ChatResponse.model_validate_json(line) for line in streamed.iter_lines()]
    streamed_calls = [c for p in chunks for c in p.message.tool_calls or []]
    assert [dict(c.function.arguments) for c in streamed_calls] == [arguments]
    assert chunks[-1].done and not any(p.done for p in chunks[:-1])
    follow = [*ask, r.message, {"role": "tool", "content": "Sunny", "tool_name": "get_weather"}]
    answer = client.chat(model=MODEL_ID, messages=follow, tools=TOOLS[:1],
                         options={"temperature": 0, "num_predict": 20})  # fmt: skip
    assert answer.done and answer.message.content


@pytest.mark.parametrize(
    ("path", "body", "status", "needle"),
    [
        ("/api/chat", {"model": "nope", "messages": PARIS}, 404, "nope"),
        ("/api/chat", {"model": MODEL_ID, "messages": PARIS, "options": {"num_ctx": 99999}},
         400, "num_ctx"),
        ("/api/chat", {"model": MODEL_ID, "messages": PARIS, "options": {"mirostat": 1}},
         400, "mirostat"),
        ("/api/chat", {"model": MODEL_ID, "messages": PARIS, "logprobs": True}, 400, "logprobs"),
        ("/api/generate", {"model": MODEL_ID, "prompt": "x", "width": 512}, 400, "image"),
        ("/api/pull", {"model": "llama3"}, 400, "anvyl model pull OWNER/NAME"),
        ("/api/embed", {"model": MODEL_ID, "input": "x"}, 400, "embeddings"),
    ],
)  # fmt: skip
def test_errors_come_in_ollamas_shape(
    structured_server: RunningServer, path: str, body: dict[str, object], status: int, needle: str
) -> None:
    """Ollama's `{"error": "..."}` naming what is wrong, and the client raises it."""
    r = httpx.post(f"{structured_server.url}{path}", json={"stream": False, **body})
    assert r.status_code == status and needle in r.json()["error"]


def test_client_raises_the_refusals(client: ollama.Client) -> None:
    """The client surfaces the status and message of each refusal."""
    calls = [
        lambda: client.chat(model="nope:latest", messages=PARIS),
        lambda: client.pull("llama3"),
        lambda: client.embed(model=MODEL_ID, input="x"),
        lambda: client.chat(model=MODEL_ID, messages=PARIS, options={"num_ctx": 99999}),
    ]
    for call, status in zip(calls, (404, 400, 400, 400), strict=True):
        with pytest.raises(ollama.ResponseError) as raised:
            call()
        assert raised.value.status_code == status and raised.value.error
