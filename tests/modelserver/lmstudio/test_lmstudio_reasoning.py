"""LM Studio's typed fragments (pure): the text passes whole, tags and reasoning typed as
LM Studio types them, however the text is cut into pieces."""

from __future__ import annotations

import itertools

import pytest

from anvyl.modelserver.lmstudio.protocol import ProtocolError, prediction_config
from anvyl.modelserver.lmstudio.reasoning import Fragments, FragmentTyper

QWEN3 = "<think>\nThe user asks.\n</think>\n\nParis."
TYPED_QWEN3 = [("reasoningStartTag", "<think>"), ("reasoning", "\nThe user asks.\n"),
               ("reasoningEndTag", "</think>"), ("none", "\n\nParis.")]  # fmt: skip


def typed(text: str, cuts: tuple[int, ...], **kwargs: object) -> list[tuple[str, str]]:
    """Feed `text` cut at `cuts`; adjacent pieces of one type merged."""
    typer = FragmentTyper(**kwargs)  # type: ignore[arg-type]
    out: list[tuple[str, str]] = []
    for a, b in itertools.pairwise([0, *cuts, len(text)]):
        out += typer.feed(text[a:b])
    out += typer.flush()
    merged: list[tuple[str, str]] = []
    for kind, part in out:
        if merged and merged[-1][0] == kind and "Tag" not in kind:
            merged[-1] = (kind, merged[-1][1] + part)
        else:
            merged.append((kind, part))
    return merged


def test_every_pair_of_cuts_types_the_same() -> None:
    for cuts in itertools.combinations(range(1, len(QWEN3)), 2):
        assert typed(QWEN3, cuts) == TYPED_QWEN3, cuts


def test_template_opened_cut_off_custom_tags_and_plain_text() -> None:
    assert typed("Okay.\n</think>\nHi", (3,), inside=True) == [
        ("reasoning", "Okay.\n"), ("reasoningEndTag", "</think>"), ("none", "\nHi")]  # fmt: skip
    assert typed("<think>still </thi", (9,)) == [
        ("reasoningStartTag", "<think>"), ("reasoning", "still </thi")]  # fmt: skip
    assert typed("  [R]x[/R]y", (4,), start="[R]", end="[/R]") == [
        ("none", "  "), ("reasoningStartTag", "[R]"), ("reasoning", "x"),
        ("reasoningEndTag", "[/R]"), ("none", "y")]  # fmt: skip
    for text in ("Paris.", "<b>bold</b>", "<thin", "I <think> so"):
        assert typed(text, (1,)) == [("none", text)]


def test_fragments_count_tokens_and_keep_the_text() -> None:
    fragments = Fragments(FragmentTyper(), None)
    pieces = [("<", 1), ("think", 1), (">x", 1), ("</think>", 1), ("Hi", 2)]
    messages = [m for text, tokens in pieces for m in fragments.feed(text, tokens)]
    messages += fragments.end()
    parts = [m["fragment"] for m in messages]
    assert "".join(f["content"] for f in parts) == "<think>x</think>Hi"
    assert sum(f["tokensCount"] for f in parts) == 6
    assert [f["reasoningType"] for f in parts] == [
        "reasoningStartTag", "reasoning", "reasoningEndTag", "none"]  # fmt: skip
    plain = Fragments(None, None)
    assert [m["fragment"]["reasoningType"] for m in plain.feed("<think>a", 2)] == ["none"]


def test_reasoning_parsing_setting() -> None:
    def stack(value: object) -> dict[str, object]:
        kv = {"key": "llm.prediction.reasoning.parsing", "value": value}
        return {"layers": [{"config": {"fields": [kv]}}]}

    assert prediction_config(None).reasoning_tags == ("<think>", "</think>")
    off = {"enabled": False, "startString": "", "endString": ""}
    assert prediction_config(stack(off)).reasoning_tags is None
    custom = {"enabled": True, "startString": "[R]", "endString": "[/R]"}
    assert prediction_config(stack(custom)).reasoning_tags == ("[R]", "[/R]")
    with pytest.raises(ProtocolError):
        prediction_config(stack({"enabled": "yes"}))
