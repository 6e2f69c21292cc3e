"""The deployment runtime interface: what the deployment service asks of any runtime.

A runtime runs one model server for a deployment and reports on it. The service owns the rows,
the phases and the choice of runtime; it never asks which runtime it holds (the shape of
Nomad's task drivers). `start` returns a `Handle`, plain data the service stores and hands back
to `observe`, `stop`, `logs` after a restart of `anvyl serve` (that is what makes recovery work
alike for every runtime). A runtime says what it cannot do through `Capabilities`; the service
refuses such options once, at its edge.

    DeploymentRuntime
    ├── ContainerRuntime  (runtime/container.py: one Docker engine)
    ├── ProcessRuntime    (runtime/process.py: a supervised local process)
    └── SwarmRuntime      (services/swarm_runtime.py: replicated services on a Swarm manager)

A runtime that runs several servers per deployment (Swarm replicas, each on its node) says so in
its capabilities (`replicas`, `probes`) and reports them in `Observation`; the service treats
both shapes alike.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlparse

KIND_CONTAINER = "container"
KIND_PROCESS = "process"
KIND_SWARM = "swarm"
KINDS = (KIND_CONTAINER, KIND_PROCESS)
WILDCARDS = ("0.0.0.0", "::", "")
LOG_TAIL_LINES = 20

# What `observe` reports: the server's process/container, before the service probes `/health`.
STATUS_RUNNING = "running"
STATUS_RESTARTING = "restarting"
STATUS_EXITED = "exited"
STATUS_GONE = "gone"


@dataclass(frozen=True)
class Capabilities:
    """What a runtime can honour; the service refuses the rest with INVALID_ARGUMENT."""

    kind: str
    cpus: bool = True
    replicas: bool = False
    remote_hosts: bool = True
    startup_script: bool = True
    restart: bool = True
    # Whether `--memory` is enforced; when not, `memory_note` says why (and the start says so).
    memory: bool = True
    memory_note: str = ""
    # (uid, gid) that must read the API key file; None: the server's own user (mode 0600).
    key_owner: tuple[int, int] | None = None
    # Servers reachable from other machines always get a key (generated when none is given).
    api_key_required: bool = False
    # The address every server binds whatever is asked ("": as asked).
    bind: str = ""
    # `--host-id` names one of the runtime's own nodes (it places servers itself), not a host.
    nodes: bool = False
    # The runtime probes its servers' `/health` itself (`Observation.ready`), each where it runs.
    probes: bool = False


@dataclass(frozen=True)
class LaunchSpec:
    """One model server to run: what the service validated, nothing runtime-specific."""

    deployment_id: str
    name: str
    model_id: str
    model_path: str
    port: int
    bind: str = "127.0.0.1"
    image: str = ""
    memory: str = ""
    cpus: float = 0.0
    ctx: int = 0
    max_queue: int = 0
    dtype: str = ""
    startup_script: str = ""
    api_key_file: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    allow_origins: tuple[str, ...] = ()
    replicas: int = 1
    node: str = ""  # a node of the runtime's own (capabilities.nodes)
    api_key_generated: bool = False  # Anvyl made the key (clients of the gateway do not know it)
    # What `place` returned: the runtime's facts for `start` (the row keeps them too).
    placement: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Handle:
    """How a runtime finds its model server again: plain data, stored with the deployment.

    `ref` is what users see (a container id, `pid:N`); `data` is the rest (for a process: its
    pid, start time and token).
    """

    ref: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Observation:
    """A model server as its runtime sees it (the service adds `/health` and `/metrics`)."""

    status: str
    reason: str = ""  # why it is not running (exit code or signal, OOM), plus restart notes
    name: str = ""
    # Runtimes that probe their servers themselves (capabilities.probes): how many answer
    # `/health`, how many are asked for, the host of one that answers, and one entry per
    # server (a `runtime.swarm.ReplicaView` each); `failure`: why a start will never be ready.
    ready: int | None = None
    wanted: int = 1
    host: str = ""
    replicas: tuple[Any, ...] = ()
    failure: str = ""


@dataclass(frozen=True)
class Orphan:
    """A model server this installation started that the store does not know (lost database)."""

    deployment_id: str
    handle: Handle
    name: str
    model_id: str
    port: int
    bind: str
    image: str = ""
    options: dict[str, Any] = field(default_factory=dict)  # what the row keeps beside the handle


@dataclass(frozen=True)
class Route:
    """One server of a deployment the gateway may route to (a runtime with many per deployment)."""

    key: str  # unique within the deployment
    host: str  # where its port answers
    where: str  # shown to clients (a node's name)


class LogStream(Protocol):
    """Raw log chunks; `close()` ends a followed stream from another thread."""

    def __iter__(self) -> Iterator[bytes]: ...

    def close(self) -> None: ...


class DeploymentRuntime(abc.ABC):
    """Runs model servers of one kind on one host."""

    kind: str

    @abc.abstractmethod
    def capabilities(self) -> Capabilities:
        """What this runtime honours."""

    @abc.abstractmethod
    def prepare(self, say: Callable[[str], None]) -> str:
        """Make the model server runnable (an image, or nothing); returns the image used."""

    @abc.abstractmethod
    def check_free(self, name: str, bind: str, port: int) -> None:
        """AlreadyExists, saying by what, when the name or the port is taken."""

    @abc.abstractmethod
    def start(self, spec: LaunchSpec) -> Handle:
        """Start the model server (not waiting for the model); its handle."""

    @abc.abstractmethod
    def observe(self, handles: list[Handle]) -> list[Observation]:
        """The state of each handle's server (one look at the runtime for all of them)."""

    @abc.abstractmethod
    def log_tail(self, handle: Handle, lines: int = LOG_TAIL_LINES) -> str:
        """The last log lines ("" when none), for failure reports."""

    @abc.abstractmethod
    def logs(self, handle: Handle, *, follow: bool, tail: int | None) -> LogStream:
        """The server's output, followed until it stops or the stream is closed."""

    @abc.abstractmethod
    def apply_restart(self, handle: Handle, restart: str) -> None:
        """Restart the server on failure from now on (`on-failure[:N]`; called once ready)."""

    @abc.abstractmethod
    def stop(self, handle: Handle, timeout: float) -> None:
        """SIGTERM, SIGKILL after `timeout` seconds, then remove what the start made."""

    @abc.abstractmethod
    def discard(self, deployment_id: str) -> None:
        """Remove whatever a failed or interrupted start of this deployment made."""

    @abc.abstractmethod
    def orphans(self, controller_id: str) -> list[Orphan]:
        """Servers of this installation running here (the service adopts unknown ones)."""

    def memory_used(self, handle: Handle) -> int:
        """Bytes the server uses, when its own metrics do not say (0: unknown)."""
        return 0

    def maintain(self, handles: list[Handle]) -> None:  # noqa: B027 - optional
        """Periodic housekeeping of running servers (log rotation); nothing by default."""

    def place(self, launch: LaunchSpec, say: Callable[[str, str], None]) -> dict[str, Any]:
        """Check where the servers can run and ready those places (before the row is stored).

        Returns facts the deployment's row keeps and `start` gets back in `launch.placement`;
        nothing to do by default.
        """
        return {}

    def adopted(self, orphan: Orphan) -> None:  # noqa: B027 - optional
        """Called once the service recorded an orphan (a lost API key is replaced here)."""

    def reach(self, handle: Handle) -> str:
        """The host where a server answers when not at its row's bind address ("": there)."""
        return ""

    def routes(self, handles: list[Handle]) -> list[list[Route]] | None:
        """The servers of each handle for the gateway; None: each answers at its row's address."""
        return None

    def scale(self, handle: Handle, replicas: int) -> None:
        """Change the number of servers (runtimes with capabilities.replicas)."""
        raise NotImplementedError(f"the {self.kind} runtime does not scale")


def reach_host(bind: str, engine_address: str = "", local: bool = True) -> str:
    """The one rule for where a deployment's port answers, seen from the control plane.

    A specific bind address is dialled as is; a wildcard bind is loopback on this machine and
    the engine's own host name for a remote engine (the gateway and the health probe used to
    differ there: the probe dialled 127.0.0.1 for a remote 0.0.0.0 deployment).
    """
    if bind not in WILDCARDS:
        host = bind
    elif local:
        host = "127.0.0.1"
    else:
        host = urlparse(engine_address).hostname or "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def user_url(bind: str, port: int, engine_address: str = "", local: bool = True) -> str:
    """The URL users are shown (`localhost` for loopback and wildcard binds here)."""
    if local and bind in ("127.0.0.1", "::1", *WILDCARDS):
        return f"http://localhost:{port}"
    return f"http://{reach_host(bind, engine_address, local)}:{port}"
