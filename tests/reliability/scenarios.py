"""Load scenarios against one model server, as clients see them (official `openai` SDK, async).

Shared by the slow tests and `bench/reliability.py`. Each scenario returns a `Tally`: what was
sent, what completed correctly, what was refused with 429 (and a Retry-After), what got a 5xx,
and what was lost (a stream cut without a finish_reason, a wrong usage count, any other error).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
from prometheus_client.parser import text_string_to_metric_families

PROMPT = "List three colours, one per line."


@dataclass
class Tally:
    """Outcome of one scenario, as the report prints it."""

    scenario: str
    injected: int = 0
    completed: int = 0
    rejected_429: int = 0
    server_errors: int = 0
    lost: int = 0
    health_failures: int = 0
    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        """Keep the first few reasons something was lost."""
        if len(self.notes) < 10:
            self.notes.append(text)

    def row(self) -> dict[str, Any]:
        """The report's columns."""
        return {
            "scenario": self.scenario,
            "injected": self.injected,
            "completed": self.completed,
            "429": self.rejected_429,
            "5xx": self.server_errors,
            "lost": self.lost,
        }


def metrics(base_url: str, api_key: str = "") -> dict[str, float]:
    """The server's Prometheus samples, summed over labels except `reason` (kept as name:reason)."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    text = httpx.get(f"{base_url}/metrics", headers=headers, timeout=30).text
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = sample.name
            if "reason" in sample.labels:
                key = f"{key}:{sample.labels['reason']}"
            values[key] = values.get(key, 0.0) + sample.value
    return values


def client(base_url: str, api_key: str = "") -> openai.AsyncOpenAI:
    """An SDK client that never retries on its own (a 429 must be seen, not hidden)."""
    return openai.AsyncOpenAI(
        base_url=f"{base_url}/v1", api_key=api_key or "none", max_retries=0, timeout=300
    )


async def reference_prompt_tokens(base_url: str, model: str, api_key: str = "") -> int:
    """`usage.prompt_tokens` of PROMPT, from one non-streamed request."""
    async with client(base_url, api_key) as sdk:
        reply = await sdk.chat.completions.create(
            model=model, messages=[{"role": "user", "content": PROMPT}], max_tokens=1
        )
    assert reply.usage is not None
    return reply.usage.prompt_tokens


async def _watch_health(base_url: str, stop: asyncio.Event, tally: Tally) -> None:
    """GET /health every 200 ms until `stop`; count every answer that is not 200."""
    async with httpx.AsyncClient(timeout=30) as http:
        while not stop.is_set():
            try:
                status = (await http.get(f"{base_url}/health")).status_code
            except httpx.HTTPError as exc:
                status = 0
                tally.note(f"/health: {exc!r}")
            if status != 200:
                tally.health_failures += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)


def _refused(tally: Tally, exc: openai.APIStatusError) -> None:
    """Count an HTTP error answer: a 429 with Retry-After, a 5xx, or a loss."""
    status = exc.status_code
    if status == 429 and exc.response.headers.get("retry-after", "").isdigit():
        tally.rejected_429 += 1
    elif status >= 500:
        tally.server_errors += 1
        tally.note(f"{status}: {exc.message}")
    else:
        tally.lost += 1
        tally.note(f"{status}: {exc.message}")


async def streaming_load(
    base_url: str,
    model: str,
    *,
    clients: int = 64,
    max_tokens: int = 8,
    api_key: str = "",
    scenario: str = "64 streaming clients",
) -> Tally:
    """`clients` concurrent streamed chats; each must finish with a correct usage or get 429."""
    tally = Tally(scenario, injected=clients)
    prompt_tokens = await reference_prompt_tokens(base_url, model, api_key)
    stop = asyncio.Event()
    watcher = asyncio.create_task(_watch_health(base_url, stop, tally))
    start = asyncio.Event()

    async def one(sdk: openai.AsyncOpenAI) -> None:
        await start.wait()
        finish: str | None = None
        usage: Any = None
        pieces = 0
        try:
            stream = await sdk.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": PROMPT}],
                max_tokens=max_tokens,
                stream=True,
                stream_options={"include_usage": True},
            )
            async for chunk in stream:
                for choice in chunk.choices:
                    pieces += 1 if choice.delta.content else 0
                    finish = choice.finish_reason or finish
                usage = chunk.usage or usage
        except openai.APIStatusError as exc:
            _refused(tally, exc)
            return
        except Exception as exc:  # a connection cut mid-stream, a parse error: lost
            tally.lost += 1
            tally.note(f"{type(exc).__name__}: {exc}")
            return
        problem = _check_usage(finish, usage, pieces, max_tokens, prompt_tokens)
        if problem:
            tally.lost += 1
            tally.note(problem)
        else:
            tally.completed += 1

    async with client(base_url, api_key) as sdk:
        tasks = [asyncio.create_task(one(sdk)) for _ in range(clients)]
        await asyncio.sleep(0)
        start.set()  # every client is waiting: they all send at once
        await asyncio.gather(*tasks)
    stop.set()
    await watcher
    return tally


def _check_usage(
    finish: str | None, usage: Any, pieces: int, max_tokens: int, prompt_tokens: int
) -> str:
    """Why a finished stream is wrong, or "" when its finish_reason and usage add up."""
    if finish not in ("stop", "length"):
        return f"stream ended without a finish_reason ({finish!r})"
    if usage is None:
        return "no usage in the stream"
    if usage.prompt_tokens != prompt_tokens:
        return f"prompt_tokens {usage.prompt_tokens} != {prompt_tokens}"
    if not 1 <= usage.completion_tokens <= max_tokens:
        return f"completion_tokens {usage.completion_tokens} outside 1..{max_tokens}"
    if finish == "length" and usage.completion_tokens != max_tokens:
        return f"finish 'length' after {usage.completion_tokens} of {max_tokens} tokens"
    if pieces > usage.completion_tokens:
        return f"{pieces} content chunks for {usage.completion_tokens} tokens"
    if usage.total_tokens != usage.prompt_tokens + usage.completion_tokens:
        return "total_tokens is not prompt + completion"
    return ""


async def disconnect_waves(
    base_url: str,
    model: str,
    *,
    waves: int = 5,
    per_wave: int = 20,
    max_tokens: int = 256,
    api_key: str = "",
    drain_timeout: float = 120.0,
) -> Tally:
    """Waves of clients that read the first token and hang up; the queue must drain each time.

    A client counts as completed when it saw its first token and closed; after each wave the
    server must show no active or waiting sequence within `drain_timeout`, and after all of them
    it must still answer a normal request.
    """
    tally = Tally(f"{waves * per_wave} clients disconnecting", injected=waves * per_wave)
    before = metrics(base_url, api_key)

    async def one(sdk: openai.AsyncOpenAI) -> None:
        try:
            stream = await sdk.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": "Write a very long story about the sea."}],
                max_tokens=max_tokens,
                stream=True,
            )
            async for chunk in stream:
                if any(c.delta.content for c in chunk.choices):
                    break  # first token seen: hang up mid-stream
            await stream.close()
            tally.completed += 1
        except openai.APIStatusError as exc:
            _refused(tally, exc)
        except Exception as exc:
            tally.lost += 1
            tally.note(f"{type(exc).__name__}: {exc}")

    for _ in range(waves):
        async with client(base_url, api_key) as sdk:
            await asyncio.gather(*(one(sdk) for _ in range(per_wave)))
        if not await _drained(base_url, api_key, drain_timeout):
            tally.lost += 1
            tally.note("the queue did not drain after a wave")
    after = metrics(base_url, api_key)
    cancelled = after.get("anvyl_generations_finished_total:cancelled", 0) - before.get(
        "anvyl_generations_finished_total:cancelled", 0
    )
    generated = after.get("anvyl_generated_tokens_total", 0) - before.get(
        "anvyl_generated_tokens_total", 0
    )
    tally.notes.insert(0, f"cancelled={cancelled:.0f} generated_tokens={generated:.0f}")
    # Nothing that hung up ran to its end: each was cancelled, not left generating.
    if cancelled < tally.completed:
        tally.lost += int(tally.completed - cancelled)
        tally.note(f"only {cancelled:.0f} of {tally.completed} hang-ups were cancelled")
    return tally


async def _drained(base_url: str, api_key: str, timeout: float) -> bool:
    """Wait until no sequence is active or waiting (True), or `timeout` passes (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        values = await asyncio.to_thread(metrics, base_url, api_key)
        if values.get("anvyl_active_sequences", 1) == 0 and values.get("anvyl_queue_depth", 1) == 0:
            return True
        await asyncio.sleep(0.1)
    return False
