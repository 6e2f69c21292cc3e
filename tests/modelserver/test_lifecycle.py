"""API key, the bounded queue, loading and graceful stop of a real model server.

The subprocess server here has a key, one batch slot and a one-request queue, so the queue
limit is reached with two requests. The SIGTERM test stops it and runs last.
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from helpers import free_port, wait_for
from modelserver_harness import MODEL_ID, RunningServer, start_server, stop_server

from anvyl.modelserver.config import ServerConfig
from anvyl.modelserver.loader import LoadedModel, load_model_dir
from anvyl.modelserver.serve import ModelServer

KEY = "sk-test-" + "x" * 24
LONG = {"role": "user", "content": "Count from one to one hundred, in words."}
EOS = 2  # the bundled SmolLM2's <|im_end|>


@pytest.fixture(scope="module")
def keyed(bundled_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server with an API key, one slot and a queue of one."""
    log = tmp_path_factory.mktemp("modelserver-keyed") / "server.log"
    s = start_server(
        bundled_model,
        log,
        "--max-batch",
        "1",
        "--max-queue",
        "1",
        "--max-tokens-limit",
        "2048",
        api_key=KEY,
    )
    yield s
    stop_server(s)


def _chat_body(max_tokens: int = 48, stream: bool = True) -> dict:
    """A streaming chat request that runs for a while."""
    return {
        "model": MODEL_ID,
        "messages": [LONG],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": stream,
        "stream_options": {"include_usage": True},
    }


def _endless_body() -> dict:
    """A streaming chat request that cannot end by itself within the test: the end-of-sequence
    token is banned and the budget is 2048 tokens (the client's disconnect cancels it)."""
    return _chat_body(max_tokens=2048) | {"logit_bias": {str(EOS): -100}}


def test_api_key_is_required_except_for_health(keyed: RunningServer) -> None:
    """Without the key (or with a wrong one) every endpoint but /health answers 401."""
    for path in ("/v1/models", "/metrics", "/api/v0/models", "/nonexistent"):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
            r = httpx.get(keyed.url + path, headers=headers)
            assert r.status_code == 401, (path, headers)
            assert r.json()["error"]["code"] == "invalid_api_key"
    r = httpx.post(f"{keyed.url}/v1/chat/completions", json=_chat_body(stream=False))
    assert r.status_code == 401
    assert httpx.get(f"{keyed.url}/health").status_code == 200
    assert httpx.get(keyed.health_url).status_code == 200
    assert httpx.get(f"{keyed.url}/v1/models", headers=keyed.headers()).status_code == 200
    bad = openai.OpenAI(base_url=f"{keyed.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    good = openai.OpenAI(base_url=f"{keyed.url}/v1", api_key=KEY, max_retries=0)
    reply = good.chat.completions.create(
        model=MODEL_ID,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        temperature=0,
    )
    assert "Paris" in (reply.choices[0].message.content or "")


def test_past_the_queue_limit_is_429_with_retry_after(keyed: RunningServer) -> None:
    """One running, one waiting: the third request gets 429 at once, not a hang. The first two
    cannot finish on their own while the test runs (a fast engine had ended a 48-token answer
    before the third request was sent, freeing the queue)."""
    url = f"{keyed.url}/v1/chat/completions"
    with (
        httpx.Client(timeout=60, headers=keyed.headers()) as http,
        http.stream("POST", url, json=_endless_body()) as running,
    ):
        assert running.status_code == 200
        wait_for(lambda: keyed.metrics()["anvyl_active_sequences"] == 1)
        with http.stream("POST", url, json=_endless_body()) as waiting:
            assert waiting.status_code == 200
            wait_for(lambda: keyed.metrics()["anvyl_queue_depth"] == 1)
            refused = http.post(url, json=_chat_body(stream=False))
            assert refused.status_code == 429
            assert refused.headers["retry-after"] == "1"
            assert refused.json()["error"]["code"] == "queue_full"
    wait_for(lambda: keyed.metrics()["anvyl_active_sequences"] == 0, timeout=10)
    wait_for(lambda: keyed.metrics()["anvyl_queue_depth"] == 0, timeout=10)


def test_sigterm_finishes_in_flight_requests_and_exits_zero(keyed: RunningServer) -> None:
    """SIGTERM: the running stream completes in full, new connections fail, exit code 0."""
    url = f"{keyed.url}/v1/chat/completions"
    events: list[str] = []
    with (
        httpx.Client(timeout=60, headers=keyed.headers()) as http,
        http.stream("POST", url, json=_chat_body(max_tokens=32)) as r,
    ):
        lines = r.iter_lines()
        first_text = next(line for line in lines if '"content":"' in line and '""' not in line)
        keyed.process.send_signal(signal.SIGTERM)
        wait_for(lambda: _refused(keyed.health_url), timeout=10, what="the listeners to close")
        events += [first_text[6:]] + [line[6:] for line in lines if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    usage = json.loads(events[-2])["usage"]
    finish = json.loads(events[-3])["choices"][0]["finish_reason"]
    assert finish in ("length", "stop")
    if finish == "length":
        assert usage["completion_tokens"] == 32
    assert keyed.process.wait(timeout=30) == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(keyed.health_url)


def _refused(url: str) -> bool:
    """Whether a new connection to `url` is refused."""
    try:
        httpx.get(url, timeout=2)
    except httpx.ConnectError:
        return True
    return False


def test_health_is_503_while_loading_then_200(bundled_model: Path) -> None:
    """In process, with a loader held at a gate: /health 503 loading, then 200 ok."""
    gate = threading.Event()

    def gated_loader() -> LoadedModel:
        gate.wait(60)
        return load_model_dir(bundled_model, "auto", 256)

    port, health_port = free_port(), free_port()
    config = ServerConfig(
        model_path=bundled_model,
        model_id=MODEL_ID,
        port=port,
        health_port=health_port,
        drain_timeout=5,
    )
    server = ModelServer(config, loader=gated_loader)
    loop = asyncio.new_event_loop()
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(loop.run_until_complete(server.serve())))
    thread.start()
    try:
        health = f"http://127.0.0.1:{health_port}/health"
        first = wait_for(lambda: httpx.get(health), what="the health listener")
        assert first.status_code == 503 and first.json() == {"status": "loading"}
        api = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{api}/health").status_code == 503
        body = {"model": MODEL_ID, "messages": [LONG]}
        loading = httpx.post(f"{api}/v1/chat/completions", json=body)
        assert loading.status_code == 503
        assert loading.json()["error"]["code"] == "model_loading"
        assert loading.headers["retry-after"] == "1"
        assert httpx.get(f"{api}/api/v0/models").json()["data"][0]["state"] == "loading"
        gate.set()
        ok = wait_for(lambda: (r := httpx.get(health)).status_code == 200 and r, timeout=120)
        assert ok.json()["status"] == "ok" and ok.json()["model"] == MODEL_ID
        assert httpx.get(f"{api}/api/v0/models").json()["data"][0]["loaded_context_length"] == 256
    finally:
        gate.set()
        loop.call_soon_threadsafe(server.request_stop)
        thread.join(60)
        loop.close()
    assert codes == [0]
