"""Running the model server: listeners first, the model loading behind them, graceful stop.

The HTTP listeners open before the model loads (the engine thread loads it), so `/health`
answers 503 `loading` at once and 200 when the engine is ready. SIGTERM (or SIGINT) stops
accepting: the listeners close, requests in flight finish for up to `drain_timeout` seconds,
whatever is left is cancelled, and the process exits 0. A second signal stops at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import uvicorn

from anvyl.modelserver.app import create_app, create_health_app
from anvyl.modelserver.config import ServerConfig
from anvyl.modelserver.engine import Engine
from anvyl.modelserver.loader import ModelInfo, ModelLoader, load_model_dir, read_model_info
from anvyl.modelserver.metrics import Metrics
from anvyl.modelserver.startup import TIMELINE
from anvyl.modelserver.state import ServerState

log = logging.getLogger("anvyl.modelserver")


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to `ModelServer`."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Do not install uvicorn's handlers (they would re-raise SIGTERM after shutdown)."""
        yield


class ModelServer:
    """The engine plus its API and health listeners, in one asyncio loop."""

    def __init__(self, config: ServerConfig, loader: ModelLoader | None = None) -> None:
        self.config = config
        self.engine = Engine(
            loader or (lambda: load_model_dir(config.model_path, config.dtype, config.ctx)),
            max_batch=config.max_batch,
            max_queue=config.max_queue,
            metrics=Metrics(),
        )
        self.state = ServerState(config=config, engine=self.engine, info=_info_or_none(config))
        self._servers: list[_Server] = []
        self._signals = 0

    def _uvicorn(self, app: object, port: int) -> _Server:
        """A uvicorn server for `app` on `port`."""
        level = "debug" if self.config.debug else "warning"
        cfg = uvicorn.Config(
            app,  # type: ignore[arg-type]
            host=self.config.host,
            port=port,
            log_level=level,
            access_log=self.config.debug,
            lifespan="off",
            timeout_graceful_shutdown=int(max(1, self.config.drain_timeout)),
            timeout_keep_alive=30,
        )
        return _Server(cfg)

    async def serve(self) -> int:
        """Run until stopped; return the exit code."""
        api = self._uvicorn(create_app(self.state), self.config.port)
        self._servers = [api]
        if self.config.health_port:
            self._servers.append(
                self._uvicorn(create_health_app(self.state), self.config.health_port)
            )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop)
        tasks = [asyncio.create_task(s.serve()) for s in self._servers]
        self.engine.start()
        watch = asyncio.create_task(self._watch_engine())
        await asyncio.gather(*tasks, return_exceptions=True)
        watch.cancel()
        started = all(s.started for s in self._servers)
        self.engine.shutdown()
        if not started:
            log.error("could not open the listeners on %s", self.config.host)
            return 1
        return 1 if self.engine.state == "failed" else 0

    async def _watch_engine(self) -> None:
        """Stop the server when the model fails to load."""
        while self.engine.state == "loading":
            await asyncio.sleep(0.1)
        if self.engine.state == "failed":
            log.error("the model failed to load: %s", self.engine.error)
            self.request_stop()
        elif self.engine.state == "ready":
            # One line even when quiet: what `docker logs` / `anvyl container logs` shows.
            print(
                f"anvyl-modelserver: {self.config.model_id} ready on "
                f"{self.config.host}:{self.config.port} (health on port {self.config.health_port})"
                f" in {TIMELINE.summary()}",
                file=sys.stderr,
                flush=True,
            )

    def request_stop(self) -> None:
        """Begin the graceful stop (a second call forces it)."""
        self._signals += 1
        self.state.draining = True
        self.engine.stop_accepting()
        for server in self._servers:
            if self._signals > 1:
                server.force_exit = True
            server.should_exit = True
        if self._signals == 1:
            log.warning(
                "stopping: %d requests in flight, draining for up to %.0f s",
                self.engine.in_flight(),
                self.config.drain_timeout,
            )
            asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        """Wait for in-flight generations, then cancel the rest."""
        deadline = time.monotonic() + self.config.drain_timeout
        while self.engine.in_flight() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.engine.in_flight():
            log.warning("drain timeout: cancelling %d requests", self.engine.in_flight())
            self.engine.shutdown(timeout=5.0)


def _info_or_none(config: ServerConfig) -> ModelInfo | None:
    """The model's description from config.json, before loading (None when unreadable)."""
    try:
        info = read_model_info(Path(config.model_path))
    except (OSError, ValueError):
        return None
    if config.ctx is not None:
        info = ModelInfo(info.arch, info.quantization, min(config.ctx, info.context_length))
    return info


def run(config: ServerConfig, loader: ModelLoader | None = None) -> int:
    """Serve `config` until stopped; return the exit code."""
    return asyncio.run(ModelServer(config, loader).serve())
