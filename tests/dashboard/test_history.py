"""The charts' ring buffers and health history (pure: views in, samples out)."""

from __future__ import annotations

from dataclasses import replace

from anvyl.dashboard.history import MAX_HEALTH_EVENTS, History
from anvyl.services.models import DeploymentView
from anvyl.store.deployments import DeploymentRecord


def view(dep_id: str = "d-1", *, state: str = "ready", requests: int = 0, tps: float = 0.0,
         reason: str = "") -> DeploymentView:  # fmt: skip
    """A deployment as `Models.list()` reports it."""
    record = DeploymentRecord(
        id=dep_id, name=dep_id, model_id="m", host_id="h", port=1, bind="127.0.0.1", image="i"
    )
    return DeploymentView(
        record=record,
        state=state,
        state_reason=reason,
        url="http://localhost:1",
        requests_total=requests,
        tokens_per_second=tps,
    )


def test_samples_are_a_ring_buffer() -> None:
    history = History(max_samples=3)
    for t in range(5):
        history.record([view(tps=float(t))], now=float(t))
    assert [s.tokens_per_second for s in history.samples("d-1")] == [2.0, 3.0, 4.0]


def test_requests_per_minute_from_the_counter() -> None:
    history = History(max_samples=10)
    history.record([view(requests=10)], now=0.0)
    history.record([view(requests=12)], now=2.0)
    history.record([view(requests=12)], now=4.0)
    history.record([view(requests=3)], now=6.0)  # the server restarted: its counter too
    rates = [s.requests_per_minute for s in history.samples("d-1")]
    assert rates == [0.0, 60.0, 0.0, 0.0]


def test_health_keeps_changes_only() -> None:
    history = History(max_samples=10)
    states = ["starting", "starting", "ready", "ready", "unhealthy", "ready"]
    for t, state in enumerate(states):
        history.record([view(state=state, reason="" if state == "ready" else "x")], now=t)
    assert [(e.t, e.state) for e in history.health("d-1")] == [
        (0, "starting"),
        (2, "ready"),
        (4, "unhealthy"),
        (5, "ready"),
    ]


def test_health_history_is_bounded() -> None:
    history = History(max_samples=2)
    for t in range(MAX_HEALTH_EVENTS + 10):
        history.record([view(state="ready" if t % 2 else "unhealthy")], now=t)
    assert len(history.health("d-1")) == MAX_HEALTH_EVENTS


def test_deployments_that_disappear_are_forgotten() -> None:
    history = History(max_samples=5)
    history.record([view("d-1"), view("d-2")], now=0)
    history.record([replace(view("d-2"), tokens_per_second=5.0)], now=1)
    assert history.samples("d-1") == []
    assert history.health("d-1") == []
    assert [s.tokens_per_second for s in history.samples("d-2")] == [0.0, 5.0]
