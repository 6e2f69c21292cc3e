"""LM Studio's own Python SDK (pinned 1.5.0), unchanged, against a real model server.

One server per module (the `server` fixture: the bundled model, 8 slots, a 48-token cap); a
second one with an API key for the refused hello.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import lmstudio as lms
import pytest
from helpers import wait_for
from modelserver_harness import MODEL_ID, RunningServer, start_server, stop_server

PARIS = "What is the capital of France?"
GREEDY = {"temperature": 0.0}
LONG = "Count from 1 to 1000, one number per line."
FAST_S = 5.0  # a refusal answers at once; nothing here waits on a timeout


@pytest.fixture
def client(server: RunningServer) -> Iterator[lms.Client]:
    """An SDK client on the server's API port, closed after the test."""
    with lms.Client(f"127.0.0.1:{server.port}") as c:
        yield c


@pytest.fixture(scope="module")
def keyed_server(
    bundled_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """A server with an API key."""
    log = tmp_path_factory.mktemp("modelserver-key") / "server.log"
    s = start_server(bundled_model, log, "--ctx", "512", api_key="sekrit-key")
    yield s
    stop_server(s)


def active_sequences(server: RunningServer) -> float:
    """`anvyl_active_sequences` right now."""
    return server.metrics()["anvyl_active_sequences"]


def finished(server: RunningServer, reason: str) -> float:
    """Generations finished for `reason` so far."""
    return server.metrics().get(f'anvyl_generations_finished_total{{reason="{reason}"}}', 0.0)


# ------------------------------------------------------------------------------- what works


def test_greeting_answers_the_probe(server: RunningServer) -> None:
    """`/lmstudio-greeting` is what the SDK probes; `with lms.Client(...)` accepts the host."""
    assert httpx.get(f"{server.url}/lmstudio-greeting").json() == {"lmstudio": True}
    assert lms.Client.is_valid_api_host(f"127.0.0.1:{server.port}")


def test_respond_answers_paris(client: lms.Client) -> None:
    """`model(key).respond` answers the known question greedily, with LM Studio's stats."""
    model = client.llm.model(MODEL_ID)
    result = model.respond(PARIS, config=GREEDY)
    assert "Paris" in result.content
    stats = result.stats
    assert stats.stop_reason == "eosFound"
    assert stats.tokens_per_second is not None and stats.tokens_per_second > 0
    assert stats.time_to_first_token_sec is not None and 0 < stats.time_to_first_token_sec < 60
    assert stats.prompt_tokens_count and stats.prompt_tokens_count > 10
    assert stats.predicted_tokens_count and stats.predicted_tokens_count > 1
    assert result.model_info.model_key == MODEL_ID
    assert result.load_config.context_length == 512


def test_respond_stream_yields_fragments(client: lms.Client) -> None:
    """`respond_stream` yields one fragment per decoded piece; they add up to the result."""
    stream = client.llm.model(MODEL_ID).respond_stream(LONG, config=GREEDY | {"maxTokens": 12})
    pieces = [fragment.content for fragment in stream]
    result = stream.result()
    assert len(pieces) >= 5
    assert "".join(pieces) == result.content
    assert result.stats.stop_reason == "maxPredictedTokensReached"
    assert result.stats.predicted_tokens_count == 12


def test_stop_strings_and_complete(client: lms.Client) -> None:
    """A stop string ends the reply before it; `complete` continues raw text."""
    model = client.llm.model(MODEL_ID)
    result = model.respond(PARIS, config=GREEDY | {"stopStrings": ["Paris"]})
    assert "Paris" not in result.content
    assert result.stats.stop_reason == "stopStringFound"
    counting = model.complete("1, 2, 3, 4,", config=GREEDY | {"maxTokens": 6})
    assert counting.content.lstrip().startswith("5")


def test_top_k_min_p_and_repeat_penalty_are_honoured(client: lms.Client) -> None:
    """topKSampling 1 and minPSampling 1 leave only the likeliest token: at temperature 1.5 the
    reply is the greedy one; a repeat penalty changes a greedy reply; the settings come back."""
    model = client.llm.model(MODEL_ID)
    short = {"maxTokens": 16}
    greedy = model.respond(LONG, config=GREEDY | short)
    top_k = model.respond(LONG, config={"temperature": 1.5, "topKSampling": 1} | short)
    assert top_k.content == greedy.content
    assert top_k.prediction_config.top_k_sampling == 1
    min_p = model.respond(LONG, config={"temperature": 1.5, "minPSampling": 1.0} | short)
    assert min_p.content == greedy.content
    assert min_p.prediction_config.min_p_sampling == 1.0
    penalised = model.respond(LONG, config=GREEDY | short | {"repeatPenalty": 3.0})
    assert penalised.content != greedy.content
    assert penalised.prediction_config.repeat_penalty == 3.0
    off = model.respond(LONG, config=GREEDY | short | {"repeatPenalty": False, "topKSampling": 0})
    assert off.content == greedy.content


def test_listings_name_the_model(client: lms.Client) -> None:
    """`list_loaded`, `list_downloaded_models` and `llm.list_downloaded` list the model."""
    assert [m.identifier for m in client.llm.list_loaded()] == [MODEL_ID]
    downloaded = client.list_downloaded_models()
    assert [m.model_key for m in downloaded] == [MODEL_ID]
    assert downloaded[0].type == "llm"
    assert downloaded[0].info.max_context_length == 512
    assert [m.model_key for m in client.llm.list_downloaded()] == [MODEL_ID]
    assert client.embedding.list_loaded() == []


def test_model_handle_info_calls(client: lms.Client) -> None:
    """`model()`, `get_info`, `get_context_length`, `tokenize`, `count_tokens` and co. work."""
    model = client.llm.model()
    assert model.identifier == MODEL_ID
    assert model.get_info().model_key == MODEL_ID
    assert model.get_context_length() == 512
    tokens = model.tokenize("Hello world")
    assert tokens and all(isinstance(t, int) for t in tokens)
    assert model.count_tokens("Hello world") == len(tokens)
    assert model.get_load_config().context_length == 512
    assert "France" in model.apply_prompt_template(PARIS)


def test_calls_are_counted_with_the_http_requests(
    client: lms.Client, server: RunningServer
) -> None:
    """Predictions and refusals show in `anvyl_requests` (what `model ps` turns into req/min)."""
    ok_key = 'anvyl_requests_total{endpoint="lmstudio:llm.predict",status="200"}'
    refused_key = 'anvyl_requests_total{endpoint="lmstudio:other",status="400"}'
    before = server.metrics()
    client.llm.model(MODEL_ID).respond(PARIS, config=GREEDY | {"maxTokens": 2})
    with pytest.raises(lms.LMStudioServerError):
        client.llm.unload(MODEL_ID)
    after = server.metrics()
    assert after[ok_key] == before.get(ok_key, 0.0) + 1
    assert after[refused_key] == before.get(refused_key, 0.0) + 1


# ------------------------------------------------------------------------------- cancelling


def test_cancelled_stream_frees_its_slot(client: lms.Client, server: RunningServer) -> None:
    """`cancel()` stops the engine request: the slot frees, the next request is served."""
    cancelled_before = finished(server, "cancelled")
    stream = client.llm.model(MODEL_ID).respond_stream(LONG, config=GREEDY)
    pieces = iter(stream)
    next(pieces)
    assert active_sequences(server) == 1
    stream.cancel()
    rest = list(pieces)  # the server answers the cancel with `success`, then closes
    result = stream.result()
    assert result.stats.stop_reason == "userStopped"
    assert result.stats.predicted_tokens_count is not None
    assert result.stats.predicted_tokens_count < 48
    assert len(rest) < 47
    wait_for(lambda: active_sequences(server) == 0, timeout=10, what="the slot to be freed")
    assert finished(server, "cancelled") == cancelled_before + 1
    assert "Paris" in client.llm.model(MODEL_ID).respond(PARIS, config=GREEDY).content


def test_closed_socket_stops_generation(server: RunningServer) -> None:
    """Closing the client mid-stream cancels the generation on the server."""
    cancelled_before = finished(server, "cancelled")
    c = lms.Client(f"127.0.0.1:{server.port}")
    try:
        stream = c.llm.model(MODEL_ID).respond_stream(LONG, config=GREEDY)
        next(iter(stream))
    finally:
        c.close()
    wait_for(lambda: active_sequences(server) == 0, timeout=10, what="the slot to be freed")
    assert finished(server, "cancelled") == cancelled_before + 1


# ------------------------------------------------------------------------------- refusals


def test_other_model_key_is_refused(client: lms.Client) -> None:
    """`model(other)` raises the SDK's model-not-found error naming the served model."""
    with pytest.raises(lms.LMStudioModelNotFoundError, match=f"serves only '{MODEL_ID}'"):
        client.llm.model("some-other-model")


@pytest.mark.parametrize(
    ("call", "named"),
    [
        (lambda c: c.llm.unload(MODEL_ID), "llm.unloadModel"),
        (lambda c: c.llm.load_new_instance(MODEL_ID), "serves one model per server"),
        (lambda c: c.embedding.model("nomic-embed"), "embedding.getOrLoad"),
        (lambda c: c.prepare_image(b"\x89PNG", "cat.png"), "files.uploadFileBase64"),
        (
            lambda c: c.llm.model(MODEL_ID).respond(
                PARIS, response_format={"type": "array", "uniqueItems": True}
            ),
            "uniqueItems",
        ),
    ],
    ids=["unload", "load_new_instance", "embedding", "files", "unenforceable-schema"],
)
def test_unsupported_calls_fail_fast(client: lms.Client, call: object, named: str) -> None:
    """Calls outside the subset raise at once with a message naming what is unsupported."""
    started = time.monotonic()
    with pytest.raises(lms.LMStudioServerError, match=named):
        call(client)  # type: ignore[operator]
    assert time.monotonic() - started < FAST_S


# ------------------------------------------------------------------------------- API key


def test_keyed_server_refuses_the_hello(keyed_server: RunningServer) -> None:
    """The SDK cannot send a key: the hello is refused with a message saying so."""
    host = f"127.0.0.1:{keyed_server.port}"
    assert lms.Client.is_valid_api_host(host)  # the probe stays open; the hello explains
    with (
        lms.Client(host) as c,
        pytest.raises(lms.LMStudioServerError, match="requires an API key") as info,
    ):
        c.llm.list_loaded()
    assert "Authentication failed" in str(info.value)
    assert "Authorization: Bearer" in str(info.value)


def test_keyed_server_accepts_a_bearer_upgrade(keyed_server: RunningServer) -> None:
    """A client that sends the key on the upgrade request (not the SDK) gets in."""
    from httpx_ws import connect_ws

    hello = {"authVersion": 1, "clientIdentifier": "x", "clientPasskey": "y"}
    call = {"type": "rpcCall", "endpoint": "listLoaded", "callId": 1}
    url = f"{keyed_server.url}/llm"
    with connect_ws(url, headers=keyed_server.headers()) as ws:
        ws.send_json(hello)
        assert ws.receive_json() == {"success": True}
        ws.send_json(call)
        reply = ws.receive_json()
    assert reply["type"] == "rpcResult"
    assert [m["identifier"] for m in reply["result"]] == [MODEL_ID]


# ------------------------------------------------------------------------------- REST stats


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({}, "eosFound"),
        ({"stop": ["Paris"]}, "stopStringFound"),
        ({"max_tokens": 2}, "maxPredictedTokensReached"),
    ],
)
def test_rest_stats_stop_reason(
    server: RunningServer, extra: dict[str, object], reason: str
) -> None:
    """LM Studio's REST `stats.stop_reason` tells an EOS, a stop string and the token cap apart."""
    body = {"model": MODEL_ID, "messages": [{"role": "user", "content": PARIS}]}
    body |= {"temperature": 0} | extra
    reply = httpx.post(f"{server.url}/api/v0/chat/completions", json=body, timeout=60).json()
    assert reply["stats"]["stop_reason"] == reason


