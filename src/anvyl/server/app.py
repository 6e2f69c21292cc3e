"""`anvyl serve`: the gRPC control plane with health, reflection, auth and clean shutdown."""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import threading
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from anvyl import config
from anvyl.api import anvyl_pb2 as pb
from anvyl.api import anvyl_pb2_grpc as rpc
from anvyl.dashboard import DashboardConfig, open_dashboard
from anvyl.errors import AnvylError, InvalidArgument
from anvyl.gateway import GatewayConfig, Target, open_gateway
from anvyl.runtime import DockerDriver, Engines, docker_host_from_env
from anvyl.runtime.base import KIND_CONTAINER, KIND_PROCESS, KINDS
from anvyl.server.cluster_servicer import ClusterServicer
from anvyl.server.interceptors import AuthInterceptor, ErrorInterceptor
from anvyl.server.listen import TLSFiles
from anvyl.server.servicers import ContainerServicer, HostServicer, ModelServicer
from anvyl.services import Services, build_services
from anvyl.services.deployments.reconcile import RECONCILE_PERIOD_S
from anvyl.services.deployments.service import StepHook
from anvyl.services.ondemand import IDLE_PERIOD_S, DemandPolicy, IdleClock
from anvyl.store import HostRecord, Store

if TYPE_CHECKING:
    from anvyl.dashboard.server import DashboardServer
    from anvyl.gateway.server import GatewayServer

log = logging.getLogger(__name__)

RUNTIME_AUTO = "auto"
TEST_PAUSE_ENV = "ANVYL_TEST_PAUSE_AT"
ENGINE_PROBE_TIMEOUT_S = 3.0
SERVICE_NAMES = tuple(
    pb.DESCRIPTOR.services_by_name[name].full_name
    for name in ("HostService", "ContainerService", "ModelService", "ClusterService")
)


