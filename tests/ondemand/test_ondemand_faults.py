"""Models on demand when things go wrong: no room in the budget, and `kill -9` of the control
plane in the middle of an on-demand start."""

from __future__ import annotations

import contextlib
import signal
import threading
from pathlib import Path

import httpx
import pytest
from helpers import wait_for
from models_harness import MODEL_ID, START_TIMEOUT_S, Servers, deployments, ok
from ondemand_harness import (
    BROKEN_ID,
    add_broken_model,
    chat,
    serve_on_demand,
    two_model_home,
)


def test_a_model_that_cannot_fit_gets_503_with_the_numbers(
    tmp_path: Path, bundled_model: Path, run_labels: dict[str, str]
) -> None:
    home = two_model_home(tmp_path, bundled_model)
    served = serve_on_demand(home, run_labels, "--max-memory", "20m")
    try:
        refused = chat(served.url)
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"]
        message = refused.json()["error"]["message"]
        for text in (MODEL_ID, "needs about", "budget", "--max-memory"):
            assert text in message, message
        assert deployments(served.served) == []
    finally:
        served.served.stop()


def test_a_failed_start_is_a_503_naming_why_and_a_client_that_leaves_cancels_its_start(
    tmp_path: Path, bundled_model: Path, run_labels: dict[str, str]
) -> None:
    home = two_model_home(tmp_path, bundled_model)
    add_broken_model(home, bundled_model)
    served = serve_on_demand(home, run_labels)
    try:
        failed = chat(served.url, BROKEN_ID)
        assert failed.status_code == 503, failed.text
        message = failed.json()["error"]["message"]
        assert f"could not start {BROKEN_ID}" in message and "no-such-arch" in message, message
        assert deployments(served.served) == []  # the failed start left nothing behind

        # A client that gives up while its model loads: nobody else waits, so the start is
        # cancelled and cleaned up.
        with pytest.raises(httpx.TimeoutException):
            httpx.post(
                f"{served.url}/v1/chat/completions",
                json={"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}]},
                timeout=0.5,
            )
        wait_for(
            lambda: (
                not list((home / "processes").glob("*/spec.json"))
                and not deployments(served.served)
            ),
            timeout=60,
            what="the abandoned start to be cancelled and cleaned up",
        )
    finally:
        served.served.stop()


def test_kill_serve_during_an_on_demand_start_leaves_no_orphan_or_duplicate(
    tmp_path: Path, bundled_model: Path, run_labels: dict[str, str]
) -> None:
    home = two_model_home(tmp_path, bundled_model)
    with Servers(run_labels) as servers:
        first = serve_on_demand(home, run_labels, ANVYL_TEST_PAUSE_AT="loading")
        servers.started.append(first.served)
        waiting = threading.Thread(target=_chat_quietly, args=(first.url,), daemon=True)
        waiting.start()
        wait_for(
            lambda: (home / "test-paused-loading").exists(),
            timeout=START_TIMEOUT_S,
            what="the on-demand start to pause while loading",
        )
        first.served.stop(signal.SIGKILL)
        waiting.join(timeout=30)

        second = serve_on_demand(home, run_labels)
        servers.started.append(second.served)
        # The server found the start it had made (adopted), not a second copy.
        (adopted,) = deployments(second.served)
        assert adopted["model_id"] == MODEL_ID and adopted["on_demand"], adopted
        answer = chat(second.url)
        assert answer.status_code == 200, answer.text
        (after,) = deployments(second.served)
        assert after["id"] == adopted["id"]
        ok(second.served.cli("model", "stop", after["id"], "--timeout", "5", timeout=60))
        assert deployments(second.served) == []
        assert not list((home / "processes").glob("*/spec.json"))


def _chat_quietly(url: str) -> None:
    with contextlib.suppress(httpx.HTTPError):  # the server is killed under it
        chat(url)
