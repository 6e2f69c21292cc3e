"""`anvyl serve --allow-origin`: pages at the allowed origins get CORS answers from the gateway
and its Ollama port; other sites are still refused; a malformed origin stops `serve`."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx
from fixtures_control_plane import ANVYL, start_serve
from helpers import free_port

ALLOWED = "https://app.example"
SECOND = "http://tools.example:8000"


def test_allowed_origins_get_cors_from_a_real_serve(tmp_path: Path) -> None:
    gateway_port, ollama_port = free_port(), free_port()
    served = start_serve(
        tmp_path / "home",
        args=["--dashboard-port", "0", "--gateway-port", str(gateway_port),
              "--ollama-port", str(ollama_port), "--allow-origin", ALLOWED,
              "--allow-origin", SECOND],
    )  # fmt: skip
    try:
        for base in (f"http://127.0.0.1:{gateway_port}", f"http://127.0.0.1:{ollama_port}"):
            pre = httpx.options(f"{base}/v1/chat/completions", headers={
                "Origin": ALLOWED, "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type, x-api-key"})  # fmt: skip
            assert pre.status_code == 204
            assert pre.headers["access-control-allow-origin"] == ALLOWED
            assert pre.headers["access-control-allow-headers"] == "content-type, x-api-key"
            tags = httpx.get(f"{base}/api/tags", headers={"Origin": ALLOWED})
            assert tags.status_code == 200
            assert tags.headers["access-control-allow-origin"] == ALLOWED
            models = httpx.get(f"{base}/v1/models", headers={"Origin": SECOND})
            assert models.headers["access-control-allow-origin"] == SECOND
            other = httpx.get(f"{base}/api/tags", headers={"Origin": "https://evil.example"})
            assert other.status_code == 403 and "--allow-origin" in other.json()["error"]
            assert "access-control-allow-origin" not in other.headers
    finally:
        served.stop()


def test_a_malformed_origin_stops_serve_naming_the_form(tmp_path: Path) -> None:
    bad = subprocess.run(
        [ANVYL, "serve", "--host", "127.0.0.1", "--port", str(free_port()),
         "--dashboard-port", "0", "--gateway-port", "0", "--allow-origin", "app.example"],
        env={**os.environ, "ANVYL_HOME": str(tmp_path / "home")},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode != 0 and "scheme://host" in bad.stderr
