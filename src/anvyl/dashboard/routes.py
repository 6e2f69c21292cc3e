"""The dashboard's HTTP routes: pages, the JSON API, server-sent events, the chat proxy."""

from __future__ import annotations

import asyncio
import html
import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.responses import StreamingResponse

from anvyl.dashboard import auth
from anvyl.dashboard.history import Sampler
from anvyl.dashboard.jobs import StartJob, StartJobs
from anvyl.dashboard.protocol import (
    ChatRequest,
    StartRequest,
    anvyl_error_body,
    available_json,
    deployment_json,
    error_body,
    health_json,
    host_json,
    http_status,
)
from anvyl.errors import AnvylError
from anvyl.runtime import LogStream
from anvyl.services import HostMetrics, Services
from anvyl.store.deployments import DeploymentRecord

PAGES_DIR = Path(__file__).parent / "pages"
STATIC_DIR = Path(__file__).parent / "static"
HEARTBEAT_S = 15.0
HOSTS_INTERVAL_S = 5.0
VALIDATION_WAIT_S = 60.0
LOG_TAIL_DEFAULT = 200
LOG_TAIL_MAX = 5000
CHAT_TIMEOUT = httpx.Timeout(connect=5.0, read=300.0, write=30.0, pool=5.0)
NAV = (
    ("models", "/models", "Models"),
    ("hosts", "/hosts", "Hosts"),
    ("start", "/start", "Start a model"),
    ("playground", "/playground", "Playground"),
)


@dataclass
class DashboardState:
    """What the routes share: the services, the sampler, the start jobs, the token."""

    services: Services
    sampler: Sampler
    jobs: StartJobs
    token: str | None
    closing: threading.Event


router = APIRouter()


def state_of(request: Request) -> DashboardState:
    """The dashboard state on `app.state` (and a sign of use: the sampler keeps sampling)."""
    dash: DashboardState = request.app.state.dashboard
    dash.sampler.touch()
    return dash


def error_response(exc: AnvylError) -> JSONResponse:
    """An Anvyl error as JSON with its HTTP status."""
    return JSONResponse(anvyl_error_body(exc), status_code=http_status(exc))


async def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a blocking service call off the event loop."""
    return await asyncio.to_thread(fn, *args, **kwargs)


# -- pages -------------------------------------------------------------------------------


def render_page(page: str, title: str, *, data: dict[str, str] | None = None) -> HTMLResponse:
    """The layout around one page's body; `data` becomes data-* attributes of <main>."""
    layout = (PAGES_DIR / "layout.html").read_text()
    body = (PAGES_DIR / f"{page}.html").read_text()
    current = ' aria-current="page"'
    nav = "\n".join(
        f'<a href="{href}"{current if key == page else ""}>{label}</a>' for key, href, label in NAV
    )
    attrs = " ".join(f'data-{k}="{html.escape(v)}"' for k, v in (data or {}).items())
    script = ""
    if (STATIC_DIR / f"{page}.js").is_file():
        script = f'<script src="/static/{page}.js" defer></script>'
    text = (
        layout.replace("{{title}}", html.escape(title))
        .replace("{{script}}", script)
        .replace("{{nav}}", nav)
        .replace("{{page}}", page)
        .replace("{{data}}", attrs)
        .replace("{{body}}", body)
    )
    return HTMLResponse(text, headers={"Cache-Control": "no-store"})


@router.get("/", include_in_schema=False)
async def index() -> RedirectResponse:
    """The models page is the home page."""
    return RedirectResponse("/models", status_code=303)


@router.get("/models", include_in_schema=False)
async def models_page() -> HTMLResponse:
    """Every deployment with live charts."""
    return render_page("models", "Models")


@router.get("/models/{name}", include_in_schema=False)
async def model_page(name: str) -> HTMLResponse:
    """One deployment: settings, labels, health history, logs, stop."""
    return render_page("detail", name, data={"name": name})


@router.get("/hosts", include_in_schema=False)
async def hosts_page() -> HTMLResponse:
    """Every host with its usage and models."""
    return render_page("hosts", "Hosts")


