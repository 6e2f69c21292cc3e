"""LM Studio's websocket protocol, the part its Python SDK (1.5) uses: frames, infos, configs.

Pure functions only; `session.py` does the I/O. Shapes follow the SDK's own schemas
(`lmstudio/_sdk_models`): a missing required field or a bad enum value fails the client's
msgspec validation, extra fields are ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # the gateway imports this module where MLX is not installed
    from anvyl.modelserver.engine import FinishEvent

# Every namespace the SDK opens a websocket for; calls in any of them outside the subset below
# get an error that names them.
NAMESPACES = frozenset(
    {"llm", "embedding", "system", "diagnostics", "files", "repository", "plugins", "runtime"}
)
RPC_CALLS = frozenset(
    {
        "llm.listLoaded",
        "llm.getModelInfo",
        "llm.getLoadConfig",
        "llm.countTokens",
        "llm.tokenize",
        "llm.applyPromptTemplate",
        "embedding.listLoaded",
        "system.listDownloadedModels",
    }
)
CHANNELS = frozenset({"llm.getOrLoad", "llm.predict"})
SUPPORTED = ", ".join(sorted(RPC_CALLS | CHANNELS))

# The prompt template the SDK's `complete()` sends: the raw text, no chat formatting.
COMPLETION_TEMPLATE = "{% for message in messages %}{{ message['content'] }}{% endfor %}"
NO_MODEL_CODE = "generic.noModelMatchingQuery"  # the SDK raises LMStudioModelNotFoundError

StopReason = Literal[
    "eosFound", "stopStringFound", "maxPredictedTokensReached", "userStopped", "failed"
]
ReasoningType = Literal["none", "reasoning", "reasoningStartTag", "reasoningEndTag"]
DEFAULT_REASONING_TAGS = ("<think>", "</think>")


class ProtocolError(Exception):
    """A refusal sent to the client as `rpcError`, `channelError` or a failed hello."""

    def __init__(
        self, title: str, *, suggestion: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(title)
        self.title = title
        self.suggestion = suggestion
        self.code = code

    def error(self) -> dict[str, Any]:
        """LM Studio's serialized error (`title`, optional `suggestion` and `displayData`)."""
        out: dict[str, Any] = {"title": self.title}
        if self.suggestion:
            out["suggestion"] = self.suggestion
        if self.code:
            out["displayData"] = {"code": self.code}
        return out


def unsupported(namespace: str, endpoint: str, kind: str) -> ProtocolError:
    """The refusal of a call outside the subset."""
    return ProtocolError(
        f"Anvyl does not support the LM Studio {kind} '{namespace}.{endpoint}'",
        suggestion=f"This server supports: {SUPPORTED}.",
    )


# ---------------------------------------------------------------------------------- frames


def rpc_result(call_id: Any, result: Any) -> dict[str, Any]:
    """The answer to an `rpcCall` (no `result` key for a void answer)."""
    out: dict[str, Any] = {"type": "rpcResult", "callId": call_id}
    if result is not None:
        out["result"] = result
    return out


def rpc_error(call_id: Any, error: dict[str, Any]) -> dict[str, Any]:
    """A failed `rpcCall`."""
    return {"type": "rpcError", "callId": call_id, "error": error}


def channel_send(channel_id: Any, message: dict[str, Any]) -> dict[str, Any]:
    """One message on a channel."""
    return {"type": "channelSend", "channelId": channel_id, "message": message}


def channel_close(channel_id: Any) -> dict[str, Any]:
    """The server's end of a channel."""
    return {"type": "channelClose", "channelId": channel_id}


def channel_error(channel_id: Any, error: dict[str, Any]) -> dict[str, Any]:
    """A failed channel."""
    return {"type": "channelError", "channelId": channel_id, "error": error}


def warning(text: str) -> dict[str, Any]:
    """A `communicationWarning` (a frame this server could not read)."""
    return {"type": "communicationWarning", "warning": text}


# ---------------------------------------------------------------------------------- models


