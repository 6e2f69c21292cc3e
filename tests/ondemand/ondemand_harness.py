"""Helpers of the on-demand tests: a real `anvyl serve --runtime process` with its gateway, on a
home that has the bundled model under two ids (so swapping models needs no download)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fixtures_control_plane import Served
from helpers import free_port
from models_harness import MODEL_ID, deployments, make_home, serve_models

OTHER_ID = "smollm2-second-copy"
BROKEN_ID = "smollm2-broken"  # its config names an architecture no model server has
CHAT_TIMEOUT_S = 240.0  # a first request waits for the model to load on a loaded machine


def two_model_home(root: Path, bundled_model: Path) -> Path:
    """A home with the bundled model as MODEL_ID and again as OTHER_ID (a folder of its own
    whose files link the bundled model's: the catalog lists a folder once)."""
    home = make_home(root, bundled_model)
    other = home / "models" / OTHER_ID
    if not other.exists():
        other.mkdir()
        for item in bundled_model.resolve().iterdir():
            (other / item.name).symlink_to(item.resolve())
    return home


@dataclass
class DemandServed:
    """`anvyl serve` and the URL of its gateway."""

    served: Served
    url: str


def add_broken_model(home: Path, bundled_model: Path) -> None:
    """BROKEN_ID: the bundled model's files, but a `model_type` that fails to load."""
    broken = home / "models" / BROKEN_ID
    broken.mkdir()
    for item in bundled_model.resolve().iterdir():
        if item.name != "config.json":
            (broken / item.name).symlink_to(item.resolve())
    config = json.loads((bundled_model / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config, "model_type": "no-such-arch"}))


def serve_on_demand(home: Path, run_labels: dict[str, str], *args: str, **env: str) -> DemandServed:
    """`anvyl serve --runtime process` with its gateway on a free port (no Ollama port)."""
    port = free_port()
    served = serve_models(
        home,
        run_labels,
        args=("--runtime", "process", "--gateway-port", str(port), "--ollama-port", "0", *args),
        **env,
    )
    return DemandServed(served, f"http://127.0.0.1:{port}")


def chat(url: str, model: str = MODEL_ID, **extra: Any) -> httpx.Response:
    """One short chat completion through the gateway at `url`."""
    body = {"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
    return httpx.post(f"{url}/v1/chat/completions", json={**body, **extra}, timeout=CHAT_TIMEOUT_S)


def of_model(served: DemandServed, model: str) -> list[dict[str, Any]]:
    """The deployments (`model ps -o json`) serving `model`."""
    return [d for d in deployments(served.served) if d["model_id"] == model]
