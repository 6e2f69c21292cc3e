"""The OpenAI and LM Studio APIs of a real model server with the bundled model.

One server per module (started by the CLI in a subprocess); the official `openai` SDK, httpx
and curl talk to it.
"""

from __future__ import annotations

import concurrent.futures
import json
import subprocess
import threading
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from helpers import wait_for
from modelserver_harness import MODEL_ID, RunningServer
from transformers import AutoTokenizer

PARIS = [{"role": "user", "content": "What is the capital of France?"}]
COUNTING = "1, 2, 3, 4, 5, 6, 7, 8,"


@pytest.fixture(scope="module")
def client(server: RunningServer) -> openai.OpenAI:
    """The official SDK pointed at the server."""
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def tokenizer(bundled_model: Path) -> Any:
    """The model's tokenizer, to check usage counts independently."""
    return AutoTokenizer.from_pretrained(str(bundled_model))


def chat_prompt_tokens(tokenizer: Any, messages: list[dict[str, str]]) -> int:
    """Prompt length of `messages` under the model's chat template."""
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return len(ids["input_ids"] if hasattr(ids, "keys") else ids)


# ------------------------------------------------------------------------------- happy paths


def test_health_answers_on_both_ports_without_key(server: RunningServer) -> None:
    """`/health` is 200 with the model id on the health port and on the API port."""
    for url in (server.health_url, f"{server.url}/health"):
        r = httpx.get(url)
        assert r.status_code == 200
        assert r.json()["status"] == "ok"
        assert r.json()["model"] == MODEL_ID


def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    """`/v1/models` lists exactly the served model id."""
    assert [m.id for m in client.models.list()] == [MODEL_ID]
    assert client.models.retrieve(MODEL_ID).id == MODEL_ID
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_sdk_chat_answers_paris_with_exact_usage(client: openai.OpenAI, tokenizer: Any) -> None:
    """Greedy decoding answers the known question; usage counts match the tokenizer."""
    r = client.chat.completions.create(model=MODEL_ID, messages=PARIS, temperature=0)
    text = r.choices[0].message.content or ""
    assert "Paris" in text
    assert r.choices[0].finish_reason == "stop"
    assert r.object == "chat.completion"
    assert r.usage is not None
    assert r.usage.prompt_tokens == chat_prompt_tokens(tokenizer, PARIS)
    # the generated text plus the end-of-turn token that stopped it
    assert r.usage.completion_tokens == len(tokenizer.encode(text, add_special_tokens=False)) + 1
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    details = r.usage.completion_tokens_details
    assert details is not None and details.reasoning_tokens == 0  # it does not reason


