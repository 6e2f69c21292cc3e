"""The dashboard's JSON API: deployments, start and pull jobs, the start form's catalog, hosts.

Errors are raised, never turned into responses here: the app's one exception handler gives every
`AnvylError` its HTTP status and the `{"error": ...}` shape (`server.create_app`).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from anvyl.dashboard.jobs import StartJob
from anvyl.dashboard.protocol import (
    PullRequest,
    StartRequest,
    available_json,
    deployment_json,
    health_json,
)
from anvyl.dashboard.state import call, collect_hosts, snapshot_json, state_of
from anvyl.errors import AnvylError, NotFound
from anvyl.store.deployments import DeploymentRecord

VALIDATION_WAIT_S = 60.0

router = APIRouter()


@router.get("/api/models")
async def list_models(request: Request) -> dict[str, Any]:
    """The deployments as last sampled."""
    return snapshot_json(state_of(request))


@router.get("/api/models/{ref}")
async def get_model(ref: str, request: Request) -> Response:
    """One deployment: the sampled view, its labels, health history and chart points."""
    dash = state_of(request)
    record: DeploymentRecord = await call(dash.services.models.find, ref)
    labels: dict[str, str] = {}
    if record.container_id:
        try:
            info = await call(dash.services.containers.get, record.container_id)
            labels = dict(sorted(info.labels.items()))
        except AnvylError:
            labels = {}
    view = next((v for v in dash.sampler.snapshot.views if v.record.id == record.id), None)
    data: dict[str, Any]
    if view is None:
        data = {"id": record.id, "name": record.name, "state": record.state}
    else:
        data = deployment_json(view, dash.sampler.history.samples(record.id))
    data["health"] = health_json(dash.sampler.history.health(record.id))
    data["labels"] = labels
    return JSONResponse(data)


@router.delete("/api/models/{ref}")
async def stop_model(ref: str, request: Request) -> Response:
    """Stop a deployment gracefully and remove its container."""
    dash = state_of(request)
    try:
        view = await call(dash.services.models.stop, ref)
    finally:
        dash.sampler.poke()
    return JSONResponse(deployment_json(view))


@router.post("/api/models")
async def start_model(body: StartRequest, request: Request) -> Response:
    """Start a model: 202 with a job to follow once validated, else the error (nothing made)."""
    dash = state_of(request)
    job: StartJob = dash.jobs.submit(body.options())
    accepted = await call(job.wait_validated, VALIDATION_WAIT_S)
    if job.error is not None and not accepted:
        return JSONResponse(job.error, status_code=job.error["error"]["status"])
    dash.sampler.poke()
    return JSONResponse(
        {"job": job.id, "events": f"/api/jobs/{job.id}/events", "model_id": job.model_id},
        status_code=202,
    )


@router.post("/api/pulls")
async def pull_model(body: PullRequest, request: Request) -> Response:
    """Pull from the Hugging Face Hub: 202 with a job once the download begins, else the error."""
    dash = state_of(request)
    job = dash.jobs.submit_pull(body.repo.strip(), file=body.file.strip(), name=body.name.strip())
    accepted = await call(job.wait_validated, VALIDATION_WAIT_S)
    if job.error is not None and not accepted:
        return JSONResponse(job.error, status_code=job.error["error"]["status"])
    return JSONResponse({"job": job.id, "events": f"/api/jobs/{job.id}/events"}, status_code=202)


@router.get("/api/jobs/{job_id}")
async def get_job(job_id: str, request: Request) -> Response:
    """A start or pull job's progress and outcome."""
    job = state_of(request).jobs.get(job_id)
    if job is None:
        raise NotFound(f"no job {job_id!r}")
    return JSONResponse(_job_json(job))


def _job_json(job: StartJob) -> dict[str, Any]:
    return {
        "id": job.id,
        "kind": job.kind,
        "model_id": job.model_id,
        "events": list(job.events),
        "done": job.done,
        "deployment": job.deployment,
        "model": job.model,
        "error": job.error,
    }


@router.get("/api/catalog")
async def catalog(request: Request) -> Response:
    """What the start form offers: the models that can be started, and the hosts."""
    dash = state_of(request)
    available = await call(dash.services.models.available)
    hosts = await call(dash.services.hosts.records)
    return JSONResponse(
        {
            "models": [available_json(m) for m in available],
            "hosts": [{"id": h.id, "name": h.name, "local": h.local} for h in hosts],
        }
    )


@router.get("/api/hosts")
async def list_hosts(request: Request) -> Response:
    """Every host with its usage."""
    return JSONResponse({"hosts": await call(collect_hosts, state_of(request))})
