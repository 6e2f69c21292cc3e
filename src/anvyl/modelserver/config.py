"""The model server's settings: command-line flags, each with an environment fallback.

This is the contract the model image and the control plane rely on; the names do not change.
A flag given on the command line wins over its environment variable, which wins over the default.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from anvyl.modelserver.browser import BrowserPolicy, is_loopback_name, parse_origins

DEFAULT_MODEL_PATH = "/model"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_API_PORT = 1234
DEFAULT_HEALTH_PORT = 8080
DEFAULT_MAX_QUEUE = 64
DEFAULT_MAX_BATCH = 16
DEFAULT_MAX_TOKENS_LIMIT = 2048
DEFAULT_DRAIN_TIMEOUT = 30.0
DEFAULT_TEMPERATURE = 1.0
DTYPES = ("auto", "float32", "float16", "bfloat16", "quantized")


@dataclass(frozen=True)
class ServerConfig:
    """Everything the model server needs to start."""

    model_path: Path
    model_id: str
    host: str = DEFAULT_HOST
    port: int = DEFAULT_API_PORT
    health_port: int = DEFAULT_HEALTH_PORT
    api_key: str | None = None
    max_queue: int = DEFAULT_MAX_QUEUE
    max_batch: int = DEFAULT_MAX_BATCH
    ctx: int | None = None
    max_tokens_limit: int = DEFAULT_MAX_TOKENS_LIMIT
    dtype: str = "auto"
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    default_temperature: float = DEFAULT_TEMPERATURE
    memory_limit: str | None = None
    debug: bool = False
    # Browser safety (see browser.py): origins whose pages may call the API, and the address
    # the API port is published on when it is not `host` (a container binds 0.0.0.0 inside).
    allow_origins: frozenset[str] = frozenset()
    published_bind: str | None = None

    def browser_policy(self) -> BrowserPolicy:
        """Host checked when published on loopback; Origin always."""
        loopback = is_loopback_name(self.published_bind or self.host)
        return BrowserPolicy("the model server", loopback, self.allow_origins)


class ConfigError(ValueError):
    """A flag or environment variable has an unusable value."""


def build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    """The argument parser, with defaults taken from `env`."""
    p = argparse.ArgumentParser(
        prog="anvyl-modelserver",
        description="Serve one MLX model over the OpenAI and LM Studio REST APIs.",
    )
    e = env.get
    p.add_argument(
        "--model",
        default=e("MODEL_PATH", DEFAULT_MODEL_PATH),
        help="MLX model directory (env MODEL_PATH; default /model)",
    )
    p.add_argument(
        "--model-id",
        default=e("MODEL_ID"),
        help="model name on the API (env MODEL_ID; default: the directory name)",
    )
    p.add_argument(
        "--host",
        default=e("ANVYL_BIND", DEFAULT_HOST),
        help="address to bind (env ANVYL_BIND; default 127.0.0.1)",
    )
    p.add_argument(
        "--port",
        type=int,
        default=_int(env, "ANVYL_API_PORT", DEFAULT_API_PORT),
        help="API port (env ANVYL_API_PORT; default 1234)",
    )
    p.add_argument(
        "--health-port",
        type=int,
        default=_int(env, "ANVYL_HEALTH_PORT", DEFAULT_HEALTH_PORT),
        help="separate /health port, 0 disables it (env ANVYL_HEALTH_PORT; default 8080)",
    )
    p.add_argument(
        "--api-key-file",
        default=e("ANVYL_API_KEY_FILE"),
        help="file holding the API key (env ANVYL_API_KEY_FILE; env ANVYL_API_KEY"
        " gives the key itself)",
    )
    p.add_argument(
        "--max-queue",
        type=int,
        default=_int(env, "ANVYL_MAX_QUEUE", DEFAULT_MAX_QUEUE),
        help="requests that may wait for a slot before 429 (env ANVYL_MAX_QUEUE)",
    )
    p.add_argument(
        "--max-batch",
        type=int,
        default=_int(env, "ANVYL_MAX_BATCH", DEFAULT_MAX_BATCH),
        help="sequences decoded together (env ANVYL_MAX_BATCH)",
    )
    p.add_argument(
        "--ctx",
        type=int,
        default=_int(env, "ANVYL_CTX", None),
        help="context length cap (env ANVYL_CTX; default: the model's)",
    )
    p.add_argument(
        "--max-tokens-limit",
        type=int,
        default=_int(env, "ANVYL_MAX_TOKENS_LIMIT", DEFAULT_MAX_TOKENS_LIMIT),
        help="most tokens one request may generate (env ANVYL_MAX_TOKENS_LIMIT)",
    )
    p.add_argument(
        "--dtype",
        choices=DTYPES,
        default=e("ANVYL_DTYPE", "auto"),
        help="weight dtype; auto picks the fastest for the backend (env ANVYL_DTYPE)",
    )
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=_float(env, "ANVYL_DRAIN_TIMEOUT", DEFAULT_DRAIN_TIMEOUT),
        help="seconds SIGTERM waits for in-flight requests (env ANVYL_DRAIN_TIMEOUT)",
    )
    p.add_argument(
        "--default-temperature",
        type=float,
        default=_float(env, "ANVYL_DEFAULT_TEMPERATURE", DEFAULT_TEMPERATURE),
        help="temperature when a request gives none (env ANVYL_DEFAULT_TEMPERATURE;"
        " default 1.0, as OpenAI's)",
    )
    p.add_argument(
        "--allow-origin",
        action="append",
        default=None,
        help="a web origin (scheme://host[:port], or *) whose pages may call the API from a"
        " browser, with CORS; repeatable (env ANVYL_ALLOW_ORIGINS, comma-separated)",
    )
    p.add_argument(
        "--published-bind",
        default=e("ANVYL_PUBLISHED_BIND") or None,
        help="the address the API port is published on when not --host (a container's);"
        " loopback turns on the Host check (env ANVYL_PUBLISHED_BIND)",
    )
    return p


def parse_config(argv: Sequence[str], env: Mapping[str, str]) -> ServerConfig:
    """Parse flags (falling back on `env`) into a checked `ServerConfig`."""
    args = build_parser(env).parse_args(list(argv))
    model_path = Path(args.model).expanduser()
    api_key = env.get("ANVYL_API_KEY") or None
    if args.api_key_file:
        try:
            api_key = Path(args.api_key_file).read_text().strip() or None
        except OSError as exc:
            raise ConfigError(f"cannot read the API key file {args.api_key_file}: {exc}") from exc
    try:
        given = args.allow_origin
        origins = parse_origins(
            env.get("ANVYL_ALLOW_ORIGINS", "").split(",") if given is None else given
        )
    except ValueError as exc:
        raise ConfigError(f"--allow-origin: {exc}") from None
    config = ServerConfig(
        model_path=model_path,
        model_id=args.model_id or model_path.resolve().name or "model",
        host=args.host,
        port=args.port,
        health_port=args.health_port,
        api_key=api_key,
        max_queue=args.max_queue,
        max_batch=args.max_batch,
        ctx=args.ctx,
        max_tokens_limit=args.max_tokens_limit,
        dtype=args.dtype,
        drain_timeout=args.drain_timeout,
        default_temperature=args.default_temperature,
        memory_limit=env.get("MEMORY_LIMIT") or None,
        debug=env.get("ANVYL_DEBUG", "") not in ("", "0", "false", "no"),
        allow_origins=origins,
        published_bind=args.published_bind,
    )
    check_config(config)
    return config


def check_config(config: ServerConfig) -> None:
    """Raise `ConfigError` for values that cannot work."""
    if config.dtype not in DTYPES:
        raise ConfigError(f"--dtype must be one of {', '.join(DTYPES)}, not {config.dtype!r}")
    for name, value, low in (
        ("--port", config.port, 0),
        ("--health-port", config.health_port, 0),
        ("--max-queue", config.max_queue, 0),
        ("--max-batch", config.max_batch, 1),
        ("--max-tokens-limit", config.max_tokens_limit, 1),
    ):
        if value < low or value > (65535 if "port" in name else 1 << 30):
            raise ConfigError(f"{name} is out of range: {value}")
    if config.ctx is not None and config.ctx < 2:
        raise ConfigError(f"--ctx must be at least 2, not {config.ctx}")
    if config.drain_timeout < 0:
        raise ConfigError(f"--drain-timeout must not be negative, not {config.drain_timeout}")
    if not 0.0 <= config.default_temperature <= 2.0:
        raise ConfigError("--default-temperature must be between 0 and 2")


def _int(env: Mapping[str, str], name: str, default: int | None) -> int | None:
    """An integer environment variable, or `default` when unset or empty."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, not {raw!r}") from None


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    """A float environment variable, or `default` when unset or empty."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {raw!r}") from None


def default_env() -> Mapping[str, str]:
    """The process environment (a seam for tests)."""
    return os.environ
