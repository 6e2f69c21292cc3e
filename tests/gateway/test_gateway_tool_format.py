"""The gateway's `/v1/models` says which tool-call format each running model uses.

A real `anvyl serve --runtime process` with its gateway (no image needed) and the bundled model,
whose chat template has no tool syntax of its own: `generic`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from gateway_harness import GatewayServed, serve_gateway, stop_all
from helpers import wait_for
from models_harness import MODEL_ID, make_home, ok, start_model


@pytest.fixture(scope="module")
def process_gateway(
    tmp_path_factory: pytest.TempPathFactory, bundled_model: Path, run_labels: dict[str, str]
) -> Iterator[GatewayServed]:
    """`anvyl serve --runtime process` with its gateway; its deployments stopped after."""
    home = make_home(tmp_path_factory.mktemp("anvyl-tool-format"), bundled_model)
    served = serve_gateway(home, run_labels, "--runtime", "process")
    try:
        yield served
    finally:
        try:
            stop_all(served.served)
        finally:
            served.served.stop()


def test_v1_models_names_the_tool_format(process_gateway: GatewayServed) -> None:
    ok(start_model(process_gateway.served, MODEL_ID, "-n", "tools"))

    def listed() -> list[dict]:
        return httpx.get(f"{process_gateway.url}/v1/models", timeout=10).json()["data"]

    wait_for(
        lambda: any(m["id"] == MODEL_ID and m["ready_replicas"] == 1 for m in listed()),
        timeout=60,
        what="the gateway to route to the deployment",
    )
    (entry,) = [m for m in listed() if m["id"] == MODEL_ID]
    assert entry["tool_format"] == "generic"
    one = httpx.get(f"{process_gateway.url}/v1/models/{MODEL_ID}", timeout=10).json()
    assert one["tool_format"] == "generic"
    lmstudio = httpx.get(f"{process_gateway.url}/api/v0/models", timeout=10).json()["data"]
    assert [m["tool_format"] for m in lmstudio if m["id"] == MODEL_ID] == ["generic"]