def test_sdk_chat_stream_with_usage(client: openai.OpenAI, tokenizer: Any) -> None:
    """Streaming yields deltas, a finish reason, then a usage-only chunk."""
    stream = client.chat.completions.create(
        model=MODEL_ID,
        messages=PARIS,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Paris" in text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop"
    assert all(f is None for f in finishes[:-1])
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == chat_prompt_tokens(tokenizer, PARIS)


def test_sdk_completions_respect_max_tokens(client: openai.OpenAI) -> None:
    """Text completions stop at `max_tokens` with finish_reason length, streamed or not."""
    r = client.completions.create(model=MODEL_ID, prompt=COUNTING, max_tokens=5, temperature=0)
    assert r.choices[0].finish_reason == "length"
    assert r.usage is not None and r.usage.completion_tokens == 5
    assert "9" in r.choices[0].text
    chunks = list(
        client.completions.create(
            model=MODEL_ID, prompt=COUNTING, max_tokens=5, temperature=0, stream=True
        )
    )
    assert "".join(c.choices[0].text for c in chunks) == r.choices[0].text
    assert chunks[-1].choices[0].finish_reason == "length"


def test_max_completion_tokens_and_server_cap(client: openai.OpenAI) -> None:
    """`max_completion_tokens` is honoured; a huge ask is capped by the server limit (48)."""
    r = client.chat.completions.create(
        model=MODEL_ID, messages=PARIS, max_completion_tokens=3, temperature=0
    )
    assert r.usage is not None and r.usage.completion_tokens == 3
    assert r.choices[0].finish_reason == "length"
    big = client.completions.create(
        model=MODEL_ID, prompt=COUNTING, max_tokens=10**6, temperature=0
    )
    assert big.usage is not None and big.usage.completion_tokens <= 48


def test_stop_strings_cut_the_text(client: openai.OpenAI) -> None:
    """A stop string ends the reply before it, streamed or not, with finish_reason stop."""
    r = client.chat.completions.create(
        model=MODEL_ID, messages=PARIS, temperature=0, stop=["Paris"]
    )
    text = r.choices[0].message.content or ""
    assert "Par" not in text and "France" in text
    assert r.choices[0].finish_reason == "stop"
    stream = client.chat.completions.create(
        model=MODEL_ID, messages=PARIS, temperature=0, stop=" Paris", stream=True
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert streamed == text.rstrip(" ")


def test_curl_example_from_the_spec(server: RunningServer) -> None:
    """The spec's curl example works verbatim."""
    body = json.dumps({"model": MODEL_ID, "messages": [{"role": "user", "content": "Hello!"}]})
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "-X",
            "POST",
            f"http://localhost:{server.port}/v1/chat/completions",
            "-H",
            "Content-Type: application/json",
            "-d",
            body,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    reply = json.loads(out.stdout)
    assert reply["choices"][0]["message"]["role"] == "assistant"
    assert reply["choices"][0]["message"]["content"]
    assert reply["usage"]["completion_tokens"] >= 1


def test_seeded_requests_reproduce_even_when_batched(client: openai.OpenAI) -> None:
    """Same seed → same text, alone or sharing the batch with other requests."""

    def sample(seed: int) -> str:
        r = client.chat.completions.create(
            model=MODEL_ID,
            messages=[{"role": "user", "content": "Write a short poem about the sea."}],
            temperature=1.0,
            seed=seed,
            max_tokens=16,
        )
        return r.choices[0].message.content or ""

    alone = sample(7)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        together = list(pool.map(sample, [7, 8, 7, 9]))
    assert together[0] == alone
    assert together[2] == alone
    assert len({alone, together[1], together[3]}) > 1


# ------------------------------------------------------------------------------- concurrency


def test_eight_concurrent_requests_share_the_batch(
    server: RunningServer, client: openai.OpenAI, tokenizer: Any
) -> None:
    """8 requests at once all complete with exact usage, decoded in one batch."""
    before = server.metrics()
    peak = [0.0]
    done = threading.Event()

    def watch_active() -> None:
        while not done.wait(0.1):  # polling gently: this machine has 2 cores
            peak[0] = max(peak[0], server.metrics()["anvyl_active_sequences"])

    watcher = threading.Thread(target=watch_active)
    watcher.start()
    questions = [
        f"Name {n} animals that live in the {place}."
        for n, place in zip(
            range(2, 10),
            ["sea", "forest", "desert", "jungle", "arctic", "river", "mountains", "city"],
            strict=True,
        )
    ]

    def ask(q: str) -> Any:
        return client.chat.completions.create(
            model=MODEL_ID,
            messages=[{"role": "user", "content": q}],
            temperature=0,
            max_tokens=24,
        )

    try:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(ask, questions))
    finally:
        done.set()
        watcher.join()
    for q, r in zip(questions, replies, strict=True):
        assert r.usage.prompt_tokens == chat_prompt_tokens(
            tokenizer, [{"role": "user", "content": q}]
        )
        assert 1 <= r.usage.completion_tokens <= 24
        if r.choices[0].finish_reason == "length":
            assert r.usage.completion_tokens == 24
    after = server.metrics()
    steps_over_one = lambda m: (  # noqa: E731
        m["anvyl_decode_batch_size_count"] - m['anvyl_decode_batch_size_bucket{le="1.0"}']
    )
    assert steps_over_one(after) - steps_over_one(before) > 0
    assert peak[0] > 1
    generated = sum(r.usage.completion_tokens for r in replies)
    assert (
        after["anvyl_generated_tokens_total"] - before["anvyl_generated_tokens_total"] == generated
    )


def test_client_disconnect_cancels_the_generation(
    server: RunningServer, client: openai.OpenAI
) -> None:
    """Closing a stream or dropping a waiting request frees its slot; serving goes on."""
    cancelled = 'anvyl_generations_finished_total{reason="cancelled"}'
    before = server.metrics().get(cancelled, 0.0)
    body = {"model": MODEL_ID, "prompt": COUNTING, "max_tokens": 48, "temperature": 0}
    with (
        httpx.Client(timeout=60) as http,
        http.stream("POST", f"{server.url}/v1/completions", json=body | {"stream": True}) as r,
    ):
        lines = r.iter_lines()
        assert next(line for line in lines if line.startswith("data:"))
    wait_for(
        lambda: server.metrics().get(cancelled, 0.0) == before + 1,
        timeout=10,
        what="the streamed generation to be cancelled",
    )
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.url}/v1/completions", json=body, timeout=httpx.Timeout(60, read=0.5))
    wait_for(
        lambda: server.metrics().get(cancelled, 0.0) == before + 2,
        timeout=10,
        what="the non-streamed generation to be cancelled",
    )
    wait_for(lambda: server.metrics()["anvyl_active_sequences"] == 0, timeout=10)
    r2 = client.chat.completions.create(model=MODEL_ID, messages=PARIS, temperature=0)
    assert "Paris" in (r2.choices[0].message.content or "")


