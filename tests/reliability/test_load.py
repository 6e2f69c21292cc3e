"""Load on one model container with a small queue: 64 streaming clients, then hang-ups in waves.

Every request either completes with a finish_reason and a usage that adds up, or is refused with
429 and Retry-After; nothing gets a 5xx, no stream is cut short, `/health` stays 200 throughout,
and the server's resident memory comes back near where it was. Clients that hang up mid-stream
have their generation cancelled, the queue drains after every wave, and the server keeps serving.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from fixtures_control_plane import Served
from helpers import free_port, wait_for
from models_harness import MODEL_ID, ok, start_model
from scenarios import disconnect_waves, metrics, streaming_load

pytestmark = [pytest.mark.slow, pytest.mark.docker, pytest.mark.model]

MAX_QUEUE = 4
CLIENTS = 64
MAX_TOKENS = 8
RSS_SLACK = 64 * 1024 * 1024


@pytest.fixture(scope="module")
def model_url(served: Served) -> Iterator[str]:
    """One model container with a small queue; its base URL."""
    port = free_port()
    ok(
        start_model(
            served, MODEL_ID, "--name", "loaded", "--port", str(port), "--max-queue", str(MAX_QUEUE)
        )
    )
    yield f"http://127.0.0.1:{port}"
    ok(served.cli("model", "stop", "loaded", "--timeout", "10", timeout=60))


def rss(url: str) -> float:
    """The model server's resident memory, from its own metrics."""
    return metrics(url)["process_resident_memory_bytes"]


def test_64_streaming_clients(model_url: str) -> None:
    # Warm up with the same shape of load, so the baseline includes the batch's buffers.
    asyncio.run(streaming_load(model_url, MODEL_ID, clients=16, max_tokens=MAX_TOKENS))
    baseline = rss(model_url)

    tally = asyncio.run(streaming_load(model_url, MODEL_ID, clients=CLIENTS, max_tokens=MAX_TOKENS))

    assert tally.server_errors == 0, tally
    assert tally.lost == 0, tally
    assert tally.health_failures == 0, tally
    assert tally.completed + tally.rejected_429 == CLIENTS, tally
    assert tally.completed >= 1 and tally.rejected_429 >= 1, tally  # the queue did fill
    wait_for(
        lambda: rss(model_url) <= baseline + RSS_SLACK,
        timeout=60,
        what=f"RSS back near its baseline of {baseline / 2**20:.0f} MiB",
    )


def test_disconnects_in_waves(model_url: str) -> None:
    tally = asyncio.run(disconnect_waves(model_url, MODEL_ID, waves=5, per_wave=20))
    assert tally.server_errors == 0, tally
    assert tally.lost == 0, tally
    assert tally.completed + tally.rejected_429 == 100, tally
    assert tally.completed >= 50, tally
    body = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
    reply = httpx.post(f"{model_url}/v1/chat/completions", json=body, timeout=120)
    assert reply.status_code == 200 and reply.json()["choices"][0]["finish_reason"]
