"""One LM Studio websocket: the hello, then RPC calls and channels until the socket closes.

Each call and each channel runs as its own task, so a long prediction never blocks a
`cancel` or a second call on the same socket. Predictions go through the same engine,
queue limits and metrics as the OpenAI routes; a `cancel` message or a closed socket
cancels the engine request, which frees its batch slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.websockets import WebSocket

from anvyl.modelserver.engine import AsyncEvents, FinishEvent, GenerationRequest
from anvyl.modelserver.errors import APIError
from anvyl.modelserver.limits import max_new_tokens
from anvyl.modelserver.lmstudio import protocol as p
from anvyl.modelserver.lmstudio.framing import SocketSession
from anvyl.modelserver.lmstudio.reasoning import Fragments, FragmentTyper
from anvyl.modelserver.lmstudio.tooling import ToolEvents, chat_request, structured_grammar
from anvyl.modelserver.routes import check_ready, constrain, opens_thinking_in, tokenize
from anvyl.modelserver.sampling import SamplingParams
from anvyl.modelserver.state import ServerState
from anvyl.modelserver.structured import plan_tools
from anvyl.modelserver.thinking import OPEN
from anvyl.modelserver.tool_prompt import template_messages
from anvyl.modelserver.tools import FORMATS

log = logging.getLogger("anvyl.modelserver")

READY_POLL_S = 0.1
KEY_REFUSED = p.ProtocolError(
    "This Anvyl model server requires an API key, and the LM Studio SDK (1.5) cannot send one",
    suggestion=(
        "Use the OpenAI-compatible API with 'Authorization: Bearer <key>', or start the model"
        " without --api-key to use the LM Studio SDK."
    ),
)


@dataclass
class _Channel:
    """A running channel: its task and, once submitted, its engine request."""

    task: asyncio.Task[None] | None = None
    request_id: str | None = None
    cancelled: bool = False


class Session(SocketSession):
    """The server side of one websocket in one LM Studio namespace."""

    def __init__(self, ws: WebSocket, namespace: str, state: ServerState) -> None:
        super().__init__(ws, namespace)
        self.state = state
        self._channels: dict[Any, _Channel] = {}

    def refusal(self) -> p.ProtocolError | None:
        """A server with a key refuses the SDK (it cannot send one): with a reason."""
        key = self.state.config.api_key
        return KEY_REFUSED if key and not self.credential_matches(key) else None

    def on_channel_message(self, channel_id: Any, message: Any) -> None:
        """A `cancel` stops the channel's engine request."""
        channel = self._channels.get(channel_id)
        if channel is not None and isinstance(message, dict) and message.get("type") == "cancel":
            channel.cancelled = True
            self._cancel(channel)

    async def closed(self) -> None:
        """Cancel every engine request the socket started."""
        for channel in list(self._channels.values()):
            self._cancel(channel)
            if channel.task is not None:
                channel.task.cancel()

    def _cancel(self, channel: _Channel) -> None:
        """Cancel a channel's engine request, if it has one."""
        if channel.request_id is not None:
            self.state.engine.cancel(channel.request_id)

    # ------------------------------------------------------------------ calls

    async def on_call(self, call_id: Any, endpoint: str, param: Any) -> None:
        """Answer one `rpcCall`."""
        name = f"{self.namespace}.{endpoint}"
        handler = self._rpc_handlers().get(name)
        try:
            if handler is None:
                raise p.unsupported(self.namespace, endpoint, "call")
            result = await handler(param)
        except p.ProtocolError as err:
            self._count(name, 400)
            await self.send(p.rpc_error(call_id, err.error()))
            return
        except APIError as exc:
            self._count(name, exc.status)
            await self.send(p.rpc_error(call_id, {"title": exc.message}))
            return
        except Exception as exc:
            self._count(name, 500)
            log.exception("LM Studio call %s.%s failed", self.namespace, endpoint)
            await self.send(
                p.rpc_error(call_id, {"title": f"internal error: {type(exc).__name__}"})
            )
            return
        self._count(name, 200)
        await self.send(p.rpc_result(call_id, result))

    def _count(self, name: str, status: int) -> None:
        """Count a call or channel in `anvyl_requests` beside the HTTP routes (bounded labels)."""
        known = name in p.RPC_CALLS or name in p.CHANNELS
        endpoint = f"lmstudio:{name}" if known else "lmstudio:other"
        self.state.engine.metrics.requests.labels(endpoint, str(status)).inc()

    def _rpc_handlers(self) -> dict[str, Callable[[Any], Awaitable[Any]]]:
        """The supported calls by `namespace.endpoint`."""
        return {
            "llm.listLoaded": self._list_loaded,
            "llm.getModelInfo": self._model_info,
            "llm.getLoadConfig": self._load_config,
            "llm.countTokens": self._count_tokens,
            "llm.tokenize": self._tokenize,
            "llm.applyPromptTemplate": self._apply_template,
            "embedding.listLoaded": self._nothing_loaded,
            "system.listDownloadedModels": self._list_downloaded,
        }

    async def _list_loaded(self, _: Any) -> list[dict[str, Any]]:
        """The served model once it can serve."""
        return [self._model().instance_info()] if self.state.engine.state == "ready" else []

    async def _nothing_loaded(self, _: Any) -> list[dict[str, Any]]:
        """No embedding models here."""
        return []

    async def _list_downloaded(self, _: Any) -> list[dict[str, Any]]:
        """The served model is the one model on disk."""
        return [self._model().llm_info()]

    async def _model_info(self, param: Any) -> dict[str, Any] | None:
        """The instance info of the served model, if the specifier names it."""
        specifier = param.get("specifier") if isinstance(param, dict) else None
        model = self._model()
        if model.matches(specifier):
            return model.instance_info()
        if isinstance(param, dict) and param.get("throwIfNotFound"):
            raise model.not_found(p.describe_specifier(specifier))
        return None

    async def _load_config(self, param: Any) -> dict[str, Any]:
        """The served model's load config."""
        self._check_specifier(param)
        return self._model().load_config()

    async def _tokenize(self, param: Any) -> dict[str, Any]:
        """Token ids of a string."""
        return {"tokens": await self._encode(param)}

    async def _count_tokens(self, param: Any) -> dict[str, Any]:
        """How many tokens a string takes."""
        return {"tokenCount": len(await self._encode(param))}

    async def _encode(self, param: Any) -> list[int]:
        """Encode the call's `inputString` with the model's tokenizer."""
        self._check_specifier(param)
        text = param.get("inputString")
        if not isinstance(text, str):
            raise p.ProtocolError("inputString must be a string")
        check_ready(self.state)
        return await tokenize(self.state, lambda tok: tok.encode(text))

    async def _apply_template(self, param: Any) -> dict[str, Any]:
        """The chat template applied to a history, as text."""
        self._check_specifier(param)
        messages = p.chat_messages(param.get("history"))
        check_ready(self.state)
        loaded = self.state.engine.loaded
        assert loaded is not None

        def run() -> str:
            with self.state.tokenizer_lock:
                return str(
                    loaded.tokenizer.apply_chat_template(
                        messages, add_generation_prompt=True, tokenize=False
                    )
                )

        return {"formatted": await run_in_threadpool(run)}

    def _check_specifier(self, param: Any) -> None:
        """Refuse a call about another model."""
        specifier = param.get("specifier") if isinstance(param, dict) else None
        model = self._model()
        if not model.matches(specifier):
            raise model.not_found(p.describe_specifier(specifier))

    # ------------------------------------------------------------------ channels

    def on_channel(self, channel_id: Any, endpoint: str, param: Any) -> None:
        """Start one channel's task."""
        name = f"{self.namespace}.{endpoint}"
        if channel_id in self._channels:
            self.spawn(self.send(p.warning(f"channel {channel_id!r} is already open")))
            return
        channel = _Channel()
        self._channels[channel_id] = channel
        if name == "llm.predict":
            body: Awaitable[None] = self._predict(channel_id, channel, param)
        elif name == "llm.getOrLoad":
            body = self._get_or_load(channel_id, param)
        elif name == "llm.loadModel":
            body = self._fail(
                channel_id,
                p.ProtocolError(
                    f"Anvyl serves one model per server ({self.state.config.model_id!r});"
                    " use client.llm.model(key) to get it",
                    suggestion="Start other models with `anvyl model start`.",
                ),
            )
        else:
            body = self._fail(channel_id, p.unsupported(self.namespace, endpoint, "channel"))
        channel.task = asyncio.ensure_future(self._run_channel(channel_id, name, body))

    async def _run_channel(self, channel_id: Any, name: str, body: Awaitable[None]) -> None:
        """Run a channel body; errors become `channelError`."""
        status = 499  # the client went away first (nginx's "client closed request")
        try:
            await body
            status = 200
        except p.ProtocolError as err:
            status = 400
            await self.send(p.channel_error(channel_id, err.error()))
        except APIError as exc:
            status = exc.status
            await self.send(p.channel_error(channel_id, {"title": exc.message}))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            status = 500
            log.exception("LM Studio channel %s failed", channel_id)
            await self.send(
                p.channel_error(channel_id, {"title": f"internal error: {type(exc).__name__}"})
            )
        finally:
            self._count(name, status)
            self._channels.pop(channel_id, None)

    async def _fail(self, channel_id: Any, err: p.ProtocolError) -> None:
        """A channel refused outright."""
        raise err

    async def _get_or_load(self, channel_id: Any, param: Any) -> None:
        """Hand out the served model (waiting while it loads); refuse any other key."""
        model = self._model()
        identifier = param.get("identifier") if isinstance(param, dict) else None
        if identifier != model.key:
            raise model.not_found(identifier)
        loading = self.state.engine.state == "loading"
        if loading:
            await self.send(p.channel_send(channel_id, {"type": "startLoading"}))
        while self.state.engine.state == "loading":
            await asyncio.sleep(READY_POLL_S)
        check_ready(self.state)
        await self.send(p.channel_send(channel_id, model.load_result(not loading)))
        await self.send(p.channel_close(channel_id))

    async def _predict(self, channel_id: Any, channel: _Channel, param: Any) -> None:
        """Generate a reply: one `fragment` per decoded piece, then `success` with stats."""
        if not isinstance(param, dict):
            raise p.ProtocolError("predict needs a creation parameter")
        model = self._model()
        specifier = param.get("modelSpecifier")
        if not model.matches(specifier):
            raise model.not_found(p.describe_specifier(specifier))
        config = p.prediction_config(param.get("predictionConfigStack"))
        check_ready(self.state)
        prompt, grammar, tool_events = await self._prompt(param.get("history"), config)
        limit = max_new_tokens(
            config.max_tokens,
            len(prompt),
            self.state.context_length(),
            self.state.config.max_tokens_limit,
        )
        temperature = (
            self.state.config.default_temperature
            if config.temperature is None
            else config.temperature
        )
        events = AsyncEvents()
        gen = GenerationRequest(
            prompt=prompt,
            max_tokens=limit,
            sink=events.sink,
            sampling=SamplingParams(
                temperature=temperature,
                top_p=config.top_p or 1.0,
                top_k=config.top_k or 0,
                min_p=config.min_p or 0.0,
                repetition_penalty=config.repeat_penalty or 1.0,
            ),
            stop=config.stop,
            grammar=grammar,
        )
        if channel.cancelled:  # cancelled while the prompt was being built
            finish = FinishEvent("cancelled", len(prompt), 0, 0.0, 0.0)
        else:
            self.state.engine.submit(gen)
            channel.request_id = gen.id
            if channel.cancelled:
                self._cancel(channel)
            fragments = Fragments(await self._typer(prompt, grammar, config), tool_events)
            try:
                async for event in events:
                    if isinstance(event, FinishEvent):
                        messages = fragments.end()
                    else:
                        messages = fragments.feed(event.text, event.tokens)
                    for message in messages:
                        await self.send(p.channel_send(channel_id, message))
            finally:
                self.state.engine.cancel(gen.id)
            assert events.finish is not None
            finish = events.finish
        if finish.reason == "error" or (finish.reason == "cancelled" and not channel.cancelled):
            title = finish.error or "the prediction was cancelled (the server is shutting down)"
            await self.send(
                p.channel_send(channel_id, {"type": "error", "error": {"title": title}})
            )
        else:
            reason = p.stop_reason(finish, config.stop, user_stopped=channel.cancelled)
            success = {
                "type": "success",
                "stats": p.stats(finish, reason),
                "modelInfo": model.instance_info(),
                "loadModelConfig": model.load_config(),
                "predictionConfig": config.kv_fields(temperature, limit),
            }
            await self.send(p.channel_send(channel_id, success))
        await self.send(p.channel_close(channel_id))

    async def _typer(
        self, prompt: list[int], grammar: Any, config: p.PredictionConfig
    ) -> FragmentTyper | None:
        """Types reasoning fragments as LM Studio does (None: `reasoning.parsing` is off)."""
        if config.reasoning_tags is None:
            return None
        start, end = config.reasoning_tags
        inside = start == OPEN and await opens_thinking_in(
            self.state, prompt, constrained=grammar is not None
        )
        return FragmentTyper(inside=inside, start=start, end=end)

    async def _prompt(
        self, history: Any, config: p.PredictionConfig
    ) -> tuple[list[int], Any, ToolEvents | None]:
        """Prompt tokens, grammar processor and tool-call translator of a prediction."""
        if config.raw:
            messages = p.chat_messages(history)
            text = "".join(m["content"] for m in messages)
            prompt = await tokenize(self.state, lambda tok: tok.encode(text))
            grammar = await constrain(
                self.state, structured_grammar(config.structured), "structured"
            )
            return prompt, grammar, None
        body = chat_request(history, self.state.config.model_id, config.tools)
        fmt = FORMATS[self.state.tool_format() or "generic"]
        grammars = self.state.engine.grammars
        plan = await run_in_threadpool(plan_tools, body, fmt.name, grammars)
        chat, extra = template_messages(body, fmt, with_tools=plan is not None)
        prompt = await tokenize(
            self.state,
            lambda tok: tok.apply_chat_template(chat, add_generation_prompt=True, **extra),
        )
        if plan is not None:
            return prompt, await constrain(self.state, plan.grammar, "tools"), ToolEvents(plan.fmt)
        grammar = await constrain(self.state, structured_grammar(config.structured), "structured")
        return prompt, grammar, None

    # ------------------------------------------------------------------ model

    def _model(self) -> p.ServedModel:
        """The served model as LM Studio describes it."""
        info = self.state.model_info()
        return p.ServedModel(
            key=self.state.config.model_id,
            arch=info.arch if info else "unknown",
            context_length=info.context_length if info else 0,
            size_bytes=weights_size(self.state.config.model_path),
            trained_for_tools=self.state.tool_format() not in (None, "generic"),
        )


_sizes: dict[Path, int] = {}


def weights_size(model_dir: Path) -> int:
    """Bytes of the model's weight files (read once per directory)."""
    size = _sizes.get(model_dir)
    if size is None:
        with contextlib.suppress(OSError):
            size = sum(f.stat().st_size for f in Path(model_dir).glob("*.safetensors"))
        _sizes[model_dir] = size = size or 0
    return size
