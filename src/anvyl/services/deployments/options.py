"""What `model start` asks for, checked at the service's edge (pure: no I/O but the script)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from anvyl import config
from anvyl.catalog import ModelInfo
from anvyl.errors import FailedPrecondition, InvalidArgument
from anvyl.modelserver.browser import parse_origins
from anvyl.runtime import model_spec as spec
from anvyl.runtime.base import KINDS, Capabilities

DEFAULT_STOP_TIMEOUT_S = 30
DEFAULT_WAIT_TIMEOUT_S = 300.0
CONTAINER_OVERHEAD_BYTES = 64 * 1024 * 1024
MAX_CTX = 1 << 20
MAX_QUEUE = 100_000
# The model server dequantizes to float32 on the CPU (fastest there); memory must allow for it.
FLOAT32_BYTES = 4
DTYPES = ("auto", "float32", "float16", "bfloat16", "quantized")
RUNTIMES = ("", *KINDS)

PHASE_RESOLVING = "resolving"
PHASE_IMAGE = "image"
PHASE_CREATING = "creating"
PHASE_LOADING = "loading"
PHASE_READY = "ready"


@dataclass(frozen=True)
class StartOptions:
    """What `model start` asks for; validated by `validated()`."""

    model_id: str
    name: str = ""
    port: int = config.DEFAULT_MODEL_PORT
    host_id: str = ""
    memory: str = ""
    cpus: float = 0.0
    ctx: int = 0
    max_queue: int = 0
    api_key: str = ""
    bind: str = "127.0.0.1"
    force: bool = False
    detach: bool = False
    startup_script: str = ""
    dtype: str = ""
    wait_timeout: float = DEFAULT_WAIT_TIMEOUT_S
    # "", "no", "on-failure" or "on-failure:N"; the runtime applies it once the model is ready.
    restart: str = ""
    replicas: int = 0  # Swarm only; 0 means 1
    # "container", "process", or "" for the server's default (`anvyl serve --runtime`).
    runtime: str = ""
    # Idle seconds before it unloads (`policy.FOREVER`: never); None: never for an explicit
    # start. On-demand starts always carry one.
    keep_alive: float | None = None
    # Started by a request that named the model (may be unloaded to make room).
    on_demand: bool = False
    # Web origins whose pages may call the model from a browser (see anvyl.modelserver.browser).
    allow_origins: tuple[str, ...] = ()


def validated(options: StartOptions, model: ModelInfo) -> StartOptions:
    """The options with the bind address normalised; InvalidArgument naming what is wrong."""
    if options.runtime not in RUNTIMES:
        raise InvalidArgument(f"invalid --runtime {options.runtime!r}: container or process")
    if options.name:
        spec.validate_container_name(options.name)
    spec.validate_port(options.port)
    try:
        bind = ipaddress.ip_address(options.bind)
    except ValueError as exc:
        raise InvalidArgument(
            f"invalid bind address {options.bind!r}: give an IP address such as 127.0.0.1 "
            "or 0.0.0.0"
        ) from exc
    if options.cpus and not 0.01 <= options.cpus <= 1024:
        raise InvalidArgument(f"invalid --cpus {options.cpus}: give a number such as 1.5")
    if options.cpus < 0:
        raise InvalidArgument(f"invalid --cpus {options.cpus}: must be positive")
    if options.ctx and not 16 <= options.ctx <= MAX_CTX:
        raise InvalidArgument(f"invalid --ctx {options.ctx}: between 16 and {MAX_CTX}")
    if options.ctx < 0:
        raise InvalidArgument(f"invalid --ctx {options.ctx}: must be positive")
    if not 0 <= options.max_queue <= MAX_QUEUE:
        raise InvalidArgument(f"invalid --max-queue {options.max_queue}: 1 to {MAX_QUEUE}")
    if options.dtype and options.dtype not in DTYPES:
        raise InvalidArgument(
            f"invalid dtype {options.dtype!r}: auto, float32, float16, bfloat16 or quantized"
        )
    key = options.api_key
    if key and (len(key) > 512 or not key.isprintable() or " " in key):
        raise InvalidArgument("invalid API key: printable characters without spaces, ≤ 512")
    if options.startup_script:
        script = Path(options.startup_script)
        if not script.is_absolute() or not script.is_file():
            raise InvalidArgument(
                f"startup script {options.startup_script!r} must be an absolute path to a "
                "file on the server's machine"
            )
    try:
        origins = tuple(sorted(parse_origins(options.allow_origins)))
    except ValueError as exc:
        raise InvalidArgument(f"--allow-origin: {exc}") from None
    spec.parse_restart_policy(options.restart)
    if not 1 <= options.wait_timeout <= 3600:
        raise InvalidArgument("wait timeout must be between 1 and 3600 seconds")
    if options.memory:
        limit = spec.parse_memory(options.memory)
        needed = memory_needed(model, options)
        if limit < needed and not options.force:
            raise FailedPrecondition(
                f"--memory {options.memory} is less than {model.id} needs to serve "
                f"(about {spec.format_bytes(needed)}: weights, cache and runtime); give "
                f"at least --memory {_round_up_mib(needed)}m, or --force to try anyway"
            )
    return replace(options, bind=str(bind), allow_origins=origins)


def refuse_unsupported(options: StartOptions, caps: Capabilities, *, remote_host: bool) -> None:
    """INVALID_ARGUMENT naming the first option this runtime cannot honour."""
    why = f"the {caps.kind} runtime"
    if options.replicas > 1 and not caps.replicas:
        raise InvalidArgument(
            f"--replicas {options.replicas} is not supported by {why}: replicas need a Swarm "
            "(`anvyl cluster init`, with --runtime container)"
        )
    if remote_host and not caps.remote_hosts:
        raise InvalidArgument(
            f"--host-id {options.host_id} is not supported by {why}: it runs models on the "
            "server's own machine only"
        )
    if options.cpus and not caps.cpus:
        raise InvalidArgument(
            f"--cpus is not supported by {why} here: no writable cgroup to enforce it "
            "(use --runtime container)"
        )
    if options.startup_script and not caps.startup_script:
        raise InvalidArgument(
            f"--startup-script is not supported by {why}: a script would run as the server's "
            "user without a container's hardening (use --runtime container)"
        )
    if options.restart not in ("", "no") and not caps.restart:
        raise InvalidArgument(f"--restart is not supported by {why}")


def memory_needed(model: ModelInfo, options: StartOptions) -> int:
    """Estimated bytes to serve `model` with these options, as the server will load it."""
    dtype = options.dtype or "auto"
    weights = model.weights_bytes
    if dtype in ("auto", "float32"):
        weights = max(weights, model.parameters * FLOAT32_BYTES)
    elif dtype in ("float16", "bfloat16"):
        weights = max(weights, model.parameters * 2)
    ctx = options.ctx or None
    return model.estimate_memory(ctx) - model.weights_bytes + weights + CONTAINER_OVERHEAD_BYTES


def stored_options(opts: StartOptions, runtime: str) -> dict[str, Any]:
    """Options worth keeping (never the API key itself)."""
    kept = {
        "runtime": runtime,
        "memory": opts.memory,
        "cpus": opts.cpus,
        "ctx": opts.ctx,
        "max_queue": opts.max_queue,
        "dtype": opts.dtype,
        "api_key": bool(opts.api_key),
        "startup_script": opts.startup_script,
        "force": opts.force,
        "restart": opts.restart if opts.restart not in ("", "no") else "",
        "allow_origins": list(opts.allow_origins),
    }
    kept = {k: v for k, v in kept.items() if v}
    if opts.keep_alive is not None:
        kept["keep_alive"] = opts.keep_alive
    if opts.on_demand:
        kept["on_demand"] = True
        kept["api_key_generated"] = bool(opts.api_key)  # Anvyl's own: clients never send it
    return kept


PROFILE_KEYS = ("runtime", "memory", "cpus", "ctx", "max_queue", "dtype", "force", "allow_origins")


def profile_options(opts: StartOptions, runtime: str) -> dict[str, Any]:
    """What an on-demand start of the same model reuses from an explicit start."""
    kept = stored_options(opts, runtime)
    return {k: kept[k] for k in PROFILE_KEYS if k in kept}


def _round_up_mib(size: int) -> int:
    return -(-size // (1024 * 1024))
