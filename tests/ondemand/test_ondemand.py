"""Models on demand through a real gateway: the first request loads, keep-alive unloads,
`--max-loaded` swaps, explicit starts are never evicted, refusals carry the numbers.

One `anvyl serve --runtime process --max-loaded 1 --keep-alive 2s` for the module (no image
needed: the behaviour is the runtime's, not Docker's), its home holding the bundled model under
two ids.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from helpers import free_port, wait_for
from models_harness import MODEL_ID, deployments, ok, start_model, stop_all
from ondemand_harness import OTHER_ID, DemandServed, chat, of_model, serve_on_demand, two_model_home

UNLOAD_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def demand_server(
    tmp_path_factory: pytest.TempPathFactory, bundled_model: Path, run_labels: dict[str, str]
) -> Iterator[DemandServed]:
    home = two_model_home(tmp_path_factory.mktemp("anvyl-ondemand"), bundled_model)
    served = serve_on_demand(home, run_labels, "--max-loaded", "1", "--keep-alive", "2s")
    try:
        yield served
    finally:
        try:
            stop_all(served.served)
        finally:
            served.served.stop()


@pytest.fixture
def demand(demand_server: DemandServed) -> Iterator[DemandServed]:
    """The module's server; every deployment stopped after the test."""
    yield demand_server
    stop_all(demand_server.served)
    assert deployments(demand_server.served) == []


def test_stopped_models_are_listed_and_a_first_request_loads_one(demand: DemandServed) -> None:
    listed = httpx.get(f"{demand.url}/v1/models", timeout=10).json()["data"]
    states = {m["id"]: m["state"] for m in listed}
    assert states == {MODEL_ID: "not-loaded", OTHER_ID: "not-loaded"}

    # LM Studio's `ttl` in the request: this load stays for 10 minutes.
    answer = chat(demand.url, ttl=600)
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"]
    (deployment,) = of_model(demand, MODEL_ID)
    assert deployment["on_demand"] is True
    assert deployment["runtime"] == "process"
    assert deployment["keep_alive_seconds"] == 600
    assert deployment["port"] != 1234  # an ephemeral port, never the fixed default
    assert deployment["bind"] == "127.0.0.1"
    assert 0 < deployment["unload_at"] - time.time() <= 600
    ps = ok(demand.served.cli("model", "ps")).stdout
    assert "on demand, in " in ps
    states = {m["id"]: m["state"] for m in httpx.get(f"{demand.url}/v1/models").json()["data"]}
    assert states == {MODEL_ID: "loaded", OTHER_ID: "not-loaded"}


def test_concurrent_first_requests_start_the_model_once(demand: DemandServed) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda _: chat(demand.url, OTHER_ID, ttl=600), range(8)))
    assert [a.status_code for a in answers] == [200] * 8, [a.text for a in answers]
    assert {a.headers["x-anvyl-deployment"] for a in answers} == {
        answers[0].headers["x-anvyl-deployment"]
    }
    (deployment,) = of_model(demand, OTHER_ID)  # one start: a second would be listed too
    assert deployment["on_demand"]


def test_idle_model_unloads_after_its_keep_alive_and_loads_again(demand: DemandServed) -> None:
    first = chat(demand.url)  # the server's keep-alive: 2 s
    assert first.status_code == 200, first.text
    wait_for(
        lambda: not of_model(demand, MODEL_ID),
        timeout=UNLOAD_TIMEOUT_S,
        what="the idle model to unload",
    )
    # Ollama's keep_alive 0: unload as soon as it is idle; requests around the unload are
    # answered (served before it, or by waiting for it to go and loading again).
    assert chat(demand.url, keep_alive=0).status_code == 200

    def later(delay: float) -> int:
        time.sleep(delay)
        return chat(demand.url, keep_alive=0).status_code

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert list(pool.map(later, (0.0, 0.3, 0.6, 1.2))) == [200] * 4
    wait_for(
        lambda: not of_model(demand, MODEL_ID),
        timeout=UNLOAD_TIMEOUT_S,
        what="the model to unload at once (keep_alive 0)",
    )


def test_max_loaded_swaps_models_and_never_evicts_an_explicit_start(
    demand: DemandServed,
) -> None:
    for model in (MODEL_ID, OTHER_ID, MODEL_ID):
        answer = chat(demand.url, model, ttl=600)
        assert answer.status_code == 200, answer.text
        assert [d["model_id"] for d in deployments(demand.served)] == [model]  # never two
    stop_all(demand.served)
    port = str(free_port())
    ok(start_model(demand.served, MODEL_ID, "--runtime", "process", "--port", port))
    refused = chat(demand.url, OTHER_ID)
    assert refused.status_code == 503, refused.text
    assert refused.headers["retry-after"]
    message = refused.json()["error"]["message"]
    assert "--max-loaded 1" in message and "started explicitly" in message, message
    assert [d["model_id"] for d in deployments(demand.served)] == [MODEL_ID]


def test_a_web_page_cannot_trigger_a_load(demand: DemandServed) -> None:
    refused = httpx.post(
        f"{demand.url}/v1/chat/completions",
        json={"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}]},
        headers={"Origin": "https://evil.example"},
        timeout=30,
    )
    assert refused.status_code == 403
    assert deployments(demand.served) == []


def test_bad_keep_alive_is_refused_and_starts_nothing(demand: DemandServed) -> None:
    refused = chat(demand.url, keep_alive="soon")
    assert refused.status_code == 400
    assert "keep_alive" in refused.json()["error"]["message"]
    assert deployments(demand.served) == []


def test_ollama_preload_and_unload_requests(demand: DemandServed) -> None:
    loaded = httpx.post(
        f"{demand.url}/api/generate",
        json={"model": f"{MODEL_ID}:latest", "keep_alive": "10m"},
        timeout=240,
    )
    assert loaded.status_code == 200, loaded.text
    assert loaded.json()["done_reason"] == "load"
    (deployment,) = of_model(demand, MODEL_ID)
    assert deployment["keep_alive_seconds"] == 600
    (running,) = httpx.get(f"{demand.url}/api/ps", timeout=30).json()["models"]
    expires = datetime.fromisoformat(running["expires_at"].replace("Z", "+00:00")).timestamp()
    assert 500 < expires - time.time() <= 601, running  # its keep-alive, not "never"
    unloaded = httpx.post(
        f"{demand.url}/api/generate", json={"model": MODEL_ID, "keep_alive": 0}, timeout=60
    )
    assert unloaded.json()["done_reason"] == "unload"
    wait_for(
        lambda: not of_model(demand, MODEL_ID),
        timeout=UNLOAD_TIMEOUT_S,
        what="the model to unload on Ollama's request",
    )
