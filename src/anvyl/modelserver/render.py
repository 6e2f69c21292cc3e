"""Response bodies and SSE chunks of the OpenAI and LM Studio REST routes.

With tools, the generated text is parsed as it arrives (`tools.CallParser`): a block of calls
becomes `message.tool_calls` (`finish_reason: "tool_calls"`), streamed as each call's index, id
and name first and its argument fragments after; plain text stays `content`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from anvyl import __version__
from anvyl.modelserver.events import FinishEvent
from anvyl.modelserver.lmstudio.protocol import stop_reason
from anvyl.modelserver.logprobs import completion_logprobs
from anvyl.modelserver.protocol import Stats, Usage, new_id, now
from anvyl.modelserver.thinking import Part, ThinkSplitter, split_pieces
from anvyl.modelserver.tools import CallParser, ToolFormat

if TYPE_CHECKING:
    from anvyl.modelserver.state import ServerState


class Renderer:
    """Builds response bodies and chunks for one request."""

    def __init__(
        self, state: ServerState, *, chat: bool, lmstudio: bool, include_usage: bool, index: int = 0
    ) -> None:
        self.state = state
        self.index = index
        self.chat = chat
        self.lmstudio = lmstudio
        self.include_usage = include_usage
        self.id = new_id("chatcmpl" if chat else "cmpl")
        self.created = now()
        self.model = state.config.model_id
        self.stop: tuple[str, ...] = ()
        self.tools: ToolFormat | None = None
        self._parser: CallParser | None = None
        self._sent: dict[int, int] = {}  # call index -> argument characters sent
        self.think_inside = False  # the prompt opened `<think>` (see thinking.py)
        self._splitter: ThinkSplitter | None = None
        self._reasoning_tokens = 0  # of a whole answer

    @property
    def reasoning_tokens(self) -> int:
        """Generated tokens inside `<think>` tags (chat; 0 for completions)."""
        splitter = self._splitter
        return splitter.reasoning_tokens if splitter is not None else self._reasoning_tokens

    def _head(self, obj: str) -> dict[str, Any]:
        """Fields every body starts with."""
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    def _logprobs(self, entries: list[dict[str, Any]] | None) -> Any:
        """A choice's `logprobs` for `entries` (None when not asked for)."""
        if entries is None:
            return None
        return {"content": entries} if self.chat else completion_logprobs(entries)

    def whole(
        self,
        pieces: Sequence[tuple[str, int]],
        finish: FinishEvent,
        logprobs: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """A non-streaming response (one choice: this renderer's) from the generated text's
        pieces and how many tokens each came from."""
        text = "".join(piece for piece, _ in pieces)
        reasoning = ""
        if self.chat:
            reasoning, text, self._reasoning_tokens = split_pieces(pieces, inside=self.think_inside)
        usage = Usage.of(finish.prompt_tokens, finish.completion_tokens,
                         self._reasoning_tokens if self.chat else None)  # fmt: skip
        usage_body = usage.model_dump(exclude_none=True)
        if self.chat:
            message: dict[str, Any] = {"role": "assistant", "content": text}
            reason: str = finish.reason
            if self.tools is not None:
                parser = CallParser(self.tools)
                parser.feed(text)
                calls = parser.finished_calls()
                if calls:
                    message = {"role": "assistant", "content": None, "tool_calls": [
                        _call(c.id, c.name, c.arguments) for c in calls]}  # fmt: skip
                    reason = "tool_calls" if finish.reason == "stop" else finish.reason
            if reasoning:  # as llama.cpp's server and vLLM name it
                message["reasoning_content"] = reasoning
            choice = {
                "index": self.index,
                "message": message,
                "logprobs": self._logprobs(logprobs),
                "finish_reason": reason,
            }
            out = self._head("chat.completion") | {"choices": [choice], "usage": usage_body}
        else:
            choice = {"index": self.index, "text": text, "logprobs": self._logprobs(logprobs),
                      "finish_reason": finish.reason}  # fmt: skip
            out = self._head("text_completion") | {"choices": [choice], "usage": usage_body}
        if self.lmstudio:
            out |= self._lmstudio_extras(finish)
        return out

    def deltas(self, text: str, tokens: int = 0) -> list[Any]:
        """The chat deltas (text or dicts) for newly generated `text` (from `tokens` tokens):
        reasoning split off as `reasoning_content`, tool calls parsed."""
        if not self.chat:
            return [text]
        if self._splitter is None:
            self._splitter = ThinkSplitter(inside=self.think_inside)
        return self._parts(self._splitter.feed(text, tokens))

    def _parts(self, parts: list[Part]) -> list[Any]:
        out: list[Any] = []
        for kind, part in parts:
            if kind == "thinking":
                out.append({"reasoning_content": part})
            else:
                out += self._answer_deltas(part)
        return out

    def _answer_deltas(self, text: str) -> list[Any]:
        """The deltas of answer text (tool calls parsed)."""
        if self.tools is None:
            return [text]
        if self._parser is None:
            self._parser = CallParser(self.tools)
        parser = self._parser
        decided = parser.is_text is not None
        parser.feed(text)
        if parser.is_text:
            return [parser.text if not decided else text]
        out: list[Any] = []
        for call in parser.calls:
            if call.name is None:
                break
            if call.index not in self._sent:
                self._sent[call.index] = 0
                out.append({"tool_calls": [_call(call.id, call.name, "", index=call.index)]})
            fresh = call.arguments[self._sent[call.index] :]
            if fresh:
                self._sent[call.index] = len(call.arguments)
                out.append({"tool_calls": [{"index": call.index,
                                            "function": {"arguments": fresh}}]})  # fmt: skip
        return out

    def stream_end(self) -> list[Any]:
        """Text still held back when the stream ends (a cut-off tag or call opening)."""
        out = self._parts(self._splitter.end()) if self._splitter is not None else []
        parser = self._parser
        if parser is not None and parser.is_text is None and parser.text:
            out.append(parser.text)
        return out

    def chunk(
        self,
        delta: Any,
        finish: FinishEvent | None = None,
        logprobs: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """One streaming chunk: `delta` text or dict, or the finishing chunk."""
        reason: str | None = finish.reason if finish else None
        parser = self._parser
        if finish is not None and reason == "stop" and parser and parser.finished_calls():
            reason = "tool_calls"
        if self.chat:
            if isinstance(delta, str):
                delta = {"content": delta}
            choice = {"index": self.index, "delta": delta or {},
                      "logprobs": self._logprobs(logprobs), "finish_reason": reason}  # fmt: skip
            out = self._head("chat.completion.chunk") | {"choices": [choice]}
        else:
            choice = {"index": self.index, "text": delta or "",
                      "logprobs": self._logprobs(logprobs), "finish_reason": reason}  # fmt: skip
            out = self._head("text_completion") | {"choices": [choice]}
        if self.include_usage:
            out["usage"] = None
        if finish is not None and self.lmstudio:
            out |= self._lmstudio_extras(finish)
        return out

    def usage_chunk(self, finishes: list[FinishEvent], reasoning_tokens: int = 0) -> dict[str, Any]:
        """The final usage-only chunk of `stream_options.include_usage` (all choices)."""
        obj = "chat.completion.chunk" if self.chat else "text_completion"
        completion = sum(f.completion_tokens for f in finishes)
        usage = Usage.of(finishes[0].prompt_tokens, completion,
                         reasoning_tokens if self.chat else None)  # fmt: skip
        return self._head(obj) | {"choices": [], "usage": usage.model_dump(exclude_none=True)}

    def _lmstudio_extras(self, finish: FinishEvent) -> dict[str, Any]:
        """LM Studio's `stats`, `model_info` and `runtime`."""
        info = self.state.model_info()
        stats = Stats(
            tokens_per_second=round(finish.tokens_per_second, 3),
            time_to_first_token=round(finish.time_to_first_token, 4),
            generation_time=round(finish.generation_time, 4),
            stop_reason=stop_reason(finish, self.stop, user_stopped=False),
        )
        return {
            "stats": stats.model_dump(),
            "model_info": {
                "arch": info.arch if info else "unknown",
                "quant": info.quantization if info else "unknown",
                "format": "mlx",
                "context_length": info.context_length if info else 0,
            },
            "runtime": {
                "name": "anvyl-mlx",
                "version": __version__,
                "supported_formats": ["mlx"],
            },
        }


def _call(
    call_id: str, name: str | None, arguments: str, index: int | None = None
) -> dict[str, Any]:
    """One entry of `tool_calls` (with `index` in a stream)."""
    out: dict[str, Any] = {} if index is None else {"index": index}
    return out | {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }
