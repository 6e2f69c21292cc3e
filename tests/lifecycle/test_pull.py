"""`anvyl model pull` through a real `anvyl serve` from a stand-in Hub, then started and asked."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import docker
import httpx
from fixtures_control_plane import ANVYL, start_serve
from helpers import free_port, wait_for
from hub_server import COMMIT, FakeHub, repo_from_model, serve
from lifecycle_harness import assert_nothing_left
from models_harness import failed, ok, serve_models, start_model, stop_all

REPO = "HuggingFaceTB/SmolLM2-135M-Instruct-mlx"


def test_pulled_model_starts_and_answers(
    tmp_path: Path,
    bundled_model: Path,
    modelserver_image: str,
    docker_client: docker.DockerClient,
    run_labels: dict[str, str],
) -> None:
    fake = FakeHub({REPO: repo_from_model(bundled_model, tmp_path / "repo")})
    server, url = serve(fake)
    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    served = serve_models(home, run_labels, HF_ENDPOINT=url, HF_HOME=str(tmp_path / "hf"))
    try:
        pulled = ok(served.cli("model", "pull", REPO, timeout=300))
        model_id = "smollm2-135m-instruct-mlx"
        assert f"Pulled {model_id}" in pulled.stdout
        rows = json.loads(ok(served.cli("model", "list", "-o", "json")).stdout)["models"]
        (row,) = [r for r in rows if r["id"] == model_id]
        assert row["origin"] == f"hf.co/{REPO}@{COMMIT[:12]}"
        failed(served.cli("model", "pull", "nobody/nothing"), "no model repository nobody/nothing")
        port = free_port()
        ok(start_model(served, model_id, "--port", str(port)))
        body = {
            "model": model_id,
            "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "max_tokens": 24,
            "temperature": 0,
        }
        reply = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=120)
        assert reply.status_code == 200, reply.text
        assert "Paris" in reply.json()["choices"][0]["message"]["content"]
        stop_all(served)
        assert_nothing_left(served, docker_client, run_labels)
    finally:
        stop_all(served)
        served.stop()
        server.shutdown()
        server.server_close()


def test_ctrl_c_cancels_the_pull_on_the_server(tmp_path: Path, bundled_model: Path) -> None:
    repo = repo_from_model(bundled_model, tmp_path / "repo")
    fake = FakeHub({REPO: repo}, delay_per_chunk=0.05)  # ~1.3 MB/s: a pull of minutes
    server, url = serve(fake)
    served = start_serve(tmp_path / "home", env={"HF_ENDPOINT": url, "HF_HOME": str(tmp_path)})
    cli: subprocess.Popen[str] | None = None
    try:
        env = {**served.env, "ANVYL_ADDR": served.address}
        cli = subprocess.Popen(
            [ANVYL, "model", "pull", REPO], env=env, stderr=subprocess.PIPE, text=True
        )
        pulls = tmp_path / "home" / "models" / ".pulls"

        def part_size() -> int:
            return sum(p.stat().st_size for p in pulls.rglob("*.part")) if pulls.exists() else 0

        wait_for(lambda: part_size() > 0, timeout=60, what="the download to start")
        cli.send_signal(signal.SIGINT)
        _, err = cli.communicate(timeout=30)
        assert cli.returncode == 130 and "Pull cancelled; pull again to resume." in err, err
        size = part_size()
        time.sleep(1)  # the server's download must stay stopped: nothing grows
        assert part_size() == size > 0
        fake.delay_per_chunk = 0.0
        ok(served.cli("model", "pull", REPO, timeout=300))
        resumed = [r for r in fake.requests if r.startswith("GET") and "bytes=" in r]
        assert resumed, fake.requests
    finally:
        if cli is not None and cli.poll() is None:
            cli.kill()
            cli.wait()
        served.stop()
        server.shutdown()
        server.server_close()
