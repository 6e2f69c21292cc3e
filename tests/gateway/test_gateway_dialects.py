"""Anthropic's and Ollama's APIs through the gateway: routed by model to a real model server,
keys held by the gateway, model-less paths answered by the gateway, errors in each dialect."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import ollama
import openai
import pytest
from helpers import wait_for
from modelserver_harness import MODEL_ID, RunningServer, start_server, stop_server

from anvyl.gateway import GatewayConfig, open_gateway
from anvyl.gateway.routing import Target
from anvyl.gateway.server import GatewayServer

PARIS = [{"role": "user", "content": "What is the capital of France?"}]
TOKEN = "gw-token"  # what clients send the gateway
UPSTREAM = "up-key"  # what only the gateway sends the model server
ALLOWED_ORIGIN = "https://app.example"  # allowed by the gateway, not by the model server


@pytest.fixture(scope="module")
def replica(
    bundled_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """One keyed model server behind the gateway."""
    log = tmp_path_factory.mktemp("gw-dialects") / "server.log"
    s = start_server(bundled_model, log, "--ctx", "1024", api_key=UPSTREAM)
    yield s
    stop_server(s)


@pytest.fixture(scope="module")
def gateway(replica: RunningServer) -> Iterator[GatewayServer]:
    """A loopback gateway with a token, whose one target is `replica`."""
    target = Target(key="r1", model_id=MODEL_ID, base_url=replica.url, upstream_key=UPSTREAM)
    cfg = GatewayConfig(port=0, interval=0.2, aliases=(("claude-*", MODEL_ID),),
                        allowed_origins=frozenset({ALLOWED_ORIGIN}))  # fmt: skip
    server = open_gateway(lambda: [target], cfg, host="127.0.0.1", token=TOKEN, loopback=True)
    assert server is not None
    server.start()
    auth = {"Authorization": f"Bearer {TOKEN}"}

    def ready() -> bool:
        data = httpx.get(f"{server.url}/v1/models", headers=auth, timeout=5).json()["data"]
        return bool(data) and data[0].get("ready_replicas") == 1

    try:
        wait_for(ready, timeout=30, interval=0.2, what="the gateway to see its replica")
        yield server
    finally:
        server.stop()


def test_anthropic_sdk_through_the_gateway(gateway: GatewayServer) -> None:
    """The SDK's x-api-key is the gateway's token; the answer streams through."""
    client = anthropic.Anthropic(base_url=gateway.url, api_key=TOKEN, max_retries=0)
    r = client.messages.create(model=MODEL_ID, max_tokens=30, messages=PARIS,
                               extra_body={"temperature": 0})  # fmt: skip
    assert "Paris" in r.content[0].text
    with client.messages.stream(model=MODEL_ID, max_tokens=30, messages=PARIS,
                                extra_body={"temperature": 0}) as stream:  # fmt: skip
        assert "".join(stream.text_stream) == r.content[0].text
    assert client.messages.count_tokens(model=MODEL_ID, messages=PARIS).input_tokens > 5


def test_model_alias_serves_claude_names(gateway: GatewayServer) -> None:
    """`--model-alias claude-*=MODEL`: what Claude Code sends reaches the model; others 404."""
    client = anthropic.Anthropic(base_url=gateway.url, api_key=TOKEN, max_retries=0)
    r = client.messages.create(model="claude-sonnet-4-5", max_tokens=5, messages=PARIS)
    assert r.usage.output_tokens > 0
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(model="gpt-4o", max_tokens=5, messages=PARIS)


def test_ollama_client_through_the_gateway(gateway: GatewayServer) -> None:
    """Probe, version, tags and ps answered by the gateway; chat routed by `id:latest`."""
    assert httpx.get(gateway.url).text == "Ollama is running"
    client = ollama.Client(host=gateway.url, headers={"Authorization": f"Bearer {TOKEN}"})
    assert [m.model for m in client.list().models] == [f"{MODEL_ID}:latest"]
    assert [m.model for m in client.ps().models] == [f"{MODEL_ID}:latest"]
    r = client.chat(model=f"{MODEL_ID}:latest", messages=PARIS,
                    options={"temperature": 0, "num_predict": 30})  # fmt: skip
    assert "Paris" in r.message.content
    parts = list(client.chat(model=MODEL_ID, messages=PARIS, stream=True,
                             options={"temperature": 0, "num_predict": 30}))  # fmt: skip
    assert "".join(p.message.content for p in parts) == r.message.content
    assert client.show(MODEL_ID).capabilities


def test_responses_through_the_gateway(gateway: GatewayServer) -> None:
    """`responses.create` is routed by model; `retrieve` is answered by asking the replicas."""
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=TOKEN, max_retries=0)
    r = client.responses.create(model=MODEL_ID, input="What is the capital of France?",
                                temperature=0, max_output_tokens=30)  # fmt: skip
    assert "Paris" in r.output_text
    assert client.responses.retrieve(r.id).output_text == r.output_text
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("resp_nope")


def test_lmstudio_model_list_through_the_gateway(gateway: GatewayServer) -> None:
    """`GET /api/v0/models` (once a 400 "names no model") lists the running model."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    listed = httpx.get(f"{gateway.url}/api/v0/models", headers=auth).json()
    assert [m["id"] for m in listed["data"]] == [MODEL_ID]
    one = httpx.get(f"{gateway.url}/api/v0/models/{MODEL_ID}", headers=auth)
    assert one.status_code == 200 and one.json()["id"] == MODEL_ID
    assert httpx.get(f"{gateway.url}/api/v0/models/nope", headers=auth).status_code == 404