# ------------------------------------------------------------------------------- metrics


def test_metrics_counters_move(server: RunningServer, client: openai.OpenAI) -> None:
    """A request moves the request, token and latency series."""
    before = server.metrics()
    r = client.chat.completions.create(model=MODEL_ID, messages=PARIS, temperature=0)
    after = server.metrics()
    key = 'anvyl_requests_total{endpoint="/v1/chat/completions",status="200"}'
    assert after[key] == before.get(key, 0.0) + 1
    assert r.usage is not None
    assert (
        after["anvyl_prompt_tokens_total"] - before["anvyl_prompt_tokens_total"]
        == r.usage.prompt_tokens
    )
    assert (
        after["anvyl_generated_tokens_total"] - before["anvyl_generated_tokens_total"]
        == r.usage.completion_tokens
    )
    ttft = "anvyl_time_to_first_token_seconds_count"
    assert after[ttft] == before[ttft] + 1
    tpot = "anvyl_time_per_output_token_seconds_count"
    assert after[tpot] - before[tpot] == r.usage.completion_tokens - 1
    assert after["anvyl_queue_depth"] == 0
    assert after["anvyl_model_ready"] == 1


# ------------------------------------------------------------------------------- LM Studio


def test_lmstudio_models(server: RunningServer) -> None:
    """`/api/v0/models` and `/api/v0/models/{id}` describe the loaded model."""
    listing = httpx.get(f"{server.url}/api/v0/models").json()
    (entry,) = listing["data"]
    assert entry["id"] == MODEL_ID
    assert entry["type"] == "llm"
    assert entry["arch"] == "llama"
    assert entry["state"] == "loaded"
    assert entry["quantization"] == "4bit/8bit"
    assert entry["fast_path"] == "kernel"
    assert entry["max_context_length"] == 512
    assert httpx.get(f"{server.url}/api/v0/models/{MODEL_ID}").json() == entry
    missing = httpx.get(f"{server.url}/api/v0/models/nope")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"


