"""The gateway in-process, over replicas that refuse connections: auth, errors, 503, retries.

No model is needed here: a replica on a port nothing listens on refuses the connection, which
is exactly the failure the gateway must retry and then report.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import httpx
import ollama
import pytest
from helpers import free_port, wait_for

from anvyl.errors import InvalidArgument
from anvyl.gateway import GatewayConfig, open_gateway
from anvyl.gateway.routing import Target
from anvyl.gateway.server import GatewayServer

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


class Source:
    """A mutable list of targets the gateway reads (what the store would give)."""

    def __init__(self, targets: Sequence[Target] = ()) -> None:
        self.targets = list(targets)
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self) -> list[Target]:
        with self.lock:
            self.calls += 1
            return list(self.targets)


def _dead(key: str, model: str = "m", **kw: str) -> Target:
    return Target(key=key, model_id=model, base_url=f"http://127.0.0.1:{free_port()}", **kw)


@pytest.fixture
def source() -> Source:
    """Targets for the gateway under test."""
    return Source()


@pytest.fixture
def gateway(source: Source) -> Iterator[GatewayServer]:
    """A gateway on a free loopback port, refreshing every 0.2 s."""
    server = open_gateway(
        source, GatewayConfig(port=0, interval=0.2), host="127.0.0.1", token=None, loopback=True
    )
    assert server is not None
    server.start()
    yield server
    server.stop()


def test_health_and_empty_listing(gateway: GatewayServer) -> None:
    assert httpx.get(f"{gateway.url}/health").json() == {"status": "ok"}
    assert httpx.get(f"{gateway.url}/v1/models").json() == {"object": "list", "data": []}


def test_unknown_model_is_404_in_openai_shape(gateway: GatewayServer) -> None:
    response = httpx.post(f"{gateway.url}/v1/chat/completions", json={**CHAT, "model": "x"})
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert "x" in error["message"]
    assert httpx.get(f"{gateway.url}/v1/models/x").status_code == 404


def test_ollama_model_management_is_refused_naming_the_cli(gateway: GatewayServer) -> None:
    """`ollama pull` through the gateway: a 400 in Ollama's shape naming `anvyl model pull`."""
    client = ollama.Client(host=gateway.url)
    with pytest.raises(ollama.ResponseError) as raised:
        client.pull("mlx-community/SmolLM2-135M-Instruct")
    assert raised.value.status_code == 400
    assert "anvyl model pull OWNER/NAME" in raised.value.error
    assert "anvyl model import" in raised.value.error
    deleted = httpx.request("DELETE", f"{gateway.url}/api/delete", json={"model": "m"})
    assert deleted.status_code == 400 and "anvyl model rm" in deleted.json()["error"]


def test_bad_requests(gateway: GatewayServer) -> None:
    no_model = httpx.post(f"{gateway.url}/v1/chat/completions", json={"messages": []})
    assert no_model.status_code == 400 and no_model.json()["error"]["param"] == "model"
    assert httpx.get(f"{gateway.url}/nothing").status_code == 404
    assert httpx.post(f"{gateway.url}/v1/models").status_code == 405


def test_no_healthy_replica_is_503_with_retry_after(gateway: GatewayServer, source: Source) -> None:
    source.targets = [_dead("a"), _dead("b")]
    calls = source.calls
    wait_for(lambda: source.calls > calls + 1, timeout=10, what="a refresh")
    listing = httpx.get(f"{gateway.url}/v1/models").json()["data"]
    assert [(m["id"], m["replicas"], m["ready_replicas"]) for m in listing] == [("m", 2, 0)]
    response = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT)
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) > 0
    assert response.json()["error"]["code"] == "no_healthy_replica"


def test_refused_connection_is_retried_then_marked_down(source: Source) -> None:
    source.targets = [_dead("a"), _dead("b")]
    # One refresh at start, then none for the test's length: nothing undoes what follows.
    cfg = GatewayConfig(port=0, interval=3600)
    server = open_gateway(source, cfg, host="127.0.0.1", token=None, loopback=True)
    assert server is not None
    server.start()
    try:
        assert len(server.table.replicas()) == 2
        # Pretend the probe saw them healthy: each request must try both, then answer 503.
        for replica in server.table.replicas():
            replica.mark_up()
        response = httpx.post(f"{server.url}/v1/chat/completions", json=CHAT)
        assert response.status_code == 503
        assert "failed" in response.json()["error"]["message"]
        assert not any(r.healthy for r in server.table.replicas())
    finally:
        server.stop()


def test_token_and_model_keys(source: Source) -> None:
    source.targets = [_dead("a", upstream_key="k1", client_key="k1"), _dead("b", model="n")]
    server = open_gateway(
        source, GatewayConfig(port=0, interval=0.2), host="127.0.0.1", token="tok", loopback=True
    )
    assert server is not None
    server.start()
    try:
        url = f"{server.url}/v1/chat/completions"
        assert httpx.post(url, json=CHAT).status_code == 401
        wrong = httpx.post(url, json=CHAT, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
        for key in ("tok", "k1"):  # the server's token, or the model's own key
            ok = httpx.post(url, json=CHAT, headers={"Authorization": f"Bearer {key}"})
            assert ok.status_code == 503  # authorized; no replica answers
        other = httpx.post(url, json={**CHAT, "model": "n"}, headers={"Authorization": "Bearer k1"})
        assert other.status_code == 401  # a model's key opens only that model
        assert httpx.get(f"{server.url}/v1/models").status_code == 401
        listed = httpx.get(f"{server.url}/v1/models", headers={"Authorization": "Bearer tok"})
        assert listed.status_code == 200
    finally:
        server.stop()


def test_model_key_required_on_loopback_without_token(
    gateway: GatewayServer, source: Source
) -> None:
    source.targets = [_dead("a", upstream_key="k1", client_key="k1")]
    wait_for(lambda: gateway.table.known("m"), timeout=10, what="the replica")
    url = f"{gateway.url}/v1/chat/completions"
    assert httpx.post(url, json=CHAT).status_code == 401
    assert httpx.post(url, json=CHAT, headers={"Authorization": "Bearer k1"}).status_code == 503


def test_off_loopback_requires_a_token(source: Source) -> None:
    with pytest.raises(InvalidArgument, match="requires an access token"):
        open_gateway(source, GatewayConfig(port=0), host="0.0.0.0", token=None, loopback=False)


def test_taken_port(gateway: GatewayServer, source: Source) -> None:
    cfg = GatewayConfig(port=gateway.port)
    with pytest.raises(Exception, match="--gateway-port"):
        open_gateway(source, cfg, host="127.0.0.1", token=None, loopback=True)
    optional = GatewayConfig(port=gateway.port, optional=True)
    assert open_gateway(source, optional, host="127.0.0.1", token=None, loopback=True) is None
