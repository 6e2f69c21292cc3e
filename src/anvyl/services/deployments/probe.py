"""Probing a model server the same way for every runtime: `/health`, `/metrics`, tokens/s."""

from __future__ import annotations

import logging
import threading
import time

import httpx

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 1.0
REQUESTS_METRIC = "anvyl_requests_total"
API_PREFIXES = ("/v1/", "/api/", "lmstudio:")  # lmstudio: the SDK's websocket calls


_client: httpx.Client | None = None
_client_lock = threading.Lock()


def probe_client() -> httpx.Client:
    """The one HTTP client every probe of this process shares (thread-safe, pooled).

    Building an `httpx.Client` loads the CA bundle (~20 ms of CPU here); one per probe made
    `model ps` at 4 models spend most of its time on it.
    """
    global _client
    with _client_lock:
        if _client is None:
            _client = httpx.Client(timeout=PROBE_TIMEOUT_S)
        return _client


def probe(base_url: str, key: str) -> tuple[int, dict[str, float]]:
    """GET /health and /metrics of a running server; (0, {}) when it does not answer."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    http = probe_client()
    try:
        health = http.get(f"{base_url}/health").status_code
        metrics: dict[str, float] = {}
        if health == 200:
            response = http.get(f"{base_url}/metrics", headers=headers)
            if response.status_code == 200:
                metrics = parse_metrics(response.text)
        return health, metrics
    except httpx.HTTPError:
        return 0, {}


def healthy(base_url: str) -> bool:
    """Whether `/health` answers 200 now."""
    try:
        return probe_client().get(f"{base_url}/health").status_code == 200
    except httpx.HTTPError:
        return False


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text to {sample name: value summed over its labels}.

    `anvyl_requests_total` counts only the API (`/v1/*`, `/api/*`, LM Studio calls), not health
    checks and metrics scrapes (Anvyl's own probes would otherwise dominate it).
    """
    from prometheus_client.parser import text_string_to_metric_families

    values: dict[str, float] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == REQUESTS_METRIC and not sample.labels.get(
                    "endpoint", ""
                ).startswith(API_PREFIXES):
                    continue
                values[sample.name] = values.get(sample.name, 0.0) + sample.value
    except ValueError:  # a malformed exposition: keep what was read before it
        log.debug("malformed /metrics text", exc_info=True)
    values.setdefault(REQUESTS_METRIC, 0.0)
    return values


class ThroughputTracker:
    """Tokens per second from the server's counters between two looks (or its own gauge)."""

    WINDOW_S = 300.0

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, int]] = {}

    def rate(self, key: str, generated: int, metrics: dict[str, float]) -> float:
        """The server's recent decode rate when it exports one, else the counter's slope."""
        gauge = metrics.get("anvyl_recent_tokens_per_second")
        now = time.monotonic()
        previous = self._last.get(key)
        self._last[key] = (now, generated)
        if gauge is not None:
            return float(gauge)
        if previous is None or now - previous[0] > self.WINDOW_S or generated < previous[1]:
            return 0.0
        return (generated - previous[1]) / max(now - previous[0], 1e-6)
