"""The model-aware gateway: one OpenAI-compatible endpoint in front of every deployment.

`anvyl serve` runs it beside the gRPC API (loopback by default, port 50080). It routes each
request by its `model` field to a healthy replica of that model, least outstanding requests
first, retries a replica that cannot be reached on another one, and answers 503 with
`Retry-After` when none is healthy. uvicorn is imported only when a gateway is opened.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from anvyl.errors import AlreadyExists, FailedPrecondition
from anvyl.gateway.routing import RoutingTable, Target

if TYPE_CHECKING:
    from anvyl.catalog import ModelInfo
    from anvyl.gateway.ondemand import Demand
    from anvyl.gateway.server import GatewayServer
    from anvyl.listeners import TLSFiles

log = logging.getLogger(__name__)

# Clear of the model ports (1234, 8080), gRPC (50051) and the dashboard (50052).
DEFAULT_GATEWAY_PORT = 50080
DEFAULT_OLLAMA_PORT = 11434  # where Ollama's clients look first
DEFAULT_REFRESH_S = 1.0


@dataclass(frozen=True)
class GatewayConfig:
    """Where the gateway listens and how often it refreshes its routing table.

    Args:
        host: Address to listen on; `None` means the gRPC server's host.
        port: TCP port; 0 picks a free one.
        optional: When the port is taken, warn and go on without the gateway (the default port).
        interval: Seconds between two refreshes (replica list and health probes).
        aliases: (NAME, MODEL) pairs: a request for NAME (a glob such as `claude-*`) goes to
            MODEL, as clients with fixed model names (Claude Code) need.
        ollama_port: A second port of the same gateway, where Ollama's clients look (None:
            none); `ollama_optional`: when it is taken, warn and go on without it.
        allowed_origins: Web origins whose pages may call the gateway from a browser (CORS),
            besides pages on this machine; `*` allows any (see `anvyl.modelserver.browser`).
    """

    host: str | None = None
    port: int = DEFAULT_GATEWAY_PORT
    optional: bool = False
    interval: float = DEFAULT_REFRESH_S
    aliases: tuple[tuple[str, str], ...] = ()
    ollama_port: int | None = None
    ollama_optional: bool = False
    allowed_origins: frozenset[str] = frozenset()


def open_gateway(
    source: Callable[[], Sequence[Target]],
    cfg: GatewayConfig,
    *,
    host: str,
    token: str | None,
    loopback: bool,
    tls: TLSFiles | None = None,
    demand: Demand | None = None,
    autostart: bool = False,
    load_timeout: float = 120.0,
    startable: Callable[[], Sequence[ModelInfo]] | None = None,
) -> GatewayServer | None:
    """Bind the gateway (`start()` serves it); None when it is optional and cannot run.

    Args:
        source: Returns the replicas to route to (see `anvyl.gateway.replicas`).
        cfg: Where to listen; `cfg.host` None means `host`.
        host: The gRPC server's host.
        token: The gRPC access token, required here too off loopback.
        loopback: Whether the gateway's address is loopback only.
        tls: Serve HTTPS with the gRPC server's certificate.
        demand: Counts requests per model for keep-alive and, with `autostart`, starts a
            stopped model on the first request naming it (waiting up to `load_timeout`).
        startable: The models a request may start (listed by `/v1/models` as not loaded).
    """
    try:
        from anvyl.gateway.server import GatewayServer
    except ModuleNotFoundError as exc:
        if exc.name != "uvicorn":
            raise
        message = "the gateway needs uvicorn (pip install uvicorn)"
        if cfg.optional:
            log.warning("%s; going on without it", message)
            return None
        raise FailedPrecondition(message) from exc
    try:
        return GatewayServer(
            source,
            host=cfg.host or host,
            port=cfg.port,
            token=token,
            interval=cfg.interval,
            loopback=loopback,
            tls=tls,
            aliases=cfg.aliases,
            ollama_port=cfg.ollama_port,
            ollama_optional=cfg.ollama_optional,
            demand=demand,
            autostart=autostart,
            load_timeout=load_timeout,
            startable=startable,
            allowed_origins=cfg.allowed_origins,
        )
    except AlreadyExists as exc:
        if not cfg.optional:
            raise
        log.warning("%s; going on without the gateway", exc.message)
        return None


__all__ = [
    "DEFAULT_GATEWAY_PORT",
    "DEFAULT_OLLAMA_PORT",
    "DEFAULT_REFRESH_S",
    "GatewayConfig",
    "RoutingTable",
    "Target",
    "open_gateway",
]
