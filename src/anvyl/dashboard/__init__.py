"""The web dashboard: hosts, models, logs, start/stop and a chat playground over HTTP.

`anvyl serve` runs it beside the gRPC API, in a background thread, through the same service
layer the servicers use. FastAPI and uvicorn are imported only when a dashboard is opened, so
the control plane still starts where they are not installed (without a dashboard).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from anvyl.dashboard.settings import (
    DEFAULT_DASHBOARD_PORT,
    DEFAULT_SAMPLE_INTERVAL_S,
    DashboardConfig,
)
from anvyl.errors import AlreadyExists, FailedPrecondition

if TYPE_CHECKING:
    from anvyl.dashboard.server import DashboardServer
    from anvyl.listeners import TLSFiles
    from anvyl.services import Services

log = logging.getLogger(__name__)


def open_dashboard(
    services: Services,
    cfg: DashboardConfig,
    *,
    host: str,
    token: str | None,
    tls: TLSFiles | None = None,
) -> DashboardServer | None:
    """Bind the dashboard (`start()` serves it); None when it is optional and cannot run.

    Args:
        services: The services the gRPC servicers use.
        cfg: Where to listen; `cfg.host` None means `host`.
        host: The gRPC server's host.
        token: The gRPC access token, required here too off loopback.
        tls: Serve HTTPS with the gRPC server's certificate.
    """
    try:
        from anvyl.dashboard.server import DashboardServer
    except ModuleNotFoundError as exc:
        if exc.name not in ("fastapi", "starlette", "uvicorn", "pydantic"):
            raise
        message = f"the dashboard needs FastAPI and uvicorn ({exc.name} is missing)"
        if cfg.optional:
            log.warning("%s; going on without it", message)
            return None
        raise FailedPrecondition(message) from exc
    try:
        return DashboardServer(services, cfg, host=cfg.host or host, token=token, tls=tls)
    except AlreadyExists as exc:  # the port is taken
        if not cfg.optional:
            raise
        log.warning("%s; going on without the dashboard", exc.message)
        return None


__all__ = [
    "DEFAULT_DASHBOARD_PORT",
    "DEFAULT_SAMPLE_INTERVAL_S",
    "DashboardConfig",
    "open_dashboard",
]
