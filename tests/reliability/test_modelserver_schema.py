"""Schemathesis over the model server's OpenAPI schema: no 5xx, no crash.

The server publishes no `/openapi.json` (its docs routes are off), so the schema is FastAPI's own
for the server's routers, with the request bodies the handlers validate (they read raw JSON)
attached from `modelserver/protocol.py`. Positive and negative cases go to a real model server
with the bundled model and an 8-token cap, so every generation is short.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from models_harness import MODEL_ID
from modelserver_harness import RunningServer, start_server
from schemathesis import GenerationMode

from anvyl.modelserver.lmstudio.routes import router as lmstudio_router
from anvyl.modelserver.protocol import ChatCompletionRequest, CompletionRequest
from anvyl.modelserver.routes import api_router, health_router

pytestmark = pytest.mark.model

EXAMPLES = 40
BODIES = {
    "/v1/chat/completions": ChatCompletionRequest,
    "/api/v0/chat/completions": ChatCompletionRequest,
    "/v1/completions": CompletionRequest,
    "/api/v0/completions": CompletionRequest,
}


def openapi_schema() -> dict[str, Any]:
    """The model server's routes as OpenAPI, with the JSON bodies its handlers accept."""
    app = FastAPI(title="Anvyl model server", version="1")
    for router in (health_router, api_router, lmstudio_router):
        app.include_router(router)
    schema = app.openapi()
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for path, model in BODIES.items():
        body = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(body.pop("$defs", {}))
        # The served model, so positive cases reach generation (negative ones still vary it).
        body["properties"]["model"] = {"type": "string", "enum": [MODEL_ID]}
        components[model.__name__] = body
        schema["paths"][path]["post"]["requestBody"] = {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
            },
        }
    for path in ("/v1/models/{model_id}", "/api/v0/models/{model_id}"):
        for parameter in schema["paths"][path]["get"]["parameters"]:
            parameter["schema"] = {"type": "string", "enum": [MODEL_ID]}
    return schema


@pytest.fixture(scope="module")
def model_server(
    bundled_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """One real model server for the module: 8 tokens at most per request."""
    log = tmp_path_factory.mktemp("schemathesis") / "server.log"
    server = start_server(
        bundled_model,
        log,
        "--model-id",
        MODEL_ID,
        "--max-tokens-limit",
        "8",
        "--ctx",
        "512",
        "--max-batch",
        "4",
    )
    yield server
    server.stop()


SCHEMA = schemathesis.openapi.from_dict(openapi_schema())
OPERATIONS = {op.ok().label: op.ok() for op in SCHEMA.get_all_operations()}


CASES = [(label, GenerationMode.POSITIVE) for label in sorted(OPERATIONS)] + [
    # Operations without inputs have no invalid form; bodies do.
    (label, GenerationMode.NEGATIVE)
    for label in sorted(OPERATIONS)
    if label.startswith("POST")
]
STATUSES: dict[str, list[int]] = {}


@pytest.mark.parametrize(("label", "mode"), CASES)
def test_no_server_errors(label: str, mode: GenerationMode, model_server: RunningServer) -> None:
    """Every generated case of the operation is answered below 500; the server lives on."""
    operation = OPERATIONS[label]

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case: schemathesis.Case) -> None:
        response = case.call(base_url=model_server.url, timeout=120)
        STATUSES.setdefault(f"{label} {mode.value}", []).append(response.status_code)
        assert response.status_code < 500, (
            f"{case.method} {case.path} {case.body!r:.300} -> {response.status_code}: "
            f"{response.text[:500]}"
        )
        assert model_server.process.poll() is None, "the model server died"

    check()


def test_still_serving(model_server: RunningServer) -> None:
    """After all of it the server is healthy, still generates, and stops cleanly."""
    generated = [
        code for key, codes in STATUSES.items() if key.startswith("POST") for code in codes
    ]
    if generated:  # the parametrized cases ran in this session: some reached generation
        assert 200 in generated, STATUSES
    body = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
    reply = httpx.post(f"{model_server.url}/v1/chat/completions", json=body, timeout=120)
    assert reply.status_code == 200 and reply.json()["usage"]["completion_tokens"] >= 1
    assert model_server.health() == 200
    assert model_server.stop() == 0
