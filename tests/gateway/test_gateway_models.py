"""The gateway in front of real model containers, driven by the official `openai` SDK.

One `anvyl serve` for the module with two deployments of the bundled model; the last test
kills them one after the other (so it runs last).
"""

from __future__ import annotations

import json
import time

import docker
import httpx
import lmstudio as lms
import openai
import pytest
from gateway_harness import GatewayServed, start_models
from helpers import free_port, wait_for
from models_harness import MODEL_ID, deployments

pytestmark = [pytest.mark.docker, pytest.mark.model]

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
MAX_TOKENS = 4
READY_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def names(run_labels: dict[str, str]) -> tuple[str, str]:
    """The two deployments' names (unique to the run: other runs share the engine)."""
    run = next(iter(run_labels.values()))
    return f"gw-a-{run}", f"gw-b-{run}"


@pytest.fixture(scope="module")
def two(gateway: GatewayServed, names: tuple[str, str]) -> GatewayServed:
    """Two deployments of the model, both routed to by the gateway."""
    start_models(
        gateway.served,
        *(["--name", name, "--port", str(free_port()), "--memory", "2g"] for name in names),
    )
    wait_for(
        lambda: _ready_replicas(gateway) == 2, timeout=READY_TIMEOUT_S, what="2 ready replicas"
    )
    return gateway


def _ready_replicas(gateway: GatewayServed) -> int:
    listing = httpx.get(f"{gateway.url}/v1/models", timeout=5).json()["data"]
    return sum(m["ready_replicas"] for m in listing if m["id"] == MODEL_ID)


def _client(gateway: GatewayServed) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0, timeout=120)


def test_models_lists_the_running_model(two: GatewayServed) -> None:
    models = _client(two).models.list()
    ids = [m.id for m in models.data]
    assert ids == [MODEL_ID]
    assert _client(two).models.retrieve(MODEL_ID).id == MODEL_ID


def test_chat_through_the_sdk(two: GatewayServed) -> None:
    reply = _client(two).chat.completions.create(
        model=MODEL_ID, messages=QUESTION, max_tokens=MAX_TOKENS, temperature=0
    )
    assert reply.model == MODEL_ID
    assert reply.choices[0].message.content
    assert reply.usage is not None and 0 < reply.usage.completion_tokens <= MAX_TOKENS


def test_stream_through_the_sdk(two: GatewayServed) -> None:
    stream = _client(two).chat.completions.create(
        model=MODEL_ID, messages=QUESTION, max_tokens=MAX_TOKENS, temperature=0, stream=True
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(chunks) >= 2 and text
    assert chunks[-1].choices == [] or chunks[-1].choices[0].finish_reason is not None


def test_stream_is_not_buffered(two: GatewayServed) -> None:
    """The first event arrives before the last one is generated."""
    body = {"model": MODEL_ID, "messages": QUESTION, "max_tokens": 24, "stream": True}
    body["temperature"] = 0
    arrivals: list[float] = []
    with httpx.stream("POST", f"{two.url}/v1/chat/completions", json=body, timeout=120) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                arrivals.append(time.monotonic())
    # Events reach the client one by one, as generated: not in one burst at the end.
    assert len(arrivals) >= 3
    assert arrivals[-1] > arrivals[0]


def test_both_replicas_get_traffic(two: GatewayServed, names: tuple[str, str]) -> None:
    client = _client(two)
    served_by = set()
    for _ in range(4):
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL_ID, messages=QUESTION, max_tokens=1
        )
        served_by.add(raw.headers["x-anvyl-deployment"])
        assert raw.parse().choices
    assert served_by == set(names)


def test_lmstudio_sdk_through_the_gateway(two: GatewayServed) -> None:
    """LM Studio's SDK on the gateway's port reaches the containers of `anvyl model start`."""
    with lms.Client(f"127.0.0.1:{two.gateway_port}") as client:
        assert [m.identifier for m in client.llm.list_loaded()] == [MODEL_ID]  # once, not twice
        result = client.llm.model(MODEL_ID).respond(
            QUESTION[0]["content"], config={"temperature": 0}
        )
        assert "Paris" in result.content
        assert result.stats.stop_reason == "eosFound"


def test_unknown_model_is_404(two: GatewayServed) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        _client(two).chat.completions.create(model="no-such-model", messages=QUESTION)
    assert caught.value.code == "model_not_found"
    assert isinstance(caught.value.body, dict) and "no-such-model" in caught.value.body["message"]


def test_failover_then_503(
    two: GatewayServed, names: tuple[str, str], docker_client: docker.DockerClient
) -> None:
    """A killed replica: requests keep succeeding on the other; none left: 503 Retry-After."""
    a, b = names
    client = _client(two)
    docker_client.containers.get(a).kill()
    failures = 0
    for _ in range(4):  # right after the kill: the gateway may still believe gw-a is healthy
        try:
            raw = client.chat.completions.with_raw_response.create(
                model=MODEL_ID, messages=QUESTION, max_tokens=1
            )
        except openai.APIError:
            failures += 1
            continue
        assert raw.headers["x-anvyl-deployment"] == b
    assert failures == 0
    wait_for(lambda: _ready_replicas(two) == 1, timeout=10, what="the killed replica down")
    states = {d["name"]: d["state"] for d in deployments(two.served)}
    assert states[b] == "ready" and states[a] != "ready"

    docker_client.containers.get(b).kill()
    body = {"model": MODEL_ID, "messages": QUESTION, "max_tokens": 1}
    response = httpx.post(f"{two.url}/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == 503, response.text
    assert int(response.headers["retry-after"]) >= 1
    assert json.loads(response.text)["error"]["code"] == "no_healthy_replica"
