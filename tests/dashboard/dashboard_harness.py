"""Helpers of the dashboard tests: a real `anvyl serve` with its dashboard, and cleanup.

Every model container a test server creates carries the run's `anvyl.test=<run id>` label
(through `ANVYL_LABELS`) and its server's `anvyl.controller` id, so a module removes exactly its
own containers, and the session fixture whatever a crash leaves behind.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import httpx
from fixtures_control_plane import Served, start_serve
from helpers import free_port, wait_for
from models_harness import SERVICE_LABEL, labels_env

__all__ = [
    "CHROMIUM",
    "Dashboard",
    "model_containers",
    "serve_dashboard",
    "shut_down",
]

CHROMIUM = "/usr/bin/chromium"
# Headless Chromium as root on a machine without a network (see the machine notes).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(
    os.environ.get("ANVYL_SCREENSHOTS")
    or Path(__file__).resolve().parents[2] / "bench" / "results" / "screenshots"
)


@dataclass
class Dashboard:
    """A running `anvyl serve` and the address of its dashboard."""

    served: Served
    url: str
    token: str | None = None

    def http(self, **kwargs: Any) -> httpx.Client:
        """An HTTP client for the dashboard (with the bearer token when there is one)."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kwargs)

    def controller_id(self) -> str:
        """The id this server's containers are labelled with."""
        return (self.served.home / "controller-id").read_text().strip()


def serve_dashboard(
    home: Path,
    run_labels: dict[str, str],
    *,
    token: str | None = None,
    dashboard_host: str = "127.0.0.1",
    env: dict[str, str] | None = None,
) -> Dashboard:
    """`anvyl serve` with its dashboard on a free port; waits until the dashboard answers."""
    port = free_port()
    env = {**labels_env(run_labels), **(env or {})}
    if token:
        env["ANVYL_TOKEN"] = token
    args = ["--dashboard-port", str(port), "--dashboard-host", dashboard_host]
    served = start_serve(home, args=args, env=env)
    dash = Dashboard(served=served, url=f"http://127.0.0.1:{port}", token=token)
    try:
        wait_for(
            lambda: httpx.get(f"{dash.url}/static/style.css", timeout=2).status_code == 200,
            timeout=20,
            what="the dashboard to answer",
        )
    except BaseException:
        served.stop()
        raise
    return dash


def model_containers(
    client: docker.DockerClient, dash: Dashboard, run_labels: dict[str, str]
) -> list[Any]:
    """This server's model containers (running or not)."""
    selectors = [f"{k}={v}" for k, v in run_labels.items()]
    selectors += [SERVICE_LABEL, f"anvyl.controller={dash.controller_id()}"]
    return client.containers.list(all=True, filters={"label": selectors})


def shut_down(dash: Dashboard, client: docker.DockerClient, run_labels: dict[str, str]) -> None:
    """Stop every deployment through the API, stop the server, remove what is left."""
    with contextlib.suppress(Exception), dash.http() as http:
        for d in http.get("/api/models").json()["deployments"]:
            http.delete(f"/api/models/{d['id']}", timeout=60)
    dash.served.stop()
    if (dash.served.home / "controller-id").exists():
        for container in model_containers(client, dash, run_labels):
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True, v=True)
