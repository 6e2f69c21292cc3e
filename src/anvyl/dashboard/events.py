"""The dashboard's server-sent events: sampled deployments, hosts, a start's progress, logs."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import StreamingResponse

from anvyl.dashboard.protocol import anvyl_error_body
from anvyl.dashboard.state import call, collect_hosts, snapshot_json, state_of
from anvyl.errors import AnvylError, InvalidArgument, NotFound
from anvyl.runtime import LogStream
from anvyl.store.deployments import DeploymentRecord

HEARTBEAT_S = 15.0
HOSTS_INTERVAL_S = 5.0
LOG_TAIL_DEFAULT = 200
LOG_TAIL_MAX = 5000

router = APIRouter()


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
async def job_events(job_id: str, request: Request) -> StreamingResponse:
    """`progress` events of a job, then `ready` (the deployment; a pull's model) or `failed`."""
    dash = state_of(request)
    job = dash.jobs.get(job_id)
    if job is None:
        raise NotFound(f"no job {job_id!r}")

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
                    yield sse("ready", job.result)
                return
            if time.monotonic() - last_sent > HEARTBEAT_S:
                last_sent = time.monotonic()
                yield b": keep-alive\n\n"
            await asyncio.sleep(0.2)

    return event_stream(body())


@router.get("/api/models/{ref}/logs")
async def model_logs(ref: str, request: Request, tail: int = LOG_TAIL_DEFAULT) -> StreamingResponse:
    """`line` events: the container's last `tail` log lines, then new ones as they come."""
    dash = state_of(request)
    if not 0 <= tail <= LOG_TAIL_MAX:
        raise InvalidArgument(f"tail must be between 0 and {LOG_TAIL_MAX}")
    record: DeploymentRecord = await call(dash.services.models.find, ref)
    stream: LogStream = await call(dash.services.models.logs, record.id, follow=True, tail=tail)
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