def test_raw_frames_outside_the_protocol_get_answers(server: RunningServer) -> None:
    """A bad hello is refused, junk frames get warnings, unknown channels a `channelError`."""
    from httpx_ws import WebSocketUpgradeError, connect_ws

    with connect_ws(f"{server.url}/llm") as ws:
        ws.send_json({"hello": "there"})
        assert ws.receive_json() == {
            "success": False,
            "error": {"title": "expected LM Studio's hello first"},
        }
    with connect_ws(f"{server.url}/llm") as ws:
        ws.send_json({"authVersion": 1, "clientIdentifier": "x", "clientPasskey": "y"})
        assert ws.receive_json() == {"success": True}
        ws.send_text("not json")
        assert ws.receive_json()["type"] == "communicationWarning"
        ws.send_json({"type": "channelCreate", "endpoint": "generateImage", "channelId": 1})
        reply = ws.receive_json()
        assert reply["type"] == "channelError" and reply["channelId"] == 1
        assert "'llm.generateImage'" in reply["error"]["title"]
        ws.send_json({"type": "rpcCall", "endpoint": "listLoaded", "callId": 1})
        assert ws.receive_json()["result"][0]["identifier"] == MODEL_ID
    with pytest.raises(WebSocketUpgradeError), connect_ws(f"{server.url}/no-such-namespace") as ws:
        ws.receive_json()
