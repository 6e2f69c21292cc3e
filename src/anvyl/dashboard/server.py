"""The dashboard app and the uvicorn server that runs it in a thread beside the gRPC server."""

from __future__ import annotations

import logging
import threading

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from anvyl.dashboard import api, chat, events, pages
from anvyl.dashboard.auth import Guard, is_loopback_name
from anvyl.dashboard.history import Sampler
from anvyl.dashboard.jobs import StartJobs
from anvyl.dashboard.protocol import anvyl_error_body, error_body, http_status
from anvyl.dashboard.settings import DashboardConfig
from anvyl.dashboard.state import STATIC_DIR, DashboardState
from anvyl.errors import AnvylError, InvalidArgument
from anvyl.listeners import TLSFiles, bind_socket, socket_url
from anvyl.services import Services

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 2.0


def create_app(dash: DashboardState, *, loopback: bool) -> FastAPI:
    """The FastAPI app over `dash`, wrapped in the token and same-origin guard.

    Its two exception handlers are the dashboard's one error boundary: routes raise, and every
    `AnvylError` or invalid body becomes `{"error": ...}` with its HTTP status here.
    """
    app = FastAPI(title="Anvyl dashboard", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.dashboard = dash
    for routes in (pages, api, events, chat):
        app.include_router(routes.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.exception_handler(AnvylError)
    async def anvyl_error(_request: Request, exc: AnvylError) -> JSONResponse:
        return JSONResponse(anvyl_error_body(exc), status_code=http_status(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid_body(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'body'}: {e.get('msg', '')}"
            for e in exc.errors()
        )
        return JSONResponse(error_body(problems, 400, "INVALID_ARGUMENT"), status_code=400)

    app.add_middleware(Guard, token=dash.token, loopback=loopback)
    return app


class DashboardServer:
    """The dashboard bound to its port; `start()` serves it in a thread, `stop()` ends it."""

    def __init__(
        self,
        services: Services,
        cfg: DashboardConfig,
        *,
        host: str,
        token: str | None,
        tls: TLSFiles | None = None,
    ) -> None:
        loopback = is_loopback_name(host)
        if not loopback and not token:
            raise InvalidArgument(
                f"the dashboard on {host} (not loopback) requires an access token: "
                "pass --token or set ANVYL_TOKEN"
            )
        self.closing = threading.Event()
        self.sampler = Sampler(services.models, interval=cfg.interval, history_seconds=cfg.history)
        state = DashboardState(
            services=services,
            sampler=self.sampler,
            jobs=StartJobs(services.models, self.sampler.poke, self.closing),
            token=token,
            closing=self.closing,
        )
        self.app = create_app(state, loopback=loopback)
        self.socket = bind_socket(
            host, cfg.port, what="the dashboard", option="--dashboard-port", backlog=128
        )
        self.port = self.socket.getsockname()[1]
        self.url = socket_url(host, self.socket, tls=tls is not None)
        self.server = uvicorn.Server(
            uvicorn.Config(
                self.app,
                log_level="warning",
                access_log=False,
                lifespan="off",
                timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
                timeout_keep_alive=5,
                **(tls.uvicorn_kwargs() if tls else {}),
            )
        )
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start sampling and serving."""
        self.sampler.start()
        self._thread = threading.Thread(
            target=self.server.run,
            kwargs={"sockets": [self.socket]},
            name="anvyl-dashboard",
            daemon=True,
        )
        self._thread.start()
        log.info("dashboard on %s", self.url)

    def stop(self) -> None:
        """End the event streams, stop the server and the sampler, release the port (idempotent)."""
        self.closing.set()
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=SHUTDOWN_GRACE_S + 5)
        self.sampler.stop()
        self.socket.close()
