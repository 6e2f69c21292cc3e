"""Request models, refusals of unsupported features and SSE framing."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from anvyl.modelserver.errors import InvalidRequest
from anvyl.modelserver.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    refuse_unsupported,
)
from anvyl.modelserver.streaming import SSE_DONE, sse_event
from anvyl.modelserver.tool_prompt import template_messages
from anvyl.modelserver.tools import FORMATS

BASE: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"messages": [{"role": "function", "content": "x"}]}, "messages[0]"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            "messages[0].content",
        ),
    ],
)
def test_unsupported_chat_features_are_refused(extra: dict[str, Any], param: str) -> None:
    """Each unsupported feature is a 400 naming its parameter, never ignored."""
    request = ChatCompletionRequest.model_validate(BASE | extra)
    with pytest.raises(InvalidRequest) as info:
        refuse_unsupported(request)
    assert info.value.param == param
    assert info.value.code == "unsupported_feature"


def test_supported_options_pass() -> None:
    """Plain text format, n=1, tool_choice none and text parts are fine."""
    request = ChatCompletionRequest.model_validate(
        BASE
        | {
            "n": 1,
            "response_format": {"type": "text"},
            "tool_choice": "none",
            "logprobs": False,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}]}],
        }
    )
    refuse_unsupported(request)


@pytest.mark.parametrize(
    "extra",
    [
        {"echo": True},
        {"suffix": "x"},
        {"best_of": 3},
    ],
)
def test_unsupported_completion_features_are_refused(extra: dict[str, Any]) -> None:
    """Completions refuse echo, suffix, best_of and n."""
    request = CompletionRequest.model_validate({"model": "m", "prompt": "x"} | extra)
    with pytest.raises(InvalidRequest):
        refuse_unsupported(request)


@pytest.mark.parametrize(
    "extra",
    [
        {"temperature": -0.1},
        {"temperature": 2.5},
        {"top_p": 0},
        {"max_tokens": 0},
        {"max_completion_tokens": -1},
        {"stop": [""]},
        {"stop": [str(i) for i in range(17)]},
        {"messages": []},
        {"messages": [{"role": "wizard", "content": "x"}]},
        {"presence_penalty": 3},
    ],
)
def test_out_of_range_fields_fail_validation(extra: dict[str, Any]) -> None:
    """Out-of-range values are rejected by the model itself."""
    with pytest.raises(ValidationError):
        ChatCompletionRequest.model_validate(BASE | extra)


def test_helpers() -> None:
    """Stop lists, max-token names, usage flag and message flattening."""
    r = ChatCompletionRequest.model_validate(
        BASE
        | {
            "stop": "x",
            "max_tokens": 5,
            "max_completion_tokens": 7,
            "stream": True,
            "stream_options": {"include_usage": True},
            "user": "extra fields are allowed",
            "messages": [
                {"role": "developer", "content": "be brief"},
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                },
            ],
        }
    )
    assert r.stop_list() == ("x",)
    assert r.requested_max_tokens() == 7
    assert r.include_usage()
    messages, extra = template_messages(r, FORMATS["generic"], with_tools=False)
    assert extra == {}
    assert messages == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "ab"},
    ]


def test_sse_framing() -> None:
    """One compact JSON object per `data:` line, a blank line after, `[DONE]` at the end."""
    event = sse_event({"text": "é\nx"})
    assert event.startswith(b"data: ") and event.endswith(b"\n\n")
    assert event.count(b"\n") == 2
    assert json.loads(event[6:]) == {"text": "é\nx"}
    assert SSE_DONE == b"data: [DONE]\n\n"
