"""`anvyl serve --ollama-port`: the gateway again on the port Ollama's clients look at."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx
from fixtures_control_plane import ANVYL, start_serve
from helpers import free_port


def test_ollama_port_serves_the_gateway(tmp_path: Path) -> None:
    """Ollama's probe, its model list and the OpenAI routes answer there; a taken port given
    explicitly is an error naming the option."""
    gateway_port, ollama_port = free_port(), free_port()
    served = start_serve(tmp_path / "home", args=[
        "--dashboard-port", "0", "--gateway-port", str(gateway_port),
        "--ollama-port", str(ollama_port)])  # fmt: skip
    try:
        base = f"http://127.0.0.1:{ollama_port}"
        assert httpx.get(base).text == "Ollama is running"
        assert httpx.get(f"{base}/api/tags").json() == {"models": []}
        assert httpx.get(f"{base}/v1/models").json()["data"] == []
        taken = subprocess.run(
            [ANVYL, "serve", "--host", "127.0.0.1", "--port", str(free_port()),
             "--dashboard-port", "0", "--gateway-port", str(free_port()),
             "--ollama-port", str(ollama_port)],
            env={**os.environ, "ANVYL_HOME": str(tmp_path / "home2")},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert taken.returncode != 0 and "--ollama-port" in taken.stderr
    finally:
        served.stop()