@router.get("/start", include_in_schema=False)
async def start_page() -> HTMLResponse:
    """The start form."""
    return render_page("start", "Start a model")


@router.get("/playground", include_in_schema=False)
async def playground_page() -> HTMLResponse:
    """The chat playground."""
    return render_page("playground", "Playground")


@router.get("/login", include_in_schema=False)
async def login_page(request: Request) -> Response:
    """The login form (only useful when a token is configured)."""
    if state_of(request).token is None:
        return RedirectResponse("/models", status_code=303)
    return _login_form(request.query_params.get("next", "/"), "")


@router.post("/login", include_in_schema=False)
async def login(request: Request) -> Response:
    """Check the token; set the session cookie and go back, or show the form again."""
    token = state_of(request).token
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    target = auth.safe_next((form.get("next") or ["/"])[0])
    if token is None:
        return RedirectResponse(target, status_code=303)
    given = (form.get("token") or [""])[0].strip()
    if not auth.token_matches(token, given):
        return _login_form(target, "That token is not right.", status=401)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        auth.SESSION_COOKIE,
        auth.session_value(token),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


@router.post("/logout", include_in_schema=False)
async def logout() -> Response:
    """Drop the session cookie."""
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(auth.SESSION_COOKIE, path="/")
    return response


def _login_form(target: str, error: str, status: int = 200) -> HTMLResponse:
    page = render_page("login", "Log in", data={"next": auth.safe_next(target)})
    body = page.body.decode()
    body = body.replace("{{next}}", html.escape(auth.safe_next(target)))
    body = body.replace("{{error}}", html.escape(error))
    return HTMLResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


# -- JSON API ------------------------------------------------------------------------------


def snapshot_json(dash: DashboardState) -> dict[str, Any]:
    """The latest sample of every deployment, with chart points and health history."""
    snap = dash.sampler.snapshot
    history = dash.sampler.history
    deployments = []
    for view in snap.views:
        item = deployment_json(view, history.samples(view.record.id))
        item["health"] = health_json(history.health(view.record.id))
        deployments.append(item)
    return {
        "version": snap.version,
        "taken_at": snap.taken_at,
        "interval": dash.sampler.interval,
        "error": snap.error,
        "deployments": deployments,
    }


@router.get("/api/models")
async def list_models(request: Request) -> dict[str, Any]:
    """The deployments as last sampled."""
    return snapshot_json(state_of(request))


@router.get("/api/models/{ref}")
async def get_model(ref: str, request: Request) -> Response:
    """One deployment: the sampled view, its labels, health history and chart points."""
    dash = state_of(request)
    try:
        record: DeploymentRecord = await call(dash.services.models.find, ref)
    except AnvylError as exc:
        return error_response(exc)
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
    except AnvylError as exc:
        return error_response(exc)
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


@router.get("/api/jobs/{job_id}")
async def get_job(job_id: str, request: Request) -> Response:
    """A start job's progress and outcome."""
    job = state_of(request).jobs.get(job_id)
    if job is None:
        return JSONResponse(error_body(f"no start job {job_id!r}", 404, "NOT_FOUND"), 404)
    return JSONResponse(_job_json(job))


def _job_json(job: StartJob) -> dict[str, Any]:
    return {
        "id": job.id,
        "model_id": job.model_id,
        "events": list(job.events),
        "done": job.done,
        "deployment": job.deployment,
        "error": job.error,
    }


@router.get("/api/catalog")
async def catalog(request: Request) -> Response:
    """What the start form offers: the models that can be started, and the hosts."""
    dash = state_of(request)
    try:
        available = await call(dash.services.models.available)
        hosts = await call(dash.services.hosts.records)
    except AnvylError as exc:
        return error_response(exc)
    return JSONResponse(
        {
            "models": [available_json(m) for m in available],
            "hosts": [{"id": h.id, "name": h.name, "local": h.local} for h in hosts],
        }
    )


