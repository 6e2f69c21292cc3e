"""The gateway's server: uvicorn in a thread with its own event loop, and the replica prober.

Every `interval` seconds the prober reads the replicas from the control plane (a cheap store
read, or the Swarm's tasks) and asks each one's `/health`; a replica is routed to only while it
answers 200. A connection failure seen by the proxy marks a replica down at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import Callable, Sequence
from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpx
import uvicorn

from anvyl.catalog import ModelInfo
from anvyl.errors import AlreadyExists, InvalidArgument
from anvyl.gateway.app import Gateway
from anvyl.gateway.ondemand import Demand, Loader
from anvyl.gateway.routing import Replica, RoutingTable, Target
from anvyl.listeners import TLSFiles, bind_socket, socket_url
from anvyl.modelserver.browser import BrowserGuard, BrowserPolicy

log = logging.getLogger(__name__)

TargetSource = Callable[[], Sequence[Target]]

PROBE_TIMEOUT_S = 1.0
CONNECT_TIMEOUT_S = 2.0
READ_TIMEOUT_S = 600.0  # between two chunks; a long non-streamed answer sends nothing for a while
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
SHUTDOWN_GRACE_S = 2.0


class GatewayServer:
    """The gateway bound to its port; `start()` serves it in a thread, `stop()` ends it.

    Args:
        source: Returns the replicas to route to (called in a worker thread).
        host: Address to listen on.
        port: TCP port; 0 picks a free one.
        token: The control plane's access token (required off loopback).
        interval: Seconds between two refreshes of the routing table.
        allowed_origins: Web origins whose pages get CORS answers (`--allow-origin`).
    """

    def __init__(
        self,
        source: TargetSource,
        *,
        host: str,
        port: int,
        token: str | None,
        interval: float = 1.0,
        loopback: bool = True,
        tls: TLSFiles | None = None,
        aliases: tuple[tuple[str, str], ...] = (),
        ollama_port: int | None = None,
        ollama_optional: bool = False,
        allowed_origins: frozenset[str] = frozenset(),
        demand: Demand | None = None,
        autostart: bool = False,
        load_timeout: float = 120.0,
        startable: Callable[[], Sequence[ModelInfo]] | None = None,
    ) -> None:
        self.aliases = aliases
        self.demand = demand
        self.autostart = autostart and demand is not None
        self.load_timeout = load_timeout
        self.startable_source = startable
        self.startable: list[ModelInfo] = []  # models a request may start (autostart on)
        self.loopback = loopback
        self.browser = BrowserPolicy("the gateway", loopback, allowed_origins)
        if not loopback and not token:
            raise InvalidArgument(
                f"the gateway on {host} (not loopback) requires an access token: "
                "pass --token or set ANVYL_TOKEN"
            )
        self.source = source
        self.token = token
        self.interval = interval
        self.table = RoutingTable()
        self.socket = bind_socket(host, port, what="the gateway", option="--gateway-port")
        self.port = self.socket.getsockname()[1]
        self.url = socket_url(host, self.socket, tls=tls is not None)
        # The same gateway on Ollama's port: one routing table, one prober, two sockets.
        self.ollama_socket: socket.socket | None = None
        self.ollama_url: str | None = None
        if ollama_port is not None:
            try:
                self.ollama_socket = bind_socket(
                    host, ollama_port, what="the Ollama port", option="--ollama-port"
                )
            except AlreadyExists as exc:
                if not ollama_optional:
                    self.socket.close()
                    raise
                log.warning("%s; going on without it", exc.message)
            else:
                self.ollama_url = socket_url(host, self.ollama_socket, tls=tls is not None)
        self.tls = tls
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopping = asyncio.Event()
        self._probe_client: httpx.AsyncClient | None = None
        self._refreshing: asyncio.Lock | None = None
        self._started = 0  # refreshes begun and ended: callers waiting share the next one
        self._ended = 0

    def start(self) -> None:
        """Serve in a background thread; returns once the first routing table is in place."""
        self._thread = threading.Thread(target=self._run, name="anvyl-gateway", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S):
            log.warning("the gateway took more than %.0f s to start", START_TIMEOUT_S)
        log.info("gateway on %s", self.url)

    def stop(self) -> None:
        """Stop serving and probing, release the port (idempotent)."""
        loop, server = self._loop, self._server
        if server is not None:
            server.should_exit = True
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(timeout=STOP_TIMEOUT_S)
            self._thread = None
        self.socket.close()
        if self.ollama_socket is not None:
            self.ollama_socket.close()

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=256)
        timeout = httpx.Timeout(CONNECT_TIMEOUT_S, read=READ_TIMEOUT_S)
        # Never keep cookies a replica sets: they would leak to the next client.
        no_cookies = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
        async with (
            httpx.AsyncClient(
                timeout=timeout, limits=limits, trust_env=False, cookies=no_cookies
            ) as client,
            httpx.AsyncClient(timeout=PROBE_TIMEOUT_S, trust_env=False) as probe_client,
        ):
            self._probe_client = probe_client
            self._refreshing = asyncio.Lock()
            await self.refresh(probe_client)
            loader = None
            if self.demand is not None:
                loader = Loader(
                    self.demand,
                    self.table,
                    self.refresh_now,
                    autostart=self.autostart,
                    timeout=self.load_timeout,
                )
            gateway = Gateway(
                self.table,
                client,
                token=self.token,
                aliases=self.aliases,
                loader=loader,
                startable=lambda: self.startable,
            )
            self._server = uvicorn.Server(
                uvicorn.Config(
                    BrowserGuard(gateway, self.browser),
                    log_level="warning",
                    access_log=False,
                    lifespan="off",
                    timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
                    timeout_keep_alive=60,
                    **(self.tls.uvicorn_kwargs() if self.tls else {}),
                )
            )
            prober = asyncio.create_task(self._refresh_forever(probe_client))
            self._ready.set()
            try:
                sockets = [s for s in (self.socket, self.ollama_socket) if s is not None]
                await self._server.serve(sockets=sockets)
            finally:
                prober.cancel()
                await asyncio.gather(prober, return_exceptions=True)

    async def _refresh_forever(self, http: httpx.AsyncClient) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self.interval)
            if not self._stopping.is_set():
                await self.refresh(http)

    async def refresh_now(self) -> None:
        """Refresh the routing table now (a model just loaded); callers that asked while one
        was under way share the next one."""
        await self.refresh(self._probe_client, after=self._started)

    async def refresh(self, http: httpx.AsyncClient | None, *, after: int = -1) -> None:
        """Read the replicas from the control plane and probe each one's health (skipped when
        a refresh that began after refresh number `after` has ended meanwhile)."""
        assert self._refreshing is not None and http is not None
        async with self._refreshing:
            if self._ended > after >= 0:
                return
            self._started += 1
            await self._refresh(http)
            self._ended = self._started

    async def _refresh(self, http: httpx.AsyncClient) -> None:
        if self.startable_source is not None and self.autostart:
            try:
                self.startable = list(await asyncio.to_thread(self.startable_source))
            except Exception:
                log.warning("could not list the startable models", exc_info=True)
        try:
            targets = await asyncio.to_thread(self.source)
        except Exception:  # keep routing with what we had; the next round tries again
            log.warning(
                "could not read the replicas; keeping the last routing table", exc_info=True
            )
        else:
            self.table.update(targets)
        replicas = self.table.replicas()
        results = await asyncio.gather(*(_healthy(http, r) for r in replicas))
        for replica, healthy in zip(replicas, results, strict=True):
            self.table.set_health(replica.target.key, healthy)


async def _healthy(http: httpx.AsyncClient, replica: Replica) -> bool:
    """True when the replica's `/health` answers 200 now."""
    try:
        response = await http.get(f"{replica.target.base_url}/health")
    except httpx.HTTPError:
        return False
    return response.status_code == 200