def test_lmstudio_chat_returns_stats(server: RunningServer) -> None:
    """LM Studio's chat completion carries `stats`, streamed or not."""
    body = {"model": MODEL_ID, "messages": PARIS, "temperature": 0}
    reply = httpx.post(f"{server.url}/api/v0/chat/completions", json=body, timeout=60).json()
    assert "Paris" in reply["choices"][0]["message"]["content"]
    stats = reply["stats"]
    assert stats["tokens_per_second"] > 0
    assert 0 < stats["time_to_first_token"] < 60
    assert stats["generation_time"] > 0
    assert stats["stop_reason"] == "eosFound"
    assert reply["model_info"]["arch"] == "llama"
    with httpx.stream(
        "POST", f"{server.url}/api/v0/chat/completions", json=body | {"stream": True}, timeout=60
    ) as r:
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    last = json.loads(events[-2])
    assert last["choices"][0]["finish_reason"] == "stop"
    assert last["stats"]["tokens_per_second"] > 0


# ------------------------------------------------------------------------------- bad input

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
OK_CHAT: dict[str, Any] = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}]}
OK_TEXT: dict[str, Any] = {"model": MODEL_ID, "prompt": "Hi"}

BAD_INPUTS: list[tuple[str, str, Any, int, str | None]] = [
    # (id, path, body (str = raw), status, param or code to expect)
    ("malformed-json", CHAT, '{"model": ', 400, None),
    ("not-an-object", CHAT, "[1, 2]", 400, None),
    ("empty-body", CHAT, "", 400, None),
    ("missing-messages", CHAT, {"model": MODEL_ID}, 400, "messages"),
    ("missing-model", CHAT, {"messages": OK_CHAT["messages"]}, 400, "model"),
    ("empty-messages", CHAT, OK_CHAT | {"messages": []}, 400, "messages"),
    ("bad-role", CHAT, OK_CHAT | {"messages": [{"role": "robot", "content": "x"}]}, 400, None),
    ("messages-not-list", CHAT, OK_CHAT | {"messages": "hello"}, 400, "messages"),
    ("temperature-too-high", CHAT, OK_CHAT | {"temperature": 3}, 400, "temperature"),
    ("temperature-string", CHAT, OK_CHAT | {"temperature": "hot"}, 400, "temperature"),
    ("top-p-zero", CHAT, OK_CHAT | {"top_p": 0}, 400, "top_p"),
    ("max-tokens-zero", CHAT, OK_CHAT | {"max_tokens": 0}, 400, "max_tokens"),
    ("max-tokens-negative", CHAT, OK_CHAT | {"max_tokens": -5}, 400, "max_tokens"),
    ("max-tokens-string", CHAT, OK_CHAT | {"max_tokens": "ten"}, 400, "max_tokens"),
    ("too-many-stops", CHAT, OK_CHAT | {"stop": [str(i) for i in range(20)]}, 400, "stop"),
    ("empty-stop", CHAT, OK_CHAT | {"stop": ""}, 400, "stop"),
    ("seed-string", CHAT, OK_CHAT | {"seed": "abc"}, 400, "seed"),
    ("unknown-model", CHAT, OK_CHAT | {"model": "gpt-4"}, 404, "model_not_found"),
    (
        "json-schema-unsupported-keyword",
        CHAT,
        OK_CHAT
        | {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": "array", "uniqueItems": True}},
            }
        },
        400,
        "response_format",
    ),
    (
        "json-schema-missing",
        CHAT,
        OK_CHAT | {"response_format": {"type": "json_schema"}},
        400,
        "response_format.json_schema",
    ),
    ("format-type", CHAT, OK_CHAT | {"response_format": {"type": "yaml"}}, 400, None),
    (
        "tool-without-name",
        CHAT,
        OK_CHAT | {"tools": [{"type": "function", "function": {"parameters": {}}}]},
        400,
        "tools.0.function.name",
    ),
    ("tool-choice-without-tools", CHAT, OK_CHAT | {"tool_choice": "required"}, 400, "tool_choice"),
    ("n-over-limit", CHAT, OK_CHAT | {"n": 9}, 400, "n"),
    ("top-logprobs-over-20", CHAT, OK_CHAT | {"logprobs": True, "top_logprobs": 21}, 400, None),
    ("top-logprobs-alone", CHAT, OK_CHAT | {"top_logprobs": 3}, 400, "top_logprobs"),
    (
        "image-part",
        CHAT,
        OK_CHAT
        | {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}],
                }
            ]
        },
        400,
        "messages[0].content",
    ),
    (
        "tool-message-unmatched",
        CHAT,
        OK_CHAT | {"messages": [{"role": "tool", "content": "x", "tool_call_id": "nope"}]},
        400,
        "messages[0].tool_call_id",
    ),
    ("logit-bias-key", CHAT, OK_CHAT | {"logit_bias": {"abc": 1}}, 400, "logit_bias"),
    ("logit-bias-range", CHAT, OK_CHAT | {"logit_bias": {"99999999": 1}}, 400, "logit_bias"),
    ("several-prompts", COMPLETIONS, OK_TEXT | {"prompt": ["a", "b"]}, 400, "prompt"),
    ("empty-prompt", COMPLETIONS, OK_TEXT | {"prompt": ""}, 400, "prompt"),
    ("token-out-of-range", COMPLETIONS, OK_TEXT | {"prompt": [1, 10**9]}, 400, "prompt"),
    ("echo", COMPLETIONS, OK_TEXT | {"echo": True}, 400, "echo"),
    ("suffix", COMPLETIONS, OK_TEXT | {"suffix": "x"}, 400, "suffix"),
    ("completion-unknown-model", COMPLETIONS, OK_TEXT | {"model": "x"}, 404, "model_not_found"),
]