def collect_hosts(dash: DashboardState) -> list[dict[str, Any]]:
    """Every host with its live status, its usage (local hosts) and the models on it."""
    hosts = dash.services.hosts.list_hosts()
    by_host: dict[str, set[str]] = {}
    for view in dash.sampler.snapshot.views:
        # A Swarm deployment is on the nodes its replicas run on; a container on its host.
        nodes = {r.node_id for r in view.replicas if r.node_id} or {view.record.host_id}
        for node in nodes:
            by_host.setdefault(node, set()).add(view.record.name)
    result = []
    for host in hosts:
        metrics: HostMetrics | None = None
        if host.reachable and host.local:
            try:
                metrics = dash.services.hosts.metrics(host.id)
            except AnvylError:
                metrics = None
        result.append(host_json(host, metrics, sorted(by_host.get(host.id, ()))))
    return result


@router.get("/api/hosts")
async def list_hosts(request: Request) -> Response:
    """Every host with its usage."""
    try:
        return JSONResponse({"hosts": await call(collect_hosts, state_of(request))})
    except AnvylError as exc:
        return error_response(exc)


# -- server-sent events --------------------------------------------------------------------


def sse(event: str, data: Any) -> bytes:
    """One server-sent event."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def event_stream(body: AsyncIterator[bytes]) -> StreamingResponse:
    """A text/event-stream response that proxies and browsers do not buffer."""
    return StreamingResponse(
        body,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@router.get("/api/events/models")
async def models_events(request: Request) -> StreamingResponse:
    """`models` events: the snapshot each time the sampler takes one."""
    dash = state_of(request)

    async def body() -> AsyncIterator[bytes]:
        version = -1
        last_sent = time.monotonic()
        while not dash.closing.is_set():
            dash.sampler.touch()
            snap = dash.sampler.snapshot
            if snap.version != version and snap.version > 0:
                version = snap.version
                last_sent = time.monotonic()
                yield sse("models", snapshot_json(dash))
            elif time.monotonic() - last_sent > HEARTBEAT_S:
                last_sent = time.monotonic()
                yield b": keep-alive\n\n"
            await asyncio.sleep(0.2)

    return event_stream(body())


@router.get("/api/events/hosts")
async def hosts_events(request: Request) -> StreamingResponse:
    """`hosts` events every few seconds (or `problem` when the engine cannot be read)."""
    dash = state_of(request)

    async def body() -> AsyncIterator[bytes]:
        while not dash.closing.is_set():
            dash.sampler.touch()
            try:
                yield sse("hosts", {"hosts": await call(collect_hosts, dash)})
            except AnvylError as exc:
                yield sse("problem", anvyl_error_body(exc))
            for _ in range(int(HOSTS_INTERVAL_S / 0.25)):
                if dash.closing.is_set():
                    return
                await asyncio.sleep(0.25)

    return event_stream(body())


@router.get("/api/jobs/{job_id}/events")
async def job_events(job_id: str, request: Request) -> Response:
    """`progress` events of a start, then `ready` (the deployment) or `failed` (the error)."""
    dash = state_of(request)
    job = dash.jobs.get(job_id)
    if job is None:
        return JSONResponse(error_body(f"no start job {job_id!r}", 404, "NOT_FOUND"), 404)

    async def body() -> AsyncIterator[bytes]:
        sent = 0
        last_sent = time.monotonic()
        while not dash.closing.is_set():
            events = job.events[sent:]
            for event in events:
                yield sse("progress", event)
            sent += len(events)
            if events:
                last_sent = time.monotonic()
            if job.done and sent == len(job.events):
                if job.error is not None:
                    yield sse("failed", job.error)
                else:
                    yield sse("ready", job.deployment)
                return
            if time.monotonic() - last_sent > HEARTBEAT_S:
                last_sent = time.monotonic()
                yield b": keep-alive\n\n"
            await asyncio.sleep(0.2)

    return event_stream(body())


@router.get("/api/models/{ref}/logs")
async def model_logs(ref: str, request: Request, tail: int = LOG_TAIL_DEFAULT) -> Response:
    """`line` events: the container's last `tail` log lines, then new ones as they come."""
    dash = state_of(request)
    if not 0 <= tail <= LOG_TAIL_MAX:
        return JSONResponse(
            error_body(f"tail must be between 0 and {LOG_TAIL_MAX}", 400, "INVALID_ARGUMENT"),
            400,
        )
    try:
        record: DeploymentRecord = await call(dash.services.models.find, ref)
        stream: LogStream = await call(dash.services.models.logs, record.id, follow=True, tail=tail)
    except AnvylError as exc:
        return error_response(exc)
    return event_stream(_log_events(stream, dash.closing))


