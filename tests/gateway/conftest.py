"""Fixtures of the gateway tests (helpers in gateway_harness.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from gateway_harness import GatewayServed, serve_gateway, stop_all
from models_harness import make_home


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory,
    bundled_model: Path,
    modelserver_image: str,
    docker_client: object,
    run_labels: dict[str, str],
) -> Iterator[GatewayServed]:
    """One `anvyl serve` with its gateway for the module; its deployments stopped after."""
    home = make_home(tmp_path_factory.mktemp("anvyl-home"), bundled_model)
    served = serve_gateway(home, run_labels)
    try:
        yield served
    finally:
        try:
            stop_all(served.served)
        finally:
            served.served.stop()