@pytest.mark.parametrize(
    ("path", "headers", "body", "status", "shape"),
    [
        ("/v1/messages", {}, {"model": MODEL_ID}, 401, "anthropic"),
        ("/v1/messages", {"x-api-key": TOKEN}, {"model": "nope", "max_tokens": 1}, 404,
         "anthropic"),
        ("/api/chat", {"Authorization": f"Bearer {TOKEN}"}, {"model": "nope"}, 404, "ollama"),
        ("/api/chat", {}, {"model": MODEL_ID}, 401, "ollama"),
        ("/v1/chat/completions", {}, {"model": MODEL_ID}, 401, "openai"),
    ],
)  # fmt: skip
def test_gateway_errors_come_in_the_paths_dialect(
    gateway: GatewayServer,
    path: str,
    headers: dict[str, str],
    body: dict[str, object],
    status: int,
    shape: str,
) -> None:
    """401 and 404 made by the gateway itself, in the shape of the path's API."""
    r = httpx.post(f"{gateway.url}{path}", headers=headers, json=body)
    assert r.status_code == status
    error = r.json()
    if shape == "anthropic":
        assert error["type"] == "error" and error["error"]["message"]
    elif shape == "ollama":
        assert isinstance(error["error"], str) and error["error"]
    else:
        assert error["error"]["message"]


def test_browser_requests_from_other_sites_are_refused(gateway: GatewayServer) -> None:
    """A text/plain POST with a foreign Origin, or a foreign Host (DNS rebinding): 403 before
    anything runs; a page on localhost and clients without Origin go on as before."""
    url = f"{gateway.url}/v1/chat/completions"
    body = json.dumps({"model": MODEL_ID, "messages": PARIS, "max_tokens": 1})
    plain = {"Content-Type": "text/plain", "Authorization": f"Bearer {TOKEN}"}
    foreign = httpx.post(url, content=body, headers={**plain, "Origin": "https://evil.example"})
    assert foreign.status_code == 403 and "Origin" in foreign.json()["error"]["message"]
    rebound = httpx.post(url, content=body, headers={**plain, "Host": "evil.example"})
    assert rebound.status_code == 403 and "Host" in rebound.json()["error"]["message"]
    ollama_shape = httpx.get(f"{gateway.url}/api/tags", headers={"Origin": "http://evil.example"})
    assert ollama_shape.status_code == 403 and isinstance(ollama_shape.json()["error"], str)
    local = httpx.post(url, content=body, headers={**plain, "Origin": "http://localhost:3000"})
    assert local.status_code == 200


def test_allowed_origin_is_judged_by_the_gateway_alone(gateway: GatewayServer) -> None:
    """The gateway answers an allowed page with CORS and does not pass its Origin on: the model
    server behind it allows no foreign origin, and still answers."""
    url = f"{gateway.url}/v1/chat/completions"
    body = {"model": MODEL_ID, "messages": PARIS, "max_tokens": 1}
    headers = {"Authorization": f"Bearer {TOKEN}", "Origin": ALLOWED_ORIGIN}
    r = httpx.post(url, json=body, headers=headers, timeout=60)
    assert r.status_code == 200, r.text
    assert r.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
