"""The start page's pull: `POST /api/pulls` runs `anvyl model pull`'s service call on the server.

A real `anvyl serve` with its dashboard pulls from the stand-in Hub (tests/hub_server.py, the real
`huggingface_hub` client and Anvyl's downloader doing the work); no model is started, so no image.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from dashboard_harness import Dashboard, serve_dashboard
from hub_server import COMMIT, FakeHub, repo_from_model, running

REPO = "HuggingFaceTB/SmolLM2-135M-Instruct-mlx"
NAME = "pulled-smollm"


@pytest.fixture(scope="module")
def pulling(
    tmp_path_factory: pytest.TempPathFactory, bundled_model: Path, run_labels: dict[str, str]
) -> Iterator[tuple[Dashboard, FakeHub]]:
    """A dashboard whose server pulls from a stand-in Hub serving the bundled model as REPO."""
    root = tmp_path_factory.mktemp("dashboard-pull")
    fake = FakeHub({REPO: repo_from_model(bundled_model, root / "repo")})
    home = root / "home"
    (home / "models").mkdir(parents=True)
    with running(fake) as url:
        env = {"HF_ENDPOINT": url, "HF_HOME": str(root / "hf-home")}
        dash = serve_dashboard(home, run_labels, env=env)
        try:
            yield dash, fake
        finally:
            dash.served.stop()


def job_events(http: httpx.Client, path: str) -> list[tuple[str, Any]]:
    """The job's server-sent events, read until the stream ends (`ready` or `failed`)."""
    received: list[tuple[str, Any]] = []
    name = ""
    with http.stream("GET", path, timeout=300) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                received.append((name, json.loads(line[5:])))
    return received


def catalog_ids(http: httpx.Client) -> list[str]:
    return sorted(m["id"] for m in http.get("/api/catalog").json()["models"])


def test_pull_from_the_start_page(pulling: tuple[Dashboard, FakeHub]) -> None:
    dash, fake = pulling
    with dash.http() as http:
        assert NAME not in catalog_ids(http)
        page = http.get("/start").text
        assert 'id="pull-form"' in page and 'id="pull_repo"' in page
        accepted = http.post("/api/pulls", json={"repo": REPO, "name": NAME})
        assert accepted.status_code == 202, accepted.text
        job = accepted.json()
        received = job_events(http, job["events"])
        kinds = [k for k, _ in received]
        assert kinds[-1] == "ready" and set(kinds[:-1]) == {"progress"}, received
        fractions = [e["fraction"] for k, e in received if k == "progress"]
        assert fractions == sorted(fractions) and fractions[-1] == 1.0
        assert any(e["message"].startswith("downloading") for k, e in received if k == "progress")
        model = received[-1][1]
        assert model["id"] == NAME and model["origin"] == f"hf.co/{REPO}@{COMMIT[:12]}"
        done = http.get(f"/api/jobs/{job['job']}").json()
        assert done["kind"] == "pull" and done["done"] and done["model"]["id"] == NAME
        (listed,) = [m for m in http.get("/api/catalog").json()["models"] if m["id"] == NAME]
        assert listed["architecture"] == "llama" and listed["origin"] == model["origin"]
    assert (dash.served.home / "models" / NAME / "config.json").is_file()
    assert any(r.startswith("GET") and "/resolve/" in r for r in fake.requests)


def test_pull_refusals(pulling: tuple[Dashboard, FakeHub]) -> None:
    dash, _ = pulling
    models = dash.served.home / "models"
    with dash.http() as http:
        before, on_disk = catalog_ids(http), sorted(p.name for p in models.iterdir())
        unknown = http.post("/api/pulls", json={"repo": "nobody/nothing"})
        assert unknown.status_code == 404, unknown.text
        error = unknown.json()["error"]
        assert "no model repository nobody/nothing" in error["message"]
        assert "\n" not in error["message"] and error["code"] == "NOT_FOUND"
        bad_name = http.post("/api/pulls", json={"repo": REPO, "name": "No Such/Name"})
        assert bad_name.status_code == 400, bad_name.text
        assert http.post("/api/pulls", json={"repository": REPO}).status_code == 400
        foreign = http.post(
            "/api/pulls", json={"repo": REPO}, headers={"Origin": "http://evil.example"}
        )
        assert foreign.status_code == 403, foreign.text
        assert catalog_ids(http) == before
    assert sorted(p.name for p in models.iterdir()) == on_disk


def test_pull_form_shows_progress_then_the_model_or_the_error(
    pulling: tuple[Dashboard, FakeHub], page: Any, screenshots: Path
) -> None:
    from playwright.sync_api import expect

    dash, _ = pulling
    page.goto(f"{dash.url}/start")
    page.fill("#pull_repo", REPO)
    page.fill("#pull_name", "browser-smollm")
    page.click("#pull-submit")
    done = page.locator("#pull-done")
    done.wait_for()
    assert "Pulled browser-smollm" in done.inner_text()
    expect(page.locator("#model_id")).to_have_value("browser-smollm")  # ready to start
    page.screenshot(path=str(screenshots / "dashboard-pull.png"), full_page=True)
    page.fill("#pull_repo", "nobody/nothing")
    page.fill("#pull_name", "")
    page.click("#pull-submit")
    error = page.locator("#pull-error")
    error.wait_for()
    assert "no model repository nobody/nothing" in error.inner_text()
    assert page.locator("#pull-done").count() == 0 and page.locator("#pull-submit").is_enabled()
