"""The dashboard in headless Chromium against a real `anvyl serve` and a real model container.

The tests run in order and share one model: started from the form, measured on the models
page, chatted with in the playground, and stopped from its detail page. Each page is saved
as a screenshot (light, plus dark and narrow for the models page).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
from dashboard_harness import Dashboard, model_containers, serve_dashboard, shut_down
from helpers import free_port, wait_for
from models_harness import MODEL_ID

DEPLOYMENT = "dash-model"
MODEL_KEY = "dash-model-key"  # typed into the form: the playground must work through it
AUTH = {"Authorization": f"Bearer {MODEL_KEY}"}
START_TIMEOUT_MS = 240_000
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "dashboard-models.png"


@pytest.fixture(scope="module")
def model_port() -> int:
    """The host port the form publishes the model on."""
    return free_port()


def fill_start_form(
    page: Any, *, port: int, memory: str, name: str = DEPLOYMENT, api_key: str = ""
) -> None:
    """Fill the start form the way a user would (the model list comes from the catalog)."""
    page.wait_for_selector(f"#model_id option[value='{MODEL_ID}']", state="attached")
    page.select_option("#model_id", MODEL_ID)
    page.fill("#name", name)
    page.fill("#port", str(port))
    page.fill("#memory", memory)
    page.fill("#api_key", api_key)


def busy_samples(dashboard: Dashboard) -> int:
    """How many samples of the tokens/s chart are above zero (0 until a request was counted)."""
    with dashboard.http() as http:
        (d,) = http.get("/api/models").json()["deployments"]
    if not any(x > 0 for x in d["series"]["requests_per_minute"]):
        return 0
    return sum(1 for x in d["series"]["tokens_per_second"] if x > 0)


def tokens_shown(page: Any) -> float:
    """The tokens/s figure the models page shows now."""
    text = page.inner_text(f"[data-deployment='{DEPLOYMENT}'] [data-testid='tps']")
    return float(text.replace(",", "") or 0)


def test_bad_memory_shows_the_error_inline_and_creates_nothing(
    dashboard: Dashboard,
    page: Any,
    model_port: int,
    docker_client: docker.DockerClient,
    run_labels: dict[str, str],
    screenshots: Path,
) -> None:
    page.goto(f"{dashboard.url}/start")
    fill_start_form(page, port=model_port, memory="lots")
    page.click("#submit")
    error = page.locator("#form-error")
    error.wait_for(state="visible")
    assert "invalid memory limit 'lots'" in error.inner_text()
    assert page.get_attribute("#memory", "aria-invalid") == "true"
    page.screenshot(path=screenshots / "start-error.png", full_page=True)

    page.fill("#memory", "10m")  # well formed, but below what the model needs
    page.click("#submit")
    page.wait_for_function(
        "() => document.querySelector('#form-error').textContent.includes('less than')"
    )
    with dashboard.http() as http:
        assert http.get("/api/models").json()["deployments"] == []
    assert model_containers(docker_client, dashboard, run_labels) == []
    assert page.locator("#progress-panel").is_hidden()


def test_starting_from_the_form_brings_the_model_to_ready(
    dashboard: Dashboard,
    page: Any,
    model_port: int,
    docker_client: docker.DockerClient,
    run_labels: dict[str, str],
    screenshots: Path,
) -> None:
    page.goto(f"{dashboard.url}/start")
    fill_start_form(page, port=model_port, memory="2g", api_key=MODEL_KEY)
    page.screenshot(path=screenshots / "start.png", full_page=True)
    page.click("#submit")
    page.locator("#progress-panel").wait_for(state="visible")
    page.locator("#ready-link").wait_for(state="visible", timeout=START_TIMEOUT_MS)
    progress = page.inner_text("#progress")
    for phase in ("resolving", "creating", "loading", "ready"):
        assert phase in progress
    assert page.locator("#form-error").is_hidden()
    page.screenshot(path=screenshots / "start-ready.png", full_page=True)

    (container,) = model_containers(docker_client, dashboard, run_labels)
    assert container.name == DEPLOYMENT
    assert container.status == "running"
    assert httpx.get(f"http://127.0.0.1:{model_port}/health", timeout=5).status_code == 200
    api = f"http://127.0.0.1:{model_port}/v1/models"
    assert httpx.get(api, timeout=5).status_code == 401  # the key typed into the form holds
    assert httpx.get(api, headers=AUTH, timeout=5).status_code == 200
    page.click("#ready-link")
    page.wait_for_url(f"**/models/{DEPLOYMENT}")


def test_models_page_shows_a_live_tokens_per_second_figure_after_a_request(
    dashboard: Dashboard, browser: Any, page: Any, model_port: int, screenshots: Path
) -> None:
    page.goto(f"{dashboard.url}/models")
    card = page.locator(f"[data-deployment='{DEPLOYMENT}']")
    card.wait_for()
    page.wait_for_function(
        f"() => document.querySelector(\"[data-deployment='{DEPLOYMENT}'] .badge\")"
        "?.textContent === 'ready'"
    )
    assert MODEL_ID in card.inner_text()
    assert f"localhost:{model_port}" in card.inner_text()

    def ask() -> None:
        for prompt in ("Tell me a story about a lighthouse.", "List five fruits."):
            httpx.post(
                f"http://127.0.0.1:{model_port}/v1/chat/completions",
                json={
                    "model": MODEL_ID,
                    "messages": [{"role": "user", "content": prompt}],
                    "max_tokens": 60,
                },
                headers=AUTH,
                timeout=120,
            ).raise_for_status()

    requests = threading.Thread(target=ask)
    requests.start()
    try:
        page.wait_for_function(
            "sel => parseFloat(document.querySelector(sel)?.textContent) > 0",
            arg=f"[data-deployment='{DEPLOYMENT}'] [data-testid='tps']",
            polling=100,
            timeout=90_000,
        )
        page.screenshot(path=screenshots / "models.png", full_page=True)
        with contextlib.suppress(AssertionError):  # for the README: a chart with a curve
            wait_for(
                lambda: busy_samples(dashboard) >= 4 and tokens_shown(page) > 0,
                timeout=40,
                interval=0.2,
            )
        bottom = page.evaluate("document.getElementById('deployments').offsetTop")
        bottom += page.evaluate("document.getElementById('deployments').offsetHeight")
        page.screenshot(
            path=DOCS_SCREENSHOT, clip={"x": 0, "y": 0, "width": 1100, "height": bottom + 16}
        )
    finally:
        requests.join()
    chart = card.locator("svg[data-field='tps-chart']")
    assert "peak" in (chart.get_attribute("aria-label") or "")
    assert card.locator("svg[data-field='tps-chart'] path.line").count() == 1

    for scheme, width in (("dark", 1100), ("light", 390)):
        context = browser.new_context(viewport={"width": width, "height": 800}, color_scheme=scheme)
        other = context.new_page()
        other.goto(f"{dashboard.url}/models")
        other.locator(f"[data-deployment='{DEPLOYMENT}'] .badge").wait_for()
        name = "models-dark.png" if scheme == "dark" else "models-narrow.png"
        other.screenshot(path=screenshots / name, full_page=True)
        overflow = other.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"the page scrolls sideways at {width} px"
        context.close()


def test_hosts_page_lists_the_engine_and_its_model(
    dashboard: Dashboard, page: Any, screenshots: Path
) -> None:
    page.goto(f"{dashboard.url}/hosts")
    card = page.locator("[data-host]").first
    card.wait_for(timeout=30_000)
    text = card.inner_text()
    assert "reachable" in text
    assert "this machine" in text
    assert "CPU" in text and "Memory" in text and "Disk" in text
    card.get_by_role("link", name=DEPLOYMENT).wait_for()
    page.screenshot(path=screenshots / "hosts.png", full_page=True)

    page.keyboard.press("Tab")  # keyboard users land on the skip link first
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"


def test_playground_streams_an_answer_through_the_dashboard(
    dashboard: Dashboard, page: Any, model_port: int, screenshots: Path
) -> None:
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(f"{dashboard.url}/playground?model={DEPLOYMENT}")
    page.wait_for_selector(f"#deployment option[value='{DEPLOYMENT}']", state="attached")
    assert page.input_value("#deployment") == DEPLOYMENT
    page.evaluate(
        """() => {
            window.updates = 0;
            new MutationObserver(() => { window.updates += 1; }).observe(
                document.getElementById('conversation'),
                {subtree: true, childList: true, characterData: true});
        }"""
    )
    page.fill("#max_tokens", "96")
    # An answer of dozens of tokens: a one-line answer can land in a handful of DOM updates even
    # when streamed, because the browser coalesces events that arrive within one frame.
    page.fill("#prompt", "Name ten European capitals, one per line.")
    page.keyboard.press("Control+Enter")
    page.locator(".msg.assistant.streaming").wait_for()
    page.wait_for_selector(".msg.assistant[data-done='true']", timeout=120_000)
    answer = page.inner_text(".msg.assistant .text")
    assert answer.strip()
    assert page.evaluate("window.updates") > 5, "the answer arrived in one piece, not streamed"
    assert page.locator("#chat-error").is_hidden()
    page.screenshot(path=screenshots / "playground.png", full_page=True)
    assert not [u for u in requested if f":{model_port}" in u]
    assert any(u.endswith("/api/chat") for u in requested)


def test_stopping_from_the_detail_page_removes_the_container(
    dashboard: Dashboard,
    page: Any,
    docker_client: docker.DockerClient,
    run_labels: dict[str, str],
    screenshots: Path,
) -> None:
    (container,) = model_containers(docker_client, dashboard, run_labels)
    page.goto(f"{dashboard.url}/models/{DEPLOYMENT}")
    page.wait_for_function("() => document.querySelector('#settings').textContent.length > 0")
    assert MODEL_ID in page.inner_text("#settings")
    assert "anvyl.managed" in page.inner_text("#labels")
    page.wait_for_function("() => document.querySelector('#health').textContent.includes('ready')")
    page.wait_for_timeout(500)  # the log stream is connected once the page has loaded
    container.exec_run(["sh", "-c", "echo dashboard-log-line > /proc/1/fd/1"])
    page.wait_for_function(
        "() => document.querySelector('#log').textContent.includes('dashboard-log-line')"
    )
    page.screenshot(path=screenshots / "detail.png", full_page=True)

    page.focus("#stop")  # by keyboard: Enter opens the confirmation, Escape cancels it
    page.keyboard.press("Enter")
    dialog = page.locator("#confirm")
    dialog.wait_for(state="visible")
    page.screenshot(path=screenshots / "detail-confirm.png")
    page.keyboard.press("Escape")
    dialog.wait_for(state="hidden")
    container.reload()
    assert container.status == "running"

    page.click("#stop")
    page.click("#confirm-stop")
    page.locator("#done").wait_for(state="visible", timeout=60_000)
    assert "container was removed" in page.inner_text("#done")
    page.screenshot(path=screenshots / "detail-stopped.png", full_page=True)
    wait_for(
        lambda: model_containers(docker_client, dashboard, run_labels) == [],
        timeout=30,
        what="the model container to be removed",
    )
    with dashboard.http() as http:
        assert http.get("/api/models").json()["deployments"] == []


@pytest.fixture(scope="module")
def token_dashboard(
    tmp_path_factory: pytest.TempPathFactory,
    docker_client: docker.DockerClient,
    run_labels: dict[str, str],
) -> Iterator[Dashboard]:
    """A second server whose dashboard listens off loopback, behind a token (no model)."""
    dash = serve_dashboard(
        tmp_path_factory.mktemp("anvyl-home-token"),
        run_labels,
        token="browser-secret",
        dashboard_host="0.0.0.0",
    )
    yield dash
    shut_down(dash, docker_client, run_labels)


def test_login_form_sets_a_session_cookie(
    token_dashboard: Dashboard, page: Any, screenshots: Path
) -> None:
    page.goto(f"{token_dashboard.url}/hosts")
    page.wait_for_url("**/login?next=%2Fhosts")
    page.fill("#token", "wrong")
    page.click("button[type=submit]")
    assert "not right" in page.inner_text(".alert")
    page.screenshot(path=screenshots / "login.png", full_page=True)
    page.fill("#token", "browser-secret")
    page.keyboard.press("Enter")
    page.wait_for_url("**/hosts")
    page.locator("[data-host]").first.wait_for(timeout=30_000)
    (cookie,) = page.context.cookies()
    assert cookie["httpOnly"] is True
    assert cookie["value"] != "browser-secret"
