"""How the dashboard runs: address, port, sampling (no web framework imported here)."""

from __future__ import annotations

from dataclasses import dataclass

# Next to gRPC's 50051; clear of the model API (1234) and the model health port (8080).
DEFAULT_DASHBOARD_PORT = 50052
DEFAULT_SAMPLE_INTERVAL_S = 2.0
DEFAULT_HISTORY_S = 600.0


@dataclass(frozen=True)
class DashboardConfig:
    """Where the dashboard listens and how often it samples the deployments.

    Args:
        host: Address to listen on; `None` means the gRPC server's host.
        port: TCP port; 0 picks a free one.
        optional: When the port is taken (or FastAPI is missing), warn and go on without
            the dashboard instead of failing `anvyl serve`; used for the default port.
        interval: Seconds between two samples of `Models.list()`.
        history: Seconds of samples kept for the charts.
    """

    host: str | None = None
    port: int = DEFAULT_DASHBOARD_PORT
    optional: bool = False
    interval: float = DEFAULT_SAMPLE_INTERVAL_S
    history: float = DEFAULT_HISTORY_S