@dataclass(frozen=True)
class ServedModel:
    """What LM Studio's infos say about the one served model."""

    key: str
    arch: str
    context_length: int
    size_bytes: int
    trained_for_tools: bool = False  # its chat template knows tools (not Anvyl's generic format)

    def llm_info(self) -> dict[str, Any]:
        """`LlmInfo`: the model as `listDownloadedModels` lists it."""
        return {
            "type": "llm",
            "modelKey": self.key,
            # MLX weights are safetensors; LM Studio lists its MLX models the same way.
            "format": "safetensors",
            "displayName": self.key,
            "path": self.key,
            "sizeBytes": self.size_bytes,
            "vision": False,
            "trainedForToolUse": self.trained_for_tools,
            "maxContextLength": self.context_length,
            "architecture": self.arch,
        }

    def instance_info(self) -> dict[str, Any]:
        """`LlmInstanceInfo`: the model as loaded (`listLoaded`, `getModelInfo`)."""
        return self.llm_info() | {
            "identifier": self.key,
            "instanceReference": self.key,
            "contextLength": self.context_length,
        }

    def load_result(self, already_loaded: bool) -> dict[str, Any]:
        """The `getOrLoad` channel's final message."""
        return {
            "type": "alreadyLoaded" if already_loaded else "success",
            "info": self.instance_info(),
        }

    def load_config(self) -> dict[str, Any]:
        """The load config as KV fields."""
        return {"fields": [{"key": "llm.load.contextLength", "value": self.context_length}]}

    def matches(self, specifier: Any) -> bool:
        """Whether a model specifier (query or instance reference) designates this model."""
        if not isinstance(specifier, dict):
            return False
        if specifier.get("type") == "instanceReference":
            return specifier.get("instanceReference") == self.key
        query = specifier.get("query", specifier)
        if not isinstance(query, dict):
            return False
        if query.get("domain") not in (None, "llm") or query.get("vision"):
            return False
        return all(query.get(k) in (None, self.key) for k in ("identifier", "path"))

    def not_found(self, what: Any) -> ProtocolError:
        """The refusal of another model."""
        return ProtocolError(
            f"No model matching {what!r}: this Anvyl server serves only {self.key!r}",
            suggestion="Start the other model with `anvyl model start` and connect to its port.",
            code=NO_MODEL_CODE,
        )


def describe_specifier(specifier: Any) -> str:
    """A short human name for a model specifier."""
    if isinstance(specifier, dict):
        if specifier.get("type") == "instanceReference":
            return str(specifier.get("instanceReference"))
        query = specifier.get("query", specifier)
        if isinstance(query, dict) and (query.get("identifier") or query.get("path")):
            return str(query.get("identifier") or query.get("path"))
    return repr(specifier)


# ---------------------------------------------------------------------------------- predict


@dataclass(frozen=True)
class PredictionConfig:
    """The prediction settings Anvyl honours, from a `predictionConfigStack`."""

    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    raw: bool = False  # the SDK's `complete()`: the prompt as is, no chat template
    structured: Any = None  # `llm.prediction.structured`: a JSON schema or GBNF setting
    tools: Any = None  # `llm.prediction.tools`: the tool array of `.act()`
    top_k: int | None = None  # `topKSampling` (None or 0: off)
    min_p: float | None = None  # `minPSampling` (None: off)
    repeat_penalty: float | None = None  # `repeatPenalty` (None or 1: off)
    # `reasoning.parsing`: the tags around reasoning fragments (None: parsing off)
    reasoning_tags: tuple[str, str] | None = DEFAULT_REASONING_TAGS

    def kv_fields(self, temperature: float, max_tokens: int) -> dict[str, Any]:
        """The effective config as KV fields (the `success` message's `predictionConfig`)."""
        return {
            "fields": [
                {"key": "llm.prediction.temperature", "value": temperature},
                {
                    "key": "llm.prediction.maxPredictedTokens",
                    "value": {"checked": True, "value": max_tokens},
                },
                {"key": "llm.prediction.stopStrings", "value": list(self.stop)},
                {
                    "key": "llm.prediction.topPSampling",
                    "value": {"checked": self.top_p is not None, "value": self.top_p or 1.0},
                },
                {"key": "llm.prediction.topKSampling", "value": self.top_k or 0},
                {
                    "key": "llm.prediction.minPSampling",
                    "value": {"checked": self.min_p is not None, "value": self.min_p or 0.0},
                },
                {
                    "key": "llm.prediction.repeatPenalty",
                    "value": {
                        "checked": self.repeat_penalty is not None,
                        "value": self.repeat_penalty or 1.0,
                    },
                },
            ]
        }


