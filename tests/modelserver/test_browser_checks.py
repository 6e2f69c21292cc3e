"""Browser safety of a real model server's own ports: foreign Host and Origin refused on every
API (OpenAI, Anthropic, Ollama, LM Studio's websocket) and on the health port, CORS answers for
an origin allowed with `--allow-origin`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from httpx_ws import WebSocketUpgradeError, connect_ws
from modelserver_harness import MODEL_ID, RunningServer, start_server, stop_server

ALLOWED = "https://app.example"
EVIL = "https://evil.example"
PARIS = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def server(
    bundled_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """A loopback server that allows one foreign origin."""
    log = tmp_path_factory.mktemp("browser") / "server.log"
    s = start_server(bundled_model, log, "--ctx", "512", "--allow-origin", ALLOWED)
    yield s
    stop_server(s)


@pytest.mark.parametrize(
    ("path", "shape"),
    [("/v1/chat/completions", "openai"), ("/v1/messages", "anthropic"), ("/api/chat", "ollama")],
)
def test_foreign_origin_and_host_are_refused_in_the_paths_dialect(
    server: RunningServer, path: str, shape: str
) -> None:
    """A text/plain POST (no preflight) from another site, or through a rebound DNS name: 403
    before anything runs, in the error shape of the path's API."""
    body = json.dumps({"model": MODEL_ID, "messages": PARIS, "max_tokens": 1})
    plain = {"Content-Type": "text/plain"}
    for headers, word in (({"Origin": EVIL}, "Origin"), ({"Host": "evil.example"}, "Host")):
        r = httpx.post(f"{server.url}{path}", content=body, headers={**plain, **headers})
        assert r.status_code == 403, r.text
        error = r.json()
        message = error["error"] if shape == "ollama" else error["error"]["message"]
        assert word in message
        if shape == "anthropic":
            assert error["type"] == "error" and error["error"]["type"] == "permission_error"
        assert "access-control-allow-origin" not in r.headers


def test_allowed_origin_gets_cors_answers(server: RunningServer) -> None:
    """Preflight answered (before the key check), then the answer and the stream carry ACAO."""
    url = f"{server.url}/v1/chat/completions"
    asked = "authorization, content-type, x-stainless-os"
    pre = httpx.options(url, headers={
        "Origin": ALLOWED, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": asked})  # fmt: skip
    assert pre.status_code == 204
    assert pre.headers["access-control-allow-origin"] == ALLOWED
    assert "POST" in pre.headers["access-control-allow-methods"]
    assert "x-stainless-os" in pre.headers["access-control-allow-headers"]
    body = {"model": MODEL_ID, "messages": PARIS, "max_tokens": 8, "temperature": 0}
    r = httpx.post(url, json=body, headers={"Origin": ALLOWED}, timeout=60)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == ALLOWED
    assert "origin" in r.headers["vary"].lower()
    with httpx.stream("POST", url, json={**body, "stream": True}, headers={"Origin": ALLOWED},
                      timeout=60) as s:  # fmt: skip
        assert s.headers["access-control-allow-origin"] == ALLOWED
        assert "[DONE]" in "".join(s.iter_text())
    local = httpx.get(f"{server.url}/api/tags", headers={"Origin": "http://localhost:3000"})
    assert local.headers["access-control-allow-origin"] == "http://localhost:3000"
    refused = httpx.options(url, headers={"Origin": EVIL, "Access-Control-Request-Method": "POST"})
    assert refused.status_code == 403


def test_health_port_open_to_probes_closed_to_other_sites(server: RunningServer) -> None:
    assert httpx.get(server.health_url).status_code == 200
    assert httpx.get(server.health_url, headers={"Origin": EVIL}).status_code == 403
    assert httpx.get(server.health_url, headers={"Host": "evil.example"}).status_code == 403
    assert httpx.get(f"{server.url}/health").status_code == 200


def test_lmstudio_websocket_from_another_site_is_refused(server: RunningServer) -> None:
    """Browsers open websockets cross-origin without CORS: the Origin check covers them."""
    with (
        pytest.raises(WebSocketUpgradeError) as refused,
        connect_ws(f"{server.url}/llm", headers={"Origin": EVIL}),
    ):
        pass
    assert refused.value.response.status_code == 403
    with connect_ws(f"{server.url}/llm", headers={"Origin": ALLOWED}):
        pass
