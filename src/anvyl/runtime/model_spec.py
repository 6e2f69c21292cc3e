"""What a model container looks like on the engine: pure functions, no I/O.

Everything the spec fixes (labels, health-check timings, environment) and every hardening
default lives here, so it can be read in one place and unit-tested without an engine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from anvyl import config
from anvyl.errors import InvalidArgument

SECOND_NS = 1_000_000_000
HEALTHCHECK_INTERVAL_S = 30
HEALTHCHECK_TIMEOUT_S = 10
HEALTHCHECK_RETRIES = 3
HEALTHCHECK_START_PERIOD_S = 60

SERVICE_NAME = "lmstudio-model"
MODEL_TYPE = "mlx"
CONTAINER_MODEL_PATH = "/model"
CONTAINER_API_KEY_PATH = "/run/secrets/anvyl-api-key"
CONTAINER_STARTUP_SCRIPT_PATH = "/etc/anvyl/startup.sh"
CONTAINER_USER = "10001:10001"
NETWORK_NAME = "anvyl-models"
PIDS_LIMIT = 256
TMPFS_SIZE = "256m"
LOG_MAX_SIZE = "10m"
LOG_MAX_FILE = "3"
MIN_MEMORY_BYTES = 6 * 1024 * 1024  # the engine refuses less

_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")
_MEMORY_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}

# The health probe runs inside the container with the image's own Python: no curl needed.
HEALTH_PROBE = (
    "import sys, urllib.request\n"
    "try:\n"
    f"    r = urllib.request.urlopen('http://127.0.0.1:{config.MODEL_HEALTH_PORT}/health', "
    f"timeout={HEALTHCHECK_TIMEOUT_S - 2})\n"
    "    sys.exit(0 if r.status == 200 else 1)\n"
    "except Exception:\n"
    "    sys.exit(1)\n"
)


def parse_memory(value: str) -> int:
    """Docker's memory units (`8g`, `4096m`, `512MiB`, bytes) to bytes; InvalidArgument if bad."""
    match = _MEMORY_RE.match(value or "")
    if not match:
        raise InvalidArgument(
            f"invalid memory limit {value!r}: use a number with a unit, e.g. 8g, 4096m or 512m"
        )
    number, unit, _ = match.groups()
    size = int(float(number) * _UNITS[unit.lower()])
    if size < MIN_MEMORY_BYTES:
        raise InvalidArgument(f"memory limit {value!r} is below the engine's minimum of 6m")
    return size


def format_bytes(size: int) -> str:
    """Bytes as a short human string (`1.5 GiB`)."""
    step = 1024.0
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < step:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= step
    return f"{value:.1f} TiB"


def validate_port(port: int) -> int:
    """A host port Anvyl may publish on: 1-65535."""
    if not 1 <= port <= 65535:
        raise InvalidArgument(f"invalid port {port}: choose a port between 1 and 65535")
    return port


def validate_container_name(name: str) -> str:
    """A name the engine accepts and that carries no shell or path characters."""
    if not _NAME_RE.match(name or ""):
        raise InvalidArgument(
            f"invalid name {name!r}: use letters, digits, '.', '_' or '-', starting with a "
            "letter or digit, at most 128 characters"
        )
    return name


def parse_restart_policy(value: str) -> dict[str, Any] | None:
    """`on-failure[:N]` to the engine's restart policy (None for "" and "no"); N is 1 to 100."""
    text = (value or "").strip()
    if text in ("", "no"):
        return None
    name, _, count = text.partition(":")
    if name != "on-failure" or (count and not (count.isdigit() and 1 <= int(count) <= 100)):
        raise InvalidArgument(
            f"invalid restart policy {value!r}: use no, on-failure or on-failure:N (N 1-100)"
        )
    return {"Name": "on-failure", "MaximumRetryCount": int(count) if count else 0}


def default_deployment_name(model_id: str) -> str:
    """`model-<id>` made safe for the engine."""
    safe = re.sub(r"[^a-zA-Z0-9_.-]+", "-", model_id).strip("-.") or "model"
    return f"model-{safe}"[:128]


