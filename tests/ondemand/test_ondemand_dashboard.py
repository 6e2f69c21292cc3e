"""The dashboard and models on demand: a chat to a stopped model in the playground loads it, and
the models page says it was started on demand and when it unloads."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from helpers import free_port, wait_for
from models_harness import MODEL_ID, deployments, stop_all
from ondemand_harness import CHAT_TIMEOUT_S, serve_on_demand, two_model_home


def test_a_playground_chat_loads_a_stopped_model(
    tmp_path: Path, bundled_model: Path, run_labels: dict[str, str]
) -> None:
    home = two_model_home(tmp_path, bundled_model)
    port = free_port()
    served = serve_on_demand(home, run_labels, "--dashboard-port", str(port))
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(base), timeout=30, what="the dashboard to answer")
        catalog = httpx.get(f"{base}/api/catalog", timeout=30).json()
        assert MODEL_ID in [m["id"] for m in catalog["models"]]
        body = {"deployment": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}],
                "max_tokens": 8}  # fmt: skip
        with httpx.stream("POST", f"{base}/api/chat", json=body, timeout=CHAT_TIMEOUT_S) as r:
            assert r.status_code == 200, r.read()
            text = "".join(r.iter_text())
        assert "[DONE]" in text
        (deployment,) = deployments(served.served)
        assert deployment["on_demand"], deployment

        def sampled() -> dict | None:
            listed = httpx.get(f"{base}/api/models", timeout=30).json()["deployments"]
            return next((d for d in listed if d["model_id"] == MODEL_ID), None)

        shown = wait_for(sampled, timeout=60, what="the models page to list the deployment")
        assert shown["on_demand"] is True
        assert shown["keep_alive_seconds"] == 300  # the server's default keep-alive
        assert shown["unload_at"] > 0, json.dumps(shown)
    finally:
        try:
            stop_all(served.served)
        finally:
            served.served.stop()


def _answers(base: str) -> bool:
    try:
        return httpx.get(f"{base}/api/models", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False
