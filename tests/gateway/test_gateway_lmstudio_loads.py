"""LM Studio's SDK (pinned 1.5.0) loads and unloads models through the gateway of a real
`anvyl serve --runtime process` (models on demand): `model(key)` gets or loads,
`load_new_instance` starts one, `unload()` stops it, the listings tell running from startable.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import lmstudio as lms
import pytest
from gateway_harness import GatewayServed, serve_gateway, stop_all
from helpers import wait_for
from httpx_ws import WebSocketUpgradeError, connect_ws
from models_harness import MODEL_ID, deployments, make_home

pytestmark = [pytest.mark.model]

UNLOAD_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, bundled_model: Path, run_labels: dict[str, str]
) -> Iterator[GatewayServed]:
    """`anvyl serve --runtime process` with its gateway; its deployments stopped after."""
    home = make_home(tmp_path_factory.mktemp("anvyl-lms-loads"), bundled_model)
    server = serve_gateway(home, run_labels, "--runtime", "process", "--ollama-port", "0")
    try:
        yield server
    finally:
        try:
            stop_all(server.served)
        finally:
            server.served.stop()


@pytest.fixture
def client(served: GatewayServed) -> Iterator[lms.Client]:
    """An SDK client of the gateway; the model stopped again after each test."""
    with lms.Client(f"127.0.0.1:{served.gateway_port}") as c:
        yield c
    stop_all(served.served)


def loaded(client: lms.Client) -> list[str]:
    return sorted(m.identifier for m in client.llm.list_loaded())


def test_model_loads_a_stopped_model_and_unload_stops_it(
    served: GatewayServed, client: lms.Client
) -> None:
    assert loaded(client) == []
    assert MODEL_ID in [m.model_key for m in client.list_downloaded_models()]
    model = client.llm.model(MODEL_ID)
    (d,) = deployments(served.served)
    assert d["model_id"] == MODEL_ID and d["on_demand"]
    assert d["keep_alive_seconds"] == 3600  # the SDK's default TTL is the start's keep-alive
    assert loaded(client) == [MODEL_ID]
    assert client.llm.model(MODEL_ID).identifier == MODEL_ID  # got, not loaded again
    assert len(deployments(served.served)) == 1
    assert model.respond("Hi", config={"maxTokens": 3}).content
    model.unload()
    assert deployments(served.served) == []
    assert loaded(client) == []
    assert MODEL_ID in [m.model_key for m in client.list_downloaded_models()]  # startable


def test_load_new_instance_starts_one_and_refuses_what_it_cannot_do(
    served: GatewayServed, client: lms.Client
) -> None:
    with pytest.raises(lms.LMStudioServerError) as info:
        client.llm.load_new_instance(MODEL_ID, config={"contextLength": 1024})
    assert "llm.load.contextLength" in str(info.value)
    with pytest.raises(lms.LMStudioServerError) as info:
        client.llm.load_new_instance(MODEL_ID, "my-copy")
    assert "'my-copy'" in str(info.value)
    assert deployments(served.served) == []  # a refusal starts nothing
    model = client.llm.load_new_instance(MODEL_ID, ttl=600)
    assert model.identifier == MODEL_ID
    (d,) = deployments(served.served)
    assert d["keep_alive_seconds"] == 600
    with pytest.raises(lms.LMStudioServerError) as info:
        client.llm.load_new_instance(MODEL_ID)
    assert "already loaded" in str(info.value)
    client.llm.unload(MODEL_ID)
    assert deployments(served.served) == []
    with pytest.raises(lms.LMStudioModelNotFoundError):
        client.llm.unload(MODEL_ID)  # no longer loaded


def test_a_ttl_unloads_the_model_it_loaded_and_a_prediction_loads_it_again(
    served: GatewayServed, client: lms.Client
) -> None:
    model = client.llm.model(MODEL_ID, ttl=1)
    wait_for(
        lambda: not deployments(served.served),
        timeout=UNLOAD_TIMEOUT_S,
        what="the model to unload after its 1 s TTL",
    )
    assert loaded(client) == []
    assert model.respond("Hi", config={"maxTokens": 3}).content  # the handle loads it again
    assert loaded(client) == [MODEL_ID]


def test_an_unknown_model_is_not_found(client: lms.Client) -> None:
    with pytest.raises(lms.LMStudioModelNotFoundError) as info:
        client.llm.model("no-such-model-xyz")
    assert "no-such-model-xyz" in str(info.value)


def test_a_web_page_cannot_open_the_websocket(served: GatewayServed) -> None:
    """Websockets have no CORS: a page's socket (it has an Origin) is refused, loads nothing."""
    url = f"ws://127.0.0.1:{served.gateway_port}/llm"
    with (
        httpx.Client() as http,
        pytest.raises(WebSocketUpgradeError) as info,
        connect_ws(url, http, headers={"Origin": "https://evil.example"}),
    ):
        pass
    assert info.value.response.status_code == 403
    with httpx.Client() as http, connect_ws(url, http, headers={"Origin": "http://localhost"}):
        pass  # a page on this machine (the dashboard) may
    assert deployments(served.served) == []