# Keys that change nothing here (llama.cpp threads, reasoning display, overflow policy, ...).
_IGNORED_PREFIXES = (
    "llm.prediction.llama.",
    "llm.prediction.reasoning.",
    "llm.prediction.speculativeDecoding.",
)
_IGNORED_KEYS = frozenset(
    {"llm.prediction.contextOverflowPolicy", "llm.prediction.toolCallStopStrings"}
)


def kv_fields(stack: Any) -> dict[str, Any]:
    """Collapse a KV config stack into key → value (later layers win)."""
    out: dict[str, Any] = {}
    layers = stack.get("layers", []) if isinstance(stack, dict) else []
    for layer in layers if isinstance(layers, list) else []:
        config = layer.get("config", {}) if isinstance(layer, dict) else {}
        for kv in config.get("fields", []) if isinstance(config, dict) else []:
            if isinstance(kv, dict) and isinstance(kv.get("key"), str):
                out[kv["key"]] = kv.get("value")
    return out


def prediction_config(stack: Any) -> PredictionConfig:
    """Read a `predictionConfigStack`; raise `ProtocolError` for a setting Anvyl cannot honour."""
    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    raw = False
    structured: Any = None
    tools: Any = None
    sampling: dict[str, Any] = {}
    reasoning_tags: tuple[str, str] | None = DEFAULT_REASONING_TAGS
    for key, value in kv_fields(stack).items():
        name = key.removeprefix("llm.prediction.")
        if name == "reasoning.parsing":
            reasoning_tags = _reasoning_tags(value)
            continue
        if key in _IGNORED_KEYS or key.startswith(_IGNORED_PREFIXES):
            continue
        if name == "temperature":
            temperature = _number(name, value, low=0.0)
        elif name == "maxPredictedTokens":
            checked, inner = _checkbox(name, value)
            max_tokens = int(_number(name, inner, low=1.0)) if checked else None
        elif name == "topPSampling":
            checked, inner = _checkbox(name, value)
            top_p = _number(name, inner, low=0.0, high=1.0) if checked else None
        elif name == "stopStrings":
            if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
                raise ProtocolError("stopStrings must be a list of strings")
            stop = tuple(s for s in value if s)
        elif name == "promptTemplate":
            raw = _is_completion_template(value)
        elif name == "structured":
            structured = value if isinstance(value, dict) and value.get("type") != "none" else None
        elif name == "tools":
            tools = value if isinstance(value, dict) and value.get("type") != "none" else None
        elif name in _SAMPLING:
            sampling[_SAMPLING[name]] = _sampling_setting(name, value)
        # Unknown keys are skipped, as LM Studio itself skips them.
    return PredictionConfig(
        temperature, max_tokens, top_p, stop, raw, structured, tools, **sampling,
        reasoning_tags=reasoning_tags,
    )  # fmt: skip


def _reasoning_tags(value: Any) -> tuple[str, str] | None:
    """`reasoning.parsing` ({enabled, startString, endString}): the tags, or None when off."""
    if not isinstance(value, dict) or not isinstance(value.get("enabled"), bool):
        raise ProtocolError("reasoning.parsing must be {enabled, startString, endString}")
    if not value["enabled"]:
        return None
    start = value.get("startString") or DEFAULT_REASONING_TAGS[0]
    end = value.get("endString") or DEFAULT_REASONING_TAGS[1]
    if not isinstance(start, str) or not isinstance(end, str):
        raise ProtocolError("reasoning.parsing startString and endString must be strings")
    return start, end


# The engine's samplers behind LM Studio's settings (PredictionConfig's field names).
_SAMPLING = {"topKSampling": "top_k", "minPSampling": "min_p", "repeatPenalty": "repeat_penalty"}