async def _log_events(stream: LogStream, closing: threading.Event) -> AsyncIterator[bytes]:
    """Read the blocking log stream in a thread; close it when the browser goes away."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def reader() -> None:
        buffer = ""
        try:
            for chunk in stream:
                buffer += chunk.decode("utf-8", "replace")
                *lines, buffer = buffer.split("\n")
                for line in lines:
                    loop.call_soon_threadsafe(queue.put_nowait, ("line", line.rstrip("\r")))
            if buffer:
                loop.call_soon_threadsafe(queue.put_nowait, ("line", buffer))
            loop.call_soon_threadsafe(queue.put_nowait, ("end", "the log stream ended"))
        except AnvylError as exc:
            loop.call_soon_threadsafe(queue.put_nowait, ("problem", anvyl_error_body(exc)))
        except RuntimeError:  # the event loop is gone: the server is shutting down
            pass

    thread = threading.Thread(target=reader, name="anvyl-dashboard-logs", daemon=True)
    thread.start()
    try:
        while not closing.is_set():
            try:
                kind, data = await asyncio.wait_for(queue.get(), HEARTBEAT_S)
            except TimeoutError:
                yield b": keep-alive\n\n"
                continue
            yield sse(kind, data)
            if kind in ("end", "problem"):
                return
    finally:
        stream.close()


# -- chat proxy ----------------------------------------------------------------------------


@router.post("/api/chat")
async def chat(body: ChatRequest, request: Request) -> Response:
    """Stream a chat completion from a deployment, so the browser talks only to the dashboard."""
    dash = state_of(request)
    try:
        record: DeploymentRecord = await call(dash.services.models.find, body.deployment)
    except AnvylError as exc:
        return error_response(exc)
    headers = {"Content-Type": "application/json"}
    endpoint = await call(dash.services.models.endpoint, record)
    if endpoint.api_key:
        headers["Authorization"] = f"Bearer {endpoint.api_key}"
    payload = {
        "model": record.model_id,
        "messages": [m.model_dump() for m in body.messages],
        "max_tokens": body.max_tokens,
        "temperature": body.temperature,
        "stream": True,
    }
    client = httpx.AsyncClient(timeout=CHAT_TIMEOUT)
    upstream_request = client.build_request(
        "POST", f"{endpoint.base_url}/v1/chat/completions", json=payload, headers=headers
    )
    try:
        upstream = await client.send(upstream_request, stream=True)
    except httpx.HTTPError as exc:
        await client.aclose()
        message = f"{record.name} does not answer at {endpoint.base_url} ({exc})"
        return JSONResponse(error_body(message, 503, "UNAVAILABLE"), status_code=503)
    if upstream.status_code != 200:
        raw = await upstream.aread()
        await upstream.aclose()
        await client.aclose()
        return JSONResponse(
            error_body(_upstream_message(raw, upstream.status_code), upstream.status_code),
            status_code=upstream.status_code,
        )

    async def relay() -> AsyncIterator[bytes]:
        try:
            async for chunk in upstream.aiter_raw():
                yield chunk
        except httpx.HTTPError as exc:
            yield sse("problem", error_body(f"the model's stream broke: {exc}", 502))
        finally:
            await upstream.aclose()
            await client.aclose()

    return event_stream(relay())


def _upstream_message(raw: bytes, status: int) -> str:
    """The message of an OpenAI-shaped error body, or the raw text."""
    try:
        data = json.loads(raw)
        return str(data["error"]["message"])
    except (ValueError, KeyError, TypeError):
        text = raw.decode("utf-8", "replace").strip()
        return text[:500] or f"the model answered HTTP {status}"
