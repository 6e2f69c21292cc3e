"""Fixtures of the dashboard tests: one `anvyl serve` per module, headless Chromium.

Each module gets one server (its own ANVYL_HOME linking the bundled model) and at most one model
container; the fixture stops its deployments and removes its containers even when a test fails.
Screenshots go to `bench/results/screenshots/` (or `$ANVYL_SCREENSHOTS`). Helpers live in
dashboard_harness.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from dashboard_harness import (
    CHROMIUM,
    CHROMIUM_ARGS,
    SCREENSHOTS,
    Dashboard,
    serve_dashboard,
    shut_down,
)
from models_harness import make_home


@pytest.fixture(scope="module")
def dashboard(
    tmp_path_factory: pytest.TempPathFactory,
    bundled_model: Path,
    modelserver_image: str,
    docker_client: docker.DockerClient,
    run_labels: dict[str, str],
) -> Iterator[Dashboard]:
    """One `anvyl serve` with its dashboard for the module (the image is built first)."""
    home = make_home(tmp_path_factory.mktemp("anvyl-home"), bundled_model)
    dash = serve_dashboard(home, run_labels)
    yield dash
    shut_down(dash, docker_client, run_labels)


@pytest.fixture(scope="session")
def screenshots() -> Path:
    """Where screenshots are saved (printed once)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots: {SCREENSHOTS}")
    return SCREENSHOTS


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Debian Chromium driven by Playwright (no browser download needed)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Playwright is not installed: pip install playwright (the dev extra)")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium")
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page (light mode, a laptop-sized window); fails the test on a JavaScript error."""
    context = browser.new_context(viewport={"width": 1100, "height": 800}, color_scheme="light")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    def on_console(msg: Any) -> None:
        # Refused API calls (the tests make some on purpose) are logged as failed loads.
        if msg.type == "error" and not msg.text.startswith("Failed to load resource"):
            errors.append(msg.text)

    page.on("console", on_console)
    page.set_default_timeout(20_000)
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
