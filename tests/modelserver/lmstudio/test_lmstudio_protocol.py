"""Pure pieces of the LM Studio protocol: configs, histories, model matching, stop reasons."""

from __future__ import annotations

from typing import Any

import pytest
from lmstudio._sdk_models import LlmInfo, LlmInstanceInfo, LlmPredictionStats

from anvyl.modelserver.engine import FinishEvent
from anvyl.modelserver.lmstudio import protocol as p

MODEL = p.ServedModel(key="smollm2-test", arch="llama", context_length=512, size_bytes=10)


def stack(*fields: tuple[str, Any]) -> dict[str, Any]:
    """A one-layer KV config stack."""
    kv = [{"key": f"llm.prediction.{k}", "value": v} for k, v in fields]
    return {"layers": [{"layerName": "apiOverride", "config": {"fields": kv}}]}


def test_prediction_config_reads_supported_settings() -> None:
    """Temperature, max tokens, top-p and stop strings are read; unknown keys are skipped."""
    config = p.prediction_config(
        stack(
            ("temperature", 0),
            ("maxPredictedTokens", {"checked": True, "value": 7}),
            ("topPSampling", {"checked": True, "value": 0.9}),
            ("stopStrings", ["\n\n", ""]),
            ("llama.cpuThreads", 4),
            ("someFutureKey", 1),
        )
    )
    assert config == p.PredictionConfig(temperature=0.0, max_tokens=7, top_p=0.9, stop=("\n\n",))
    unchecked = stack(("maxPredictedTokens", {"checked": False, "value": 7}))
    assert p.prediction_config(unchecked).max_tokens is None
    assert p.prediction_config({}) == p.PredictionConfig()


def test_prediction_config_reads_the_samplers() -> None:
    """topKSampling, minPSampling and repeatPenalty become the engine's samplers; off is None."""
    config = p.prediction_config(
        stack(
            ("topKSampling", 40),
            ("minPSampling", {"checked": True, "value": 0.05}),
            ("repeatPenalty", {"checked": True, "value": 1.3}),
        )
    )
    assert (config.top_k, config.min_p, config.repeat_penalty) == (40, 0.05, 1.3)
    off = p.prediction_config(
        stack(
            ("topKSampling", 0),
            ("minPSampling", {"checked": True, "value": False}),  # the SDK's `False`
            ("repeatPenalty", {"checked": True, "value": 1}),
        )
    )
    assert (off.top_k, off.min_p, off.repeat_penalty) == (None, None, None)
    unchecked = stack(("minPSampling", {"checked": False, "value": 0.5}), ("topKSampling", -1))
    assert p.prediction_config(unchecked) == p.PredictionConfig()


@pytest.mark.parametrize(
    ("field", "message"),
    [
        (("topKSampling", 2.5), "topKSampling must be a whole number"),
        (("topKSampling", "40"), "topKSampling must be a number"),
        (("minPSampling", {"checked": True, "value": 1.5}), "minPSampling must be between"),
        (("repeatPenalty", {"checked": True, "value": 0}), "repeatPenalty must be above 0"),
        (("repeatPenalty", {"checked": True, "value": 11}), "repeatPenalty must be between"),
        (("temperature", -1), "temperature must be at least"),
        (
            ("promptTemplate", {"type": "jinja", "jinjaPromptTemplate": {"template": "x"}}),
            "template",
        ),
    ],
)
def test_prediction_config_refuses_what_it_cannot_honour(
    field: tuple[str, Any], message: str
) -> None:
    """Settings Anvyl cannot honour raise a `ProtocolError` that names them."""
    with pytest.raises(p.ProtocolError, match=message):
        p.prediction_config(stack(field))


def test_completion_template_means_raw_text() -> None:
    """The SDK's `complete()` layer turns the chat template off."""
    template = {"type": "jinja", "jinjaPromptTemplate": {"template": p.COMPLETION_TEMPLATE}}
    assert p.prediction_config(stack(("promptTemplate", template))).raw


def test_chat_messages_text_only() -> None:
    """Text parts are joined per message; files and tool messages are refused."""
    history = {
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
            {
                "role": "user",
                "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}],
            },
        ]
    }
    assert p.chat_messages(history) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi there"},
    ]
    with pytest.raises(p.ProtocolError, match="'file'"):
        p.chat_messages({"messages": [{"role": "user", "content": [{"type": "file"}]}]})
    with pytest.raises(p.ProtocolError, match="'tool'"):
        p.chat_messages({"messages": [{"role": "tool", "content": []}]})
    with pytest.raises(p.ProtocolError, match="no messages"):
        p.chat_messages({"messages": []})


def test_model_matching() -> None:
    """Queries by key or path and instance references match; other keys and domains do not."""
    assert MODEL.matches({"type": "query", "query": {"identifier": "smollm2-test"}})
    assert MODEL.matches({"type": "query", "query": {}})
    assert MODEL.matches({"type": "instanceReference", "instanceReference": "smollm2-test"})
    assert not MODEL.matches({"type": "query", "query": {"identifier": "other"}})
    assert not MODEL.matches({"type": "query", "query": {"domain": "embedding"}})
    assert not MODEL.matches(None)
    assert MODEL.not_found("x").error()["displayData"] == {"code": p.NO_MODEL_CODE}


def test_infos_validate_against_the_sdk_schemas() -> None:
    """The infos and stats parse with the SDK's own msgspec structs."""
    LlmInfo._from_api_dict(MODEL.llm_info())
    LlmInstanceInfo._from_api_dict(MODEL.instance_info())
    finish = FinishEvent("stop", 30, 9, 0.2, 0.8)
    parsed = LlmPredictionStats._from_api_dict(p.stats(finish, "eosFound"))
    assert parsed.total_tokens_count == 39
    assert parsed.tokens_per_second == pytest.approx(10.0)


@pytest.mark.parametrize(
    ("reason", "stop", "user", "expected"),
    [
        ("stop", (), False, "eosFound"),
        ("stop", ("\n",), False, "stopStringFound"),
        ("length", (), False, "maxPredictedTokensReached"),
        ("cancelled", (), True, "userStopped"),
        ("cancelled", (), False, "failed"),
        ("error", (), False, "failed"),
    ],
)
def test_stop_reason(reason: Any, stop: tuple[str, ...], user: bool, expected: str) -> None:
    """Engine finish reasons map onto LM Studio's stop reasons."""
    finish = FinishEvent(reason, 1, 1, 0.0, 0.0)
    assert p.stop_reason(finish, stop, user_stopped=user) == expected


def test_unsupported_names_the_call() -> None:
    """The refusal names namespace and endpoint and lists what works."""
    err = p.unsupported("llm", "unloadModel", "call").error()
    assert "'llm.unloadModel'" in err["title"]
    assert "llm.predict" in err["suggestion"]
