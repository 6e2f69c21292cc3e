"""What the runtime reports about an engine and its containers: frozen dataclasses, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class PortInfo:
    """One exposed container port and where it is published (host_port 0: not published)."""

    container_port: int
    protocol: str
    host_ip: str = ""
    host_port: int = 0


@dataclass(frozen=True)
class ContainerInfo:
    """A container as the engine lists it; `host_id` is filled in by the service layer."""

    id: str
    name: str
    image: str
    state: str
    status: str
    created_at: float
    labels: dict[str, str] = field(default_factory=dict)
    ports: tuple[PortInfo, ...] = ()
    host_id: str = ""

    @property
    def short_id(self) -> str:
        """The first 12 hex digits, as Docker prints it."""
        return self.id[:12]


@dataclass(frozen=True)
class EngineInfo:
    """Facts about a reachable engine."""

    engine_id: str
    name: str
    version: str
    api_version: str
    cpus: int
    memory_bytes: int
    os: str


@dataclass(frozen=True)
class StatsSample:
    """One cumulative resource sample of a container (CPU in ns; deltas give percentages)."""

    container_id: str
    cpu_total_ns: int
    system_cpu_ns: int
    online_cpus: int
    memory_used_bytes: int
    memory_limit_bytes: int


@dataclass(frozen=True)
class ExecResult:
    """The outcome of a command run inside a container."""

    exit_code: int
    stdout: bytes
    stderr: bytes