@dataclass(frozen=True)
class ModelContainerSpec:
    """Everything needed to create one model container."""

    image: str
    name: str
    model_id: str
    model_path: str
    port: int
    bind: str = "127.0.0.1"
    memory: str | None = None
    cpus: float | None = None
    ctx: int | None = None
    max_queue: int | None = None
    api_key_file: str | None = None
    startup_script: str | None = None
    dtype: str | None = None
    allow_origins: tuple[str, ...] = ()
    deployment_id: str = ""
    extra_labels: dict[str, str] = field(default_factory=dict)

    def labels(self) -> dict[str, str]:
        """The spec's labels plus Anvyl's own."""
        return {
            **self.extra_labels,
            config.LABEL_MANAGED: "true",
            config.LABEL_SERVICE: SERVICE_NAME,
            config.LABEL_MODEL_ID: self.model_id,
            config.LABEL_MODEL_TYPE: MODEL_TYPE,
            config.LABEL_DEPLOYMENT: self.deployment_id,
        }

    def environment(self) -> dict[str, str]:
        """The spec's environment variables plus the model server's own settings."""
        env = {
            "MODEL_ID": self.model_id,
            "MEMORY_LIMIT": self.memory or "unlimited",
            "PYTHONUNBUFFERED": "1",
            "MODEL_PATH": CONTAINER_MODEL_PATH,
        }
        if self.startup_script:
            env["STARTUP_SCRIPT"] = CONTAINER_STARTUP_SCRIPT_PATH
        if self.api_key_file:
            env["ANVYL_API_KEY_FILE"] = CONTAINER_API_KEY_PATH
        if self.ctx:
            env["ANVYL_CTX"] = str(self.ctx)
        if self.max_queue:
            env["ANVYL_MAX_QUEUE"] = str(self.max_queue)
        if self.dtype:
            env["ANVYL_DTYPE"] = self.dtype
        if self.allow_origins:
            env["ANVYL_ALLOW_ORIGINS"] = ",".join(self.allow_origins)
        return env

    def healthcheck(self) -> dict[str, Any]:
        """The spec's health check: every 30 s, 10 s timeout, 3 retries, 60 s start period."""
        return {
            "test": ["CMD", "python3", "-c", HEALTH_PROBE],
            "interval": HEALTHCHECK_INTERVAL_S * SECOND_NS,
            "timeout": HEALTHCHECK_TIMEOUT_S * SECOND_NS,
            "retries": HEALTHCHECK_RETRIES,
            "start_period": HEALTHCHECK_START_PERIOD_S * SECOND_NS,
        }

    def volumes(self) -> dict[str, dict[str, str]]:
        """Read-only bind mounts: the model, and the key and startup script when given."""
        mounts = {self.model_path: {"bind": CONTAINER_MODEL_PATH, "mode": "ro"}}
        if self.api_key_file:
            mounts[self.api_key_file] = {"bind": CONTAINER_API_KEY_PATH, "mode": "ro"}
        if self.startup_script:
            mounts[self.startup_script] = {"bind": CONTAINER_STARTUP_SCRIPT_PATH, "mode": "ro"}
        return mounts

    def create_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `docker.DockerClient.containers.create`."""
        kwargs: dict[str, Any] = {
            "image": self.image,
            "name": self.name,
            "labels": self.labels(),
            # The server binds 0.0.0.0 inside; where it is published decides its Host check.
            "environment": {**self.environment(), "ANVYL_PUBLISHED_BIND": self.bind},
            "healthcheck": self.healthcheck(),
            "volumes": self.volumes(),
            "ports": {f"{config.MODEL_API_PORT}/tcp": (self.bind, self.port)},
            "network": NETWORK_NAME,
            "user": CONTAINER_USER,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "read_only": True,
            "tmpfs": {"/tmp": f"rw,nosuid,nodev,size={TMPFS_SIZE},mode=1777"},
            "pids_limit": PIDS_LIMIT,
            "log_config": {
                "type": "json-file",
                "config": {"max-size": LOG_MAX_SIZE, "max-file": LOG_MAX_FILE},
            },
            # An init as PID 1 forwards signals: a server still starting up (no SIGTERM
            # handler yet) would otherwise ignore `docker stop`, as PID 1 does, for 30 s.
            "init": True,
            "detach": True,
        }
        if self.memory:
            memory = parse_memory(self.memory)
            kwargs["mem_limit"] = memory
            kwargs["memswap_limit"] = memory  # no swap: an OOM is an OOM, not a crawl
        if self.cpus:
            kwargs["nano_cpus"] = int(self.cpus * SECOND_NS)
        return kwargs


def network_kwargs() -> dict[str, Any]:
    """Anvyl's bridge for model containers: no traffic between containers."""
    return {
        "name": NETWORK_NAME,
        "driver": "bridge",
        "options": {"com.docker.network.bridge.enable_icc": "false"},
        "labels": {config.LABEL_MANAGED: "true"},
    }