@dataclass(frozen=True)
class ServerConfig:
    """How `anvyl serve` runs."""

    host: str = config.DEFAULT_SERVER_HOST
    port: int = config.DEFAULT_SERVER_PORT
    token: str | None = None
    db_path: Path | None = None
    docker_host: str | None = None
    max_workers: int = 32
    grace_seconds: float = 5.0
    home: Path | None = None
    # Extra labels on every container Anvyl creates (`ANVYL_LABELS="k=v,k2=v2"`).
    container_labels: dict[str, str] = field(default_factory=dict)
    # The web dashboard beside the gRPC API; None: no dashboard.
    dashboard: DashboardConfig | None = None
    # The model-aware OpenAI gateway; None: no gateway.
    gateway: GatewayConfig | None = None
    # TLS for the gRPC API (PEM files); both or neither.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # The default runtime of `model start`: container, process, or auto (container when the
    # engine answers at start-up, else process).
    runtime: str = RUNTIME_AUTO
    # Called at each step of a model start (`serve()` wires the test hook here).
    step_hook: StepHook | None = None
    # Models on demand: autostart, keep-alive, load timeout, memory budget, max loaded.
    demand: DemandPolicy = field(default_factory=DemandPolicy)


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (localhost, 127.0.0.0/8, ::1)."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def server_credentials(cert: Path | None, key: Path | None) -> grpc.ServerCredentials | None:
    """TLS credentials from a PEM certificate (chain) and key; None without either."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise InvalidArgument("--tls-cert and --tls-key go together: give both or neither")
    try:
        pair = (Path(key).read_bytes(), Path(cert).read_bytes())
    except OSError as exc:
        raise InvalidArgument(f"cannot read {exc.filename}: {exc.strerror}") from exc
    if b"PRIVATE KEY" not in pair[0] or b"CERTIFICATE" not in pair[1]:
        raise InvalidArgument("--tls-key must be a PEM private key, --tls-cert a PEM certificate")
    return grpc.ssl_server_credentials([pair])


def bind_address(host: str, port: int) -> str:
    """`host:port`, with IPv6 literals bracketed."""
    host = host.strip("[]")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class AnvylServer:
    """The control plane: store, engines, services and the gRPC server around them."""

    def __init__(self, cfg: ServerConfig = ServerConfig()) -> None:
        if cfg.token is not None and not cfg.token.strip():
            raise InvalidArgument("the access token must not be empty")
        if not is_loopback(cfg.host) and not cfg.token:
            raise InvalidArgument(
                f"binding {cfg.host} (not loopback) requires an access token: "
                "pass --token or set ANVYL_TOKEN"
            )
        credentials = server_credentials(cfg.tls_cert, cfg.tls_key)
        if cfg.token and credentials is None and not is_loopback(cfg.host):
            log.warning(
                "the access token travels in cleartext on %s: pass --tls-cert and --tls-key",
                cfg.host,
            )
        self.cfg = cfg
        # The dashboard and the gateway serve HTTPS with the same certificate as gRPC.
        self.tls = TLSFiles(cfg.tls_cert, cfg.tls_key) if credentials is not None else None
        self.dashboard: DashboardServer | None = None
        self.gateway: GatewayServer | None = None
        local_driver = DockerDriver(cfg.docker_host or docker_host_from_env())
        self.runtime = choose_runtime(cfg.runtime, local_driver)
        self.store = Store(cfg.db_path)
        self.engines = Engines()
        self.services: Services = build_services(
            self.store,
            self.engines,
            home=cfg.home,
            container_labels=cfg.container_labels,
            default_runtime=self.runtime,
            step_hook=cfg.step_hook,
            demand=cfg.demand,
            generate_keys=bool(cfg.token),
        )
        self.idle = IdleClock(self.services.ondemand)
        self.local_host: HostRecord = self.services.hosts.register_local(local_driver)
        self._stopping = threading.Event()
        interceptors: list[grpc.ServerInterceptor] = []
        if cfg.token:
            interceptors.append(AuthInterceptor(cfg.token))
        interceptors.append(ErrorInterceptor())
        self.grpc_server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=cfg.max_workers, thread_name_prefix="anvyl"),
            interceptors=interceptors,
            options=[("grpc.so_reuseport", 0)],
        )
        rpc.add_HostServiceServicer_to_server(HostServicer(self.services), self.grpc_server)
        rpc.add_ContainerServiceServicer_to_server(
            ContainerServicer(self.services), self.grpc_server
        )
        rpc.add_ModelServiceServicer_to_server(ModelServicer(self.services), self.grpc_server)
        rpc.add_ClusterServiceServicer_to_server(ClusterServicer(self.services), self.grpc_server)
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc_server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), self.grpc_server
        )
        address = bind_address(cfg.host, cfg.port)
        try:
            if credentials is None:
                self.port = self.grpc_server.add_insecure_port(address)
            else:
                self.port = self.grpc_server.add_secure_port(address, credentials)
        except RuntimeError as exc:
            self.close()
            raise InvalidArgument(f"cannot listen on {address}: is the port in use?") from exc
        self.address = bind_address(cfg.host, self.port)
        if cfg.dashboard is not None:
            try:
                self.dashboard = open_dashboard(
                    self.services, cfg.dashboard, host=cfg.host, token=cfg.token, tls=self.tls
                )
            except AnvylError:
                self.close()
                raise
        if cfg.gateway is not None:
            gateway_host = cfg.gateway.host or cfg.host
            try:
                self.gateway = open_gateway(
                    self.gateway_targets,
                    cfg.gateway,
                    host=gateway_host,
                    token=cfg.token,
                    loopback=is_loopback(gateway_host),
                    tls=self.tls,
                    demand=self.services.ondemand,
                    autostart=cfg.demand.autostart,
                    load_timeout=cfg.demand.load_timeout_s,
                    startable=self.services.ondemand.startable,
                )
            except AnvylError:
                self.close()
                raise

    @property
    def driver(self) -> DockerDriver:
        """The local engine's driver (shared with model operations)."""
        return self.engines.driver(self.local_host.id)

    def gateway_targets(self) -> list[Target]:
        """The replicas the gateway routes to (each deployment, or each Swarm task)."""
        return self.services.models.targets()

    def start(self) -> None:
        """Reconcile, start serving, mark every service SERVING; reconcile on a timer after."""
        self.reconcile()
        threading.Thread(target=self._reconcile_loop, name="anvyl-reconcile", daemon=True).start()
        threading.Thread(target=self._idle_loop, name="anvyl-keep-alive", daemon=True).start()
        self.grpc_server.start()
        if self.dashboard is not None:
            self.dashboard.start()
        if self.gateway is not None:
            self.gateway.start()
        for name in ("", *SERVICE_NAMES):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("anvyl serve listening on %s", self.address)

    def reconcile(self) -> None:
        """One reconcile pass; failures are logged (the next pass tries again)."""
        try:
            self.services.models.reconcile()
        except AnvylError as exc:  # the engine may be down
            log.warning("could not reconcile deployments: %s", exc)
        except Exception:  # the loop must survive anything: log it with its traceback
            log.exception("reconcile failed")

    def _reconcile_loop(self) -> None:
        while not self._stopping.wait(RECONCILE_PERIOD_S):
            self.reconcile()

    def _idle_loop(self) -> None:
        """The keep-alive clock: unload deployments idle past their keep-alive."""
        while not self._stopping.wait(IDLE_PERIOD_S):
            try:
                self.idle.tick()
            except Exception:  # the clock must survive anything: log it and go on
                log.exception("the keep-alive clock failed")

    def stop(self, grace: float | None = None) -> None:
        """Stop taking calls, let running ones finish for `grace` seconds, release everything."""
        self._stopping.set()
        self.health.enter_graceful_shutdown()
        self.grpc_server.stop(self.cfg.grace_seconds if grace is None else grace).wait()
        self.close()

    def close(self) -> None:
        """Release the dashboard, the engines and the database."""
        if self.dashboard is not None:
            self.dashboard.stop()
        if self.gateway is not None:
            self.gateway.stop()
        self.engines.close()
        self.store.close()


