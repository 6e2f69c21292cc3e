"""LM Studio's SDK against a model container started by `anvyl model start` (real image)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import lmstudio as lms
import pytest
from fixtures_control_plane import Served, start_serve
from helpers import free_port

MODEL_ID = "smollm2-135m-instruct-mlx"
START_TIMEOUT_S = 180.0

pytestmark = [pytest.mark.docker, pytest.mark.model]


@pytest.fixture(scope="module")
def model_port(
    tmp_path_factory: pytest.TempPathFactory,
    bundled_model: Path,
    modelserver_image: str,
    run_labels: dict[str, str],
) -> Iterator[int]:
    """A started model container's API port; every deployment is stopped afterwards."""
    home = tmp_path_factory.mktemp("anvyl-home")
    (home / "models").mkdir()
    (home / "models" / bundled_model.name).symlink_to(bundled_model.resolve())
    labels = ",".join(f"{k}={v}" for k, v in run_labels.items())
    served = start_serve(home, env={"ANVYL_LABELS": labels})
    try:
        port = free_port()
        name = f"lmstudio-sdk-{port}"  # other runs on this engine use the default name
        started = served.cli(
            "model", "start", MODEL_ID, "--name", name, "--port", str(port), timeout=START_TIMEOUT_S
        )
        assert started.returncode == 0, started.stderr
        yield port
    finally:
        _stop_all(served)
        served.stop()


def _stop_all(served: Served) -> None:
    """Stop every deployment `served` knows."""
    listing = served.cli("model", "ps", "-o", "json")
    for d in json.loads(listing.stdout or "{}").get("deployments", []):
        served.cli("model", "stop", d["id"], "--timeout", "5", timeout=60)


def test_sdk_talks_to_a_started_model(model_port: int) -> None:
    """The README's three lines, then a stream and the listings, against the container."""
    with lms.Client(f"localhost:{model_port}") as client:
        model = client.llm.model(MODEL_ID)
        assert (
            "Paris"
            in model.respond("What is the capital of France?", config={"temperature": 0}).content
        )
        stream = model.respond_stream(
            "Count to twenty.", config={"temperature": 0, "maxTokens": 10}
        )
        assert len(list(stream)) >= 3
        assert stream.result().stats.stop_reason == "maxPredictedTokensReached"
        assert [m.identifier for m in client.llm.list_loaded()] == [MODEL_ID]
        assert [m.model_key for m in client.list_downloaded_models()] == [MODEL_ID]