def _sampling_setting(name: str, value: Any) -> Any:
    """topKSampling (a number, 0 or less: off), minPSampling and repeatPenalty (checkboxes)."""
    if name == "topKSampling":
        if value is None:
            return None
        top_k = _number(name, value, low=float("-inf"))
        if top_k != int(top_k):
            raise ProtocolError(f"topKSampling must be a whole number, not {value!r}")
        return int(top_k) if top_k > 0 else None
    checked, inner = _checkbox(name, value)
    if not checked or inner is False:  # the SDK sends `False` as {checked: true, value: false}
        return None
    if name == "minPSampling":
        return _number(name, inner, low=0.0, high=1.0)
    penalty = _number(name, inner, low=0.0, high=10.0)
    if penalty == 0:
        raise ProtocolError("repeatPenalty must be above 0 (1 is off)")
    return None if penalty == 1 else penalty


def _number(name: str, value: Any, *, low: float, high: float | None = None) -> float:
    """A numeric setting within bounds."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError(f"{name} must be a number, not {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ProtocolError(f"{name} must be {bound}, not {value!r}")
    return float(value)


def _checkbox(name: str, value: Any) -> tuple[bool, Any]:
    """A `{checked, value}` setting."""
    if not isinstance(value, dict):
        raise ProtocolError(f"{name} must be {{checked, value}}, not {value!r}")
    return bool(value.get("checked", False)), value.get("value")


def _is_completion_template(value: Any) -> bool:
    """True for the SDK's text-completion template; any other template is refused."""
    template = None
    if isinstance(value, dict) and value.get("type") == "jinja":
        inner = value.get("jinjaPromptTemplate")
        template = inner.get("template") if isinstance(inner, dict) else None
    if template == COMPLETION_TEMPLATE:
        return True
    raise ProtocolError(
        "Anvyl uses the model's own chat template; custom prompt templates are not supported"
    )


def chat_messages(history: Any) -> list[dict[str, str]]:
    """The chat history as plain `{role, content}` dicts; refuses files, images and tools."""
    messages = history.get("messages") if isinstance(history, dict) else None
    if not isinstance(messages, list) or not messages:
        raise ProtocolError("the prediction has no messages")
    out: list[dict[str, str]] = []
    for message in messages:
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("system", "user", "assistant"):
            raise ProtocolError(f"Anvyl does not support {role!r} messages (tool use) yet")
        parts = message.get("content", [])
        texts: list[str] = []
        for part in parts if isinstance(parts, list) else [parts]:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and part.get("type") == "text":
                texts.append(str(part.get("text", "")))
            else:
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise ProtocolError(f"Anvyl does not support {kind!r} message parts (text only)")
        out.append({"role": role, "content": "".join(texts)})
    return out


def fragment(text: str, reasoning: ReasoningType = "none", tokens: int = 1) -> dict[str, Any]:
    """One `fragment` message: a decoded piece of the reply, of `tokens` tokens, typed as
    reasoning or not (see reasoning.py)."""
    return {
        "type": "fragment",
        "fragment": {
            "content": text,
            "tokensCount": tokens,
            "containsDrafted": False,
            "reasoningType": reasoning,
        },
    }


def stop_reason(finish: FinishEvent, stop: Sequence[str], *, user_stopped: bool) -> StopReason:
    """LM Studio's stop reason for an engine finish."""
    if finish.reason == "cancelled" and user_stopped:
        return "userStopped"
    if finish.reason == "length":
        return "maxPredictedTokensReached"
    if finish.reason == "stop":
        # The engine's "stop" covers both; without stop strings it can only be the EOS token.
        # With some, it is taken as a stop string (the finish does not say which one fired).
        return "stopStringFound" if stop else "eosFound"
    return "failed"


def stats(finish: FinishEvent, reason: StopReason) -> dict[str, Any]:
    """`LlmPredictionStats` of a finished prediction."""
    return {
        "stopReason": reason,
        "tokensPerSecond": round(finish.tokens_per_second, 3),
        "timeToFirstTokenSec": round(finish.time_to_first_token, 4),
        "promptTokensCount": finish.prompt_tokens,
        "predictedTokensCount": finish.completion_tokens,
        "totalTokensCount": finish.prompt_tokens + finish.completion_tokens,
    }
