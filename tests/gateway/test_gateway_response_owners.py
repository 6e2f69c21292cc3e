"""`previous_response_id` through the gateway with two replicas of one model: each continuation
goes to the model server that stores the response it continues, streamed or not; a response
whose replica is gone is a 400 saying so, never a silent fresh start elsewhere."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
from helpers import wait_for
from modelserver_harness import MODEL_ID, RunningServer, start_server, stop_server

from anvyl.gateway import GatewayConfig, open_gateway
from anvyl.gateway.routing import Target
from anvyl.gateway.server import GatewayServer

KEYS = ("replica-a", "replica-b")


@pytest.fixture(scope="module")
def replicas(
    bundled_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[RunningServer]]:
    """Two model servers of the same model, each with its own store of responses."""
    logs = tmp_path_factory.mktemp("gw-owners")
    servers: list[RunningServer] = []

    def start(key: str) -> None:
        servers.append(start_server(bundled_model, logs / f"{key}.log", "--ctx", "1024"))

    try:
        with ThreadPoolExecutor(max_workers=len(KEYS)) as pool:
            list(pool.map(start, KEYS))  # both at once; a failure is raised here
        yield servers
    finally:
        for server in servers:
            stop_server(server)


@pytest.fixture(scope="module")
def targets(replicas: list[RunningServer]) -> list[Target]:
    """The gateway's targets; a test may remove one (the gateway re-reads them)."""
    return [
        Target(key=key, model_id=MODEL_ID, base_url=s.url, deployment=key)
        for key, s in zip(KEYS, replicas, strict=True)
    ]


def ready_replicas(gateway: GatewayServer) -> int:
    """How many replicas of the model the gateway routes to now."""
    data = httpx.get(f"{gateway.url}/v1/models", timeout=5).json()["data"]
    return int(data[0]["ready_replicas"]) if data else 0


@pytest.fixture(scope="module")
def gateway(targets: list[Target]) -> Iterator[GatewayServer]:
    """A loopback gateway over both replicas."""
    server = open_gateway(lambda: list(targets), GatewayConfig(port=0, interval=0.2),
                          host="127.0.0.1", token=None, loopback=True)  # fmt: skip
    assert server is not None
    server.start()
    try:
        wait_for(lambda: ready_replicas(server) == 2, timeout=30, interval=0.2,
                 what="the gateway to see both replicas")  # fmt: skip
        yield server
    finally:
        server.stop()


def create(client: openai.OpenAI, **kwargs: object) -> tuple[str, str, int]:
    """(response id, the replica that answered, input tokens) of one `responses.create`."""
    raw = client.responses.with_raw_response.create(
        model=MODEL_ID, temperature=0, max_output_tokens=8, **kwargs
    )
    r = raw.parse()
    assert r.usage is not None
    return r.id, raw.headers["x-anvyl-deployment"], r.usage.input_tokens


def test_continuations_reach_the_replica_that_stores_them(gateway: GatewayServer) -> None:
    """Two conversations, one per replica; each continued several times, streamed or not."""
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="none", max_retries=0)
    heads = [create(client, input=f"Say {word}.") for word in ("one", "two")]
    assert {where for _, where, _ in heads} == set(KEYS)  # least outstanding: in turn
    for head_id, where, tokens in heads:
        last = head_id
        for turn in range(3):
            last, answered_by, grown = create(
                client, input=f"And {turn}?", previous_response_id=last
            )
            assert answered_by == where
            assert grown > tokens  # the stored conversation came first
            tokens = grown
        events = client.responses.create(model=MODEL_ID, input="Last?", temperature=0,
                                         max_output_tokens=8, previous_response_id=last,
                                         stream=True)  # fmt: skip
        ends = ("response.completed", "response.incomplete")  # 8 tokens may cut it short
        final = next(e.response for e in events if e.type in ends)
        assert final.usage is not None and final.usage.input_tokens > tokens
        assert final.previous_response_id == last
        # Stored by the replica that streamed it: the next turn and a retrieve find it there.
        assert create(client, input="Again?", previous_response_id=final.id)[1] == where
        assert client.responses.retrieve(final.id).id == final.id


def test_a_response_whose_replica_is_gone_is_refused(
    gateway: GatewayServer, targets: list[Target]
) -> None:
    """The replica is no longer routed to: a 400 naming the field, not a fresh start."""
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="none", max_retries=0)
    first = [create(client, input="Hello.") for _ in KEYS]
    gone_id = next(rid for rid, where, _ in first if where == KEYS[1])
    removed = targets.pop()
    try:
        wait_for(lambda: ready_replicas(gateway) == 1, timeout=30, interval=0.2,
                 what="the gateway to drop the replica")  # fmt: skip
        with pytest.raises(openai.BadRequestError) as err:
            create(client, input="And?", previous_response_id=gone_id)
        assert err.value.body["param"] == "previous_response_id"  # type: ignore[index]
        assert "no longer running" in err.value.message
        kept_id = next(rid for rid, where, _ in first if where == KEYS[0])
        assert create(client, input="And?", previous_response_id=kept_id)[1] == KEYS[0]
    finally:
        targets.append(removed)
        wait_for(lambda: ready_replicas(gateway) == 2, timeout=30, interval=0.2,
                 what="the gateway to see both replicas again")  # fmt: skip
