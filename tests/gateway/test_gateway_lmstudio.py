"""LM Studio's Python SDK (pinned 1.5.0), unchanged, against the gateway: one client, all models.

The gateway runs in-process over two real model servers serving the bundled model under two
ids (`alpha`, `beta`), plus a third target whose port nothing listens on (a dead replica of
`alpha`) and, for the key tests, a target that requires a key clients must send themselves.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import lmstudio as lms
import pytest
from helpers import free_port, wait_for
from modelserver_harness import RunningServer, start_server, stop_server

from anvyl.gateway import GatewayConfig, open_gateway
from anvyl.gateway.routing import Target
from anvyl.gateway.server import GatewayServer

pytestmark = [pytest.mark.model]

PARIS = "What is the capital of France?"
LONG = "Count from 1 to 1000, one number per line."
GREEDY = {"temperature": 0.0}
FAST_S = 5.0  # a refusal answers at once; nothing here waits on a timeout
READY_TIMEOUT_S = 30.0


class Source:
    """The targets the gateway reads (what the store or the Swarm would give)."""

    def __init__(self, targets: Sequence[Target]) -> None:
        self.targets = list(targets)
        self.lock = threading.Lock()

    def __call__(self) -> list[Target]:
        with self.lock:
            return list(self.targets)


@pytest.fixture(scope="module")
def servers(
    bundled_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, RunningServer]]:
    """Two real model servers of the bundled model, as `alpha` (one slot) and `beta`."""
    logs = tmp_path_factory.mktemp("gateway-lmstudio")
    started: dict[str, RunningServer] = {}
    try:
        for model_id, batch in (("alpha", "1"), ("beta", "4")):
            started[model_id] = start_server(
                bundled_model,
                logs / f"{model_id}.log",
                "--model-id",
                model_id,
                "--ctx",
                "512",
                "--max-batch",
                batch,
            )
        yield started
    finally:
        for server in started.values():
            stop_server(server)


def _target(key: str, model: str, url: str, **kw: str) -> Target:
    return Target(key=key, model_id=model, base_url=url, deployment=key, **kw)


def _gateway(source: Source, token: str | None = None) -> GatewayServer:
    server = open_gateway(
        source,
        GatewayConfig(port=0, interval=0.2),
        host="127.0.0.1",
        token=token,
        loopback=True,
    )
    assert server is not None
    server.start()
    return server


@pytest.fixture(scope="module")
def gateway(servers: dict[str, RunningServer]) -> Iterator[GatewayServer]:
    """The gateway over `alpha` (a live and a dead replica) and `beta`."""
    dead = f"http://127.0.0.1:{free_port()}"
    source = Source(
        [
            _target("alpha-1", "alpha", servers["alpha"].url),
            _target("alpha-dead", "alpha", dead),
            _target("beta-1", "beta", servers["beta"].url),
        ]
    )
    server = _gateway(source)
    wait_for(lambda: _healthy(server) == 2, timeout=READY_TIMEOUT_S, what="2 healthy replicas")
    yield server
    server.stop()


def _finished(server: RunningServer, reason: str) -> float:
    """Generations the server finished for `reason` so far."""
    return server.metrics().get(f'anvyl_generations_finished_total{{reason="{reason}"}}', 0.0)


def _healthy(server: GatewayServer) -> int:
    return sum(1 for r in server.table.replicas() if r.healthy)


@pytest.fixture
def client(gateway: GatewayServer) -> Iterator[lms.Client]:
    """An SDK client pointed at the gateway's port."""
    with lms.Client(f"127.0.0.1:{gateway.port}") as c:
        yield c


def test_greeting_answers_the_probe(gateway: GatewayServer) -> None:
    assert httpx.get(f"{gateway.url}/lmstudio-greeting").json() == {"lmstudio": True}
    assert lms.Client.is_valid_api_host(f"127.0.0.1:{gateway.port}")


def test_one_client_lists_every_model(client: lms.Client) -> None:
    """Each running model once (not once per replica), loaded and downloaded alike."""
    assert sorted(m.identifier for m in client.llm.list_loaded()) == ["alpha", "beta"]
    downloaded = sorted(m.model_key for m in client.list_downloaded_models())
    assert downloaded == ["alpha", "beta"]
    assert client.embedding.list_loaded() == []


def test_respond_reaches_each_model(client: lms.Client) -> None:
    """`respond` answers the known question through the gateway, with the replica's stats."""
    for model_id in ("alpha", "beta"):
        result = client.llm.model(model_id).respond(PARIS, config=GREEDY)
        assert "Paris" in result.content
        assert result.stats.stop_reason == "eosFound"
        assert result.stats.predicted_tokens_count and result.stats.predicted_tokens_count > 1
        assert result.model_info.model_key == model_id


def test_respond_stream_yields_fragments(client: lms.Client) -> None:
    stream = client.llm.model("beta").respond_stream(LONG, config=GREEDY | {"maxTokens": 12})
    pieces = [fragment.content for fragment in stream]
    assert len(pieces) >= 5
    assert "".join(pieces) == stream.result().content
    assert stream.result().stats.stop_reason == "maxPredictedTokensReached"


def test_calls_about_a_model_are_routed(client: lms.Client) -> None:
    model = client.llm.model("alpha")
    assert model.count_tokens("hello world") == len(model.tokenize("hello world")) > 0
    assert model.get_info().identifier == "alpha"
    assert model.get_context_length() == 512


