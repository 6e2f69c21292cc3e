"""The dashboard's JSON: request bodies, views of service results, and the error shape."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import grpc
from pydantic import BaseModel, ConfigDict, Field

from anvyl import config
from anvyl.catalog import ModelInfo
from anvyl.dashboard.history import HealthEvent, Sample
from anvyl.errors import AnvylError
from anvyl.services import HostMetrics, HostView
from anvyl.services.models import (
    DEFAULT_WAIT_TIMEOUT_S,
    AvailableModel,
    DeploymentView,
    StartOptions,
)

HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 412,
    grpc.StatusCode.UNAVAILABLE: 503,
}


class StartRequest(BaseModel):
    """The start form; empty fields mean the CLI's defaults."""

    model_config = ConfigDict(extra="forbid")

    model_id: str
    name: str = ""
    port: int = config.DEFAULT_MODEL_PORT
    host_id: str = ""
    memory: str = ""
    cpus: float = 0.0
    ctx: int = 0
    api_key: str = ""
    bind: str = "127.0.0.1"
    force: bool = False

    def options(self) -> StartOptions:
        """The same options the CLI's `model start` sends (validated by `Models.start`)."""
        return StartOptions(
            model_id=self.model_id.strip(),
            name=self.name.strip(),
            port=self.port,
            host_id=self.host_id.strip(),
            memory=self.memory.strip(),
            cpus=self.cpus,
            ctx=self.ctx,
            api_key=self.api_key,
            bind=self.bind.strip() or "127.0.0.1",
            force=self.force,
            wait_timeout=DEFAULT_WAIT_TIMEOUT_S,
        )


class PullRequest(BaseModel):
    """The pull form: `OWNER/NAME[:REVISION]`, a GGUF repository's file, the model name."""

    model_config = ConfigDict(extra="forbid")

    repo: str
    file: str = ""
    name: str = ""


class ChatMessage(BaseModel):
    """One message of the playground's conversation."""

    role: str = Field(pattern="^(system|user|assistant)$")
    content: str


class ChatRequest(BaseModel):
    """What the playground sends: a deployment and the conversation."""

    model_config = ConfigDict(extra="forbid")

    deployment: str
    messages: list[ChatMessage] = Field(min_length=1, max_length=200)
    max_tokens: int = Field(default=256, ge=1, le=8192)
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)


def http_status(exc: AnvylError) -> int:
    """The HTTP status of an Anvyl error (500 for codes without a mapping)."""
    return HTTP_STATUS.get(exc.grpc_code, 500)


def error_body(message: str, status: int, code: str = "") -> dict[str, Any]:
    """`{"error": {"message", "code", "status"}}`, the shape every failure has."""
    return {"error": {"message": message, "code": code or str(status), "status": status}}


def anvyl_error_body(exc: AnvylError) -> dict[str, Any]:
    """The error shape of an Anvyl error."""
    return error_body(exc.message, http_status(exc), exc.grpc_code.name)


def host_json(host: HostView, metrics: HostMetrics | None, models: list[str]) -> dict[str, Any]:
    """A host, its usage when known, and the deployments on it."""
    data: dict[str, Any] = asdict(host)
    data["metrics"] = None
    if metrics is not None:
        data["metrics"] = {k: v for k, v in asdict(metrics).items() if k != "containers"}
    data["models"] = models
    return data


def deployment_json(view: DeploymentView, samples: list[Sample] | None = None) -> dict[str, Any]:
    """A deployment as the models page shows it (with its chart points when given)."""
    record = view.record
    data = {
        "id": record.id,
        "name": record.name,
        "model_id": record.model_id,
        "host_id": record.host_id,
        "port": record.port,
        "bind": record.bind,
        "image": record.image,
        "container_id": record.container_id,
        "runtime": view.runtime,
        "created_at": record.created_at,
        "options": {k: v for k, v in record.options.items() if k != "handle"},
        "state": view.state,
        "state_reason": view.state_reason,
        "url": view.url,
        "uptime_s": round(view.uptime_s, 1),
        "memory_used_bytes": view.memory_used_bytes,
        "memory_limit_bytes": view.memory_limit_bytes,
        "tokens_per_second": round(view.tokens_per_second, 2),
        "requests_total": view.requests_total,
        "generated_tokens_total": view.generated_tokens_total,
        "replicas": [replica_json(r) for r in view.replicas],
    }
    if samples is not None:
        data["series"] = {
            "t": [round(s.t, 1) for s in samples],
            "tokens_per_second": [s.tokens_per_second for s in samples],
            "requests_per_minute": [s.requests_per_minute for s in samples],
        }
    return data


def replica_json(replica: Any) -> dict[str, Any]:
    """One replica of a Swarm deployment (a `runtime.swarm.ReplicaView`): where and how it runs."""
    return {
        "slot": replica.slot,
        "node_id": replica.node_id,
        "node": replica.node,
        "address": replica.address,
        "state": replica.state,
        "since": replica.since,
        "restarts": replica.restarts,
        "ready": replica.ready,
        "error": replica.error,
    }


def health_json(events: list[HealthEvent]) -> list[dict[str, Any]]:
    """Health changes, oldest first."""
    return [asdict(e) for e in events]


def model_json(info: ModelInfo) -> dict[str, Any]:
    """A model of the catalog (a pull's result)."""
    return {
        "id": info.id,
        "source": info.source,
        "origin": info.origin,
        "architecture": info.architecture,
        "parameters": info.parameters,
        "quantization": info.quantization,
        "size_bytes": info.size_bytes,
        "memory_bytes": info.memory_bytes,
    }


def available_json(model: AvailableModel) -> dict[str, Any]:
    """A model the start form offers."""
    return {**model_json(model.info), "running": model.running}