def choose_runtime(wanted: str, driver: DockerDriver) -> str:
    """`auto` → container when the engine answers now, else process; others as given."""
    if wanted not in (RUNTIME_AUTO, *KINDS):
        raise InvalidArgument(f"invalid --runtime {wanted!r}: auto, container or process")
    if wanted != RUNTIME_AUTO:
        return wanted
    probe = DockerDriver(driver.base_url, timeout=ENGINE_PROBE_TIMEOUT_S)
    try:
        probe.ping()
    except AnvylError as exc:
        log.info("no container engine answers (%s): models run as local processes", exc)
        return KIND_PROCESS
    finally:
        probe.close()
    return KIND_CONTAINER


def test_pause_hook(home: Path) -> StepHook | None:
    """The fault tests' hook: with `ANVYL_TEST_PAUSE_AT=<step>`, a start pauses for good there.

    It writes `$ANVYL_HOME/test-paused-<step>` first, so a test can kill the server exactly
    at that step (`before-create`, `after-create`, `loading`).
    """
    wanted = os.environ.get(TEST_PAUSE_ENV, "")
    if not wanted:
        return None

    def pause(step: str) -> None:
        if step != wanted:
            return
        (home / f"test-paused-{step}").write_text(f"{os.getpid()}\n")
        log.warning("test hook %s=%s: pausing here for good", TEST_PAUSE_ENV, step)
        threading.Event().wait()

    return pause


def serve(cfg: ServerConfig, *, ready: Callable[[AnvylServer], None] | None = None) -> int:
    """Run until SIGTERM or SIGINT, then shut down cleanly; returns the exit code."""
    if cfg.step_hook is None:
        cfg = replace(cfg, step_hook=test_pause_hook(cfg.home or config.anvyl_home()))
    server = AnvylServer(cfg)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.start()
        if ready is not None:
            ready(server)
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
