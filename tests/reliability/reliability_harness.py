"""Helpers of the reliability tests: a real `anvyl serve` on a home holding the bundled model.

Everything a test server creates carries the run's `anvyl.test=<run id>` label (through
`ANVYL_LABELS`), so the session fixture removes whatever a failing test leaves behind.
"""

from __future__ import annotations

from models_harness import (
    MODEL_ID,
    SERVICE_LABEL,
    START_TIMEOUT_S,
    deployments,
    failed,
    make_home,
    model_containers,
    ok,
    serve_models,
    start_model,
    stop_all,
)

__all__ = [
    "MODEL_ID",
    "SERVICE_LABEL",
    "START_TIMEOUT_S",
    "deployments",
    "failed",
    "make_home",
    "model_containers",
    "ok",
    "serve_models",
    "start_model",
    "stop_all",
]