def test_cancelled_stream_frees_the_slot(
    client: lms.Client, servers: dict[str, RunningServer]
) -> None:
    """`alpha` has one slot: after a cancel through the gateway, the next request is served."""
    alpha = servers["alpha"]
    model = client.llm.model("alpha")
    cancelled_before = _finished(alpha, "cancelled")
    stream = model.respond_stream(LONG, config=GREEDY | {"maxTokens": 400})
    pieces = iter(stream)
    next(pieces)
    assert alpha.metrics()["anvyl_active_sequences"] == 1
    stream.cancel()
    rest = list(pieces)
    assert stream.result().stats.stop_reason == "userStopped"
    assert len(rest) < 399
    wait_for(
        lambda: alpha.metrics()["anvyl_active_sequences"] == 0,
        timeout=10,
        what="the cancelled sequence to leave the batch",
    )
    assert _finished(alpha, "cancelled") == cancelled_before + 1
    assert "Paris" in model.respond(PARIS, config=GREEDY).content


def test_closing_the_client_cancels_its_generation(
    gateway: GatewayServer, servers: dict[str, RunningServer]
) -> None:
    """A client that goes away mid-stream stops the replica's generation (not left running)."""
    alpha = servers["alpha"]
    cancelled_before = _finished(alpha, "cancelled")
    with lms.Client(f"127.0.0.1:{gateway.port}") as c:
        stream = c.llm.model("alpha").respond_stream(LONG, config=GREEDY | {"maxTokens": 400})
        next(iter(stream))
        assert alpha.metrics()["anvyl_active_sequences"] == 1
    wait_for(
        lambda: alpha.metrics()["anvyl_active_sequences"] == 0,
        timeout=10,
        what="the abandoned sequence to be cancelled",
    )
    assert _finished(alpha, "cancelled") == cancelled_before + 1


def test_a_replica_that_cannot_be_reached_is_skipped(gateway: GatewayServer) -> None:
    """A replica taken for healthy but not listening: calls go to the live one instead."""
    for _ in range(4):
        gateway.table.set_health("alpha-dead", True)  # as if its last probe had passed
        with lms.Client(f"127.0.0.1:{gateway.port}") as c:  # a new socket picks afresh
            assert c.llm.model("alpha").count_tokens("hello world") > 0


def test_unknown_model_fails_fast_naming_the_running_ones(client: lms.Client) -> None:
    started = time.monotonic()
    with pytest.raises(lms.LMStudioModelNotFoundError) as info:
        client.llm.model("nope")
    assert "running: alpha, beta" in str(info.value)
    assert time.monotonic() - started < FAST_S


def test_unsupported_calls_fail_fast_with_their_name(client: lms.Client) -> None:
    started = time.monotonic()
    with pytest.raises(lms.LMStudioServerError) as info:
        client.llm.load_new_instance("alpha")
    assert "does not load" in str(info.value)
    with pytest.raises(lms.LMStudioServerError) as info:
        client.llm.unload("alpha")
    assert "llm.unloadModel" in str(info.value)
    assert time.monotonic() - started < FAST_S


def test_a_token_gateway_refuses_the_hello_clearly(servers: dict[str, RunningServer]) -> None:
    """The SDK cannot send the server's token: the hello is refused with a reason."""
    server = _gateway(Source([_target("beta-1", "beta", servers["beta"].url)]), token="tok")
    try:
        with (
            pytest.raises(lms.LMStudioServerError) as info,
            lms.Client(f"127.0.0.1:{server.port}") as c,
        ):
            c.llm.list_loaded()
        assert "Authentication failed" in str(info.value)
        assert "requires an access token" in str(info.value)
    finally:
        server.stop()


def test_models_with_a_client_key_are_not_offered(servers: dict[str, RunningServer]) -> None:
    """A model started with its own key stays closed to a client that cannot send it."""
    source = Source(
        [
            _target("beta-1", "beta", servers["beta"].url),
            _target("alpha-1", "alpha", servers["alpha"].url, client_key="model-key"),
        ]
    )
    server = _gateway(source)
    try:
        wait_for(lambda: _healthy(server) == 2, timeout=READY_TIMEOUT_S, what="2 healthy")
        with lms.Client(f"127.0.0.1:{server.port}") as c:
            assert [m.identifier for m in c.llm.list_loaded()] == ["beta"]
            with pytest.raises(lms.LMStudioError) as info:
                c.llm.model("alpha").respond(PARIS)
            assert "requires an API key" in str(info.value)
    finally:
        server.stop()


def test_a_replica_dying_mid_stream_ends_the_stream_with_an_error(
    bundled_model: Path, tmp_path: Path
) -> None:
    """The replica is killed while it streams: the client gets an error at once, not a hang."""
    doomed = start_server(bundled_model, tmp_path / "doomed.log", "--model-id", "doomed")
    server = _gateway(Source([_target("doomed-1", "doomed", doomed.url)]))
    try:
        wait_for(lambda: _healthy(server) == 1, timeout=READY_TIMEOUT_S, what="a healthy replica")
        with lms.Client(f"127.0.0.1:{server.port}") as c:
            stream = c.llm.model("doomed").respond_stream(LONG, config={"maxTokens": 400})
            pieces = iter(stream)
            next(pieces)
            doomed.process.kill()
            started = time.monotonic()
            with pytest.raises(lms.LMStudioError) as info:
                list(pieces)
            assert "went away" in str(info.value)
            assert time.monotonic() - started < FAST_S
    finally:
        server.stop()
        stop_server(doomed)
