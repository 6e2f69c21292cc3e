"""Prometheus metrics of one model server (its own registry, so servers in one process differ)."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
TPOT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    """The server's counters, gauges and histograms."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "anvyl_requests",
            "HTTP requests by endpoint and status",
            ["endpoint", "status"],
            registry=r,
        )
        self.prompt_tokens = Counter(
            "anvyl_prompt_tokens", "Prompt tokens of admitted requests", registry=r
        )
        self.generated_tokens = Counter("anvyl_generated_tokens", "Tokens generated", registry=r)
        self.finished = Counter(
            "anvyl_generations_finished",
            "Generations finished, by reason",
            ["reason"],
            registry=r,
        )
        self.ttft = Histogram(
            "anvyl_time_to_first_token_seconds",
            "Time from submission to the first token",
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.tpot = Histogram(
            "anvyl_time_per_output_token_seconds",
            "Time between consecutive tokens of a stream",
            buckets=TPOT_BUCKETS,
            registry=r,
        )
        self.decode_batch = Histogram(
            "anvyl_decode_batch_size",
            "Sequences advanced by one decode step",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "anvyl_queue_depth", "Requests waiting for a batch slot", registry=r
        )
        self.active = Gauge("anvyl_active_sequences", "Sequences in the running batch", registry=r)
        self.ready = Gauge("anvyl_model_ready", "1 once the model can serve", registry=r)
        # process_resident_memory_bytes & co.: what `anvyl model ps` shows as memory used.
        ProcessCollector(registry=r)

    def render(self) -> bytes:
        """The exposition text."""
        return generate_latest(self.registry)