@pytest.mark.parametrize(
    ("path", "body", "status", "where"),
    [case[1:] for case in BAD_INPUTS],
    ids=[case[0] for case in BAD_INPUTS],
)
def test_bad_input_is_refused_in_openai_shape(
    server: RunningServer, path: str, body: Any, status: int, where: str | None
) -> None:
    """Each bad request gets its 4xx with OpenAI's error body, naming the field."""
    if isinstance(body, str):
        r = httpx.post(server.url + path, content=body.encode(), timeout=30)
    else:
        r = httpx.post(server.url + path, json=body, timeout=30)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if where is not None:
        assert where in (error["param"], error["code"]), error


def test_prompt_longer_than_context_names_both_lengths(
    server: RunningServer, tokenizer: Any
) -> None:
    """A prompt past the 512-token context is a 400 that states both numbers."""
    messages = [{"role": "user", "content": "word " * 600}]
    r = httpx.post(f"{server.url}{CHAT}", json=OK_CHAT | {"messages": messages}, timeout=30)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "context_length_exceeded"
    assert str(chat_prompt_tokens(tokenizer, messages)) in error["message"]
    assert "512" in error["message"]


def test_routing_errors_in_openai_shape(server: RunningServer) -> None:
    """Unknown routes and wrong methods answer in OpenAI's error shape."""
    r = httpx.get(f"{server.url}/v1/nothing")
    assert r.status_code == 404 and set(r.json()["error"]) == {"message", "type", "param", "code"}
    r = httpx.get(f"{server.url}{CHAT}")
    assert r.status_code == 405 and "error" in r.json()


def test_no_client_input_produced_a_5xx(server: RunningServer, client: openai.OpenAI) -> None:
    """After everything above, no 5xx was ever answered and the server still serves."""
    errors = {k: v for k, v in server.metrics().items() if 'status="5' in k and v}
    assert not errors, errors
    r = client.chat.completions.create(model=MODEL_ID, messages=PARIS, temperature=0)
    assert "Paris" in (r.choices[0].message.content or "")
