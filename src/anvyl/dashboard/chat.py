"""The playground's chat proxy: the browser talks only to the dashboard, never to a model."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from anvyl.dashboard.events import event_stream, sse
from anvyl.dashboard.protocol import ChatRequest, error_body
from anvyl.dashboard.state import call, state_of
from anvyl.errors import NotFound, RuntimeUnavailable
from anvyl.services.ondemand import OnDemand
from anvyl.store.deployments import DeploymentRecord

CHAT_TIMEOUT = httpx.Timeout(connect=5.0, read=300.0, write=30.0, pool=5.0)

router = APIRouter()


@router.post("/api/chat")
async def chat(body: ChatRequest, request: Request) -> Response:
    """Stream a chat completion from a deployment, so the browser talks only to the dashboard."""
    dash = state_of(request)
    try:
        record: DeploymentRecord = await call(dash.services.models.find, body.deployment)
    except NotFound:  # a stopped model named by its id: load it on demand, then chat
        await call(load_on_demand, dash.services.ondemand, body.deployment)
        record = await call(dash.services.models.find, body.deployment)
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
        raise RuntimeUnavailable(
            f"{record.name} does not answer at {endpoint.base_url} ({exc})"
        ) from exc
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


def load_on_demand(demand: OnDemand, model_id: str) -> None:
    """Start `model_id` on demand (joining a start under way) and wait until it is ready;
    NotFound when no model has that id. The browser's request waits meanwhile."""
    load = demand.join(model_id)
    if load is None:
        return  # one runs already
    try:
        load.future.result(timeout=demand.policy.load_timeout_s)
    except TimeoutError as exc:
        raise RuntimeUnavailable(
            f"{model_id} is still loading after {demand.policy.load_timeout_s:.0f} s; "
            "send again shortly"
        ) from exc
    finally:
        demand.leave(load)


def _upstream_message(raw: bytes, status: int) -> str:
    """The message of an OpenAI-shaped error body, or the raw text."""
    try:
        data = json.loads(raw)
        return str(data["error"]["message"])
    except (ValueError, KeyError, TypeError):
        text = raw.decode("utf-8", "replace").strip()
        return text[:500] or f"the model answered HTTP {status}"
