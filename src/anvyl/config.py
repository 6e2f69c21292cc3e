"""Paths, defaults and environment variables shared by the CLI and the server."""

from __future__ import annotations

import logging
import os
from pathlib import Path

DEFAULT_SERVER_HOST = "localhost"
DEFAULT_SERVER_PORT = 50051
DEFAULT_MODEL_PORT = 1234
MODEL_API_PORT = 1234  # inside the model container
MODEL_HEALTH_PORT = 8080  # inside the model container
IMAGE_REPOSITORY = "anvyl/modelserver"

# Labels. `anvyl.managed=true` marks everything Anvyl owns on an engine.
LABEL_MANAGED = "anvyl.managed"
LABEL_SERVICE = "anvyl.service"
LABEL_MODEL_ID = "anvyl.model.id"
LABEL_MODEL_TYPE = "anvyl.model.type"
LABEL_DEPLOYMENT = "anvyl.deployment"
LABEL_TEST = "anvyl.test"  # set by the test-suite on everything it creates


def anvyl_home() -> Path:
    """The state directory: `$ANVYL_HOME`, default `~/.anvyl`."""
    return Path(os.environ.get("ANVYL_HOME") or Path.home() / ".anvyl").expanduser()


def models_dir() -> Path:
    """Where imported models live."""
    return anvyl_home() / "models"


def debug_enabled() -> bool:
    """True when `ANVYL_DEBUG` asks for debug logs and tracebacks."""
    return os.environ.get("ANVYL_DEBUG", "").strip().lower() in {"1", "true", "yes", "on"}


def setup_logging() -> None:
    """Quiet by default (warnings), everything with `ANVYL_DEBUG=1`."""
    level = logging.DEBUG if debug_enabled() else logging.WARNING
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
