"""The `<think>` splitter (pure): the same split however the text is cut into tokens."""

from __future__ import annotations

import itertools

import pytest

from anvyl.modelserver.thinking import ThinkSplitter, opens_thinking, split_pieces, split_whole

QWEN3 = "<think>\nThe user asks for a capital.\n</think>\n\nParis."
R1_AFTER_PROMPT = "Okay, France.\n</think>\n\nThe capital is Paris."


def streamed(text: str, cuts: tuple[int, ...], *, inside: bool = False) -> tuple[str, str]:
    """Feed `text` cut at `cuts`; (reasoning, answer) from the parts alone."""
    splitter = ThinkSplitter(inside=inside)
    bounds = [0, *cuts, len(text)]
    parts = []
    for a, b in itertools.pairwise(bounds):
        parts += splitter.feed(text[a:b])
    parts += splitter.end()
    assert all(text for _, text in parts)
    return (
        "".join(t for k, t in parts if k == "thinking"),
        "".join(t for k, t in parts if k == "text"),
    )


def test_model_opened_reasoning_is_split_off() -> None:
    assert split_whole(QWEN3) == ("The user asks for a capital.", "Paris.")


def test_template_opened_reasoning_is_split_off() -> None:
    assert split_whole(R1_AFTER_PROMPT, inside=True) == ("Okay, France.", "The capital is Paris.")


@pytest.mark.parametrize(("text", "inside"), [(QWEN3, False), (R1_AFTER_PROMPT, True)])
def test_every_pair_of_cuts_gives_the_same_split(text: str, inside: bool) -> None:
    """Tags split across tokens anywhere (`<th` + `ink>`, `</` + `think>`...) change nothing."""
    whole = split_whole(text, inside=inside)
    for cuts in itertools.combinations(range(1, len(text)), 2):
        assert streamed(text, cuts, inside=inside) == whole, cuts


def test_character_by_character() -> None:
    assert streamed(QWEN3, tuple(range(1, len(QWEN3)))) == split_whole(QWEN3)


@pytest.mark.parametrize(
    "text", ["Paris.", "  leading space kept", "<b>bold</b> starts with a tag", "<", "<thin",
             "I <think> so", ""],
)  # fmt: skip
def test_text_without_reasoning_passes_unchanged(text: str) -> None:
    for cut in range(1, max(len(text), 2)):
        assert streamed(text, (cut,) if cut < len(text) else ()) == ("", text)


def test_cut_off_reasoning_is_all_reasoning() -> None:
    assert split_whole("<think>still thinking </th") == ("still thinking </th", "")
    assert split_whole("more thought", inside=True) == ("more thought", "")


def test_empty_reasoning_and_held_whitespace() -> None:
    assert split_whole("<think>\n\n</think>\n\nHi") == ("", "Hi")
    splitter = ThinkSplitter()
    assert splitter.feed("<think>a  ") == [("thinking", "a")]
    assert splitter.feed(" b") == [("thinking", "   b")]  # held whitespace was reasoning
    assert splitter.feed("</think> c") == [("text", "c")]
    assert splitter.feed("<think>") == [("text", "<think>")]  # the answer is not re-split


@pytest.mark.parametrize(
    ("tail", "opened"),
    [("<|im_start|>assistant\n<think>\n", True), ("<\uff5cAssistant\uff5c><think>", True),
     ("<|im_start|>assistant\n<think>\n\n</think>\n\n", False), ("<|im_start|>assistant\n", False)],
)  # fmt: skip
def test_prompts_that_open_reasoning(tail: str, opened: bool) -> None:
    assert opens_thinking(tail) is opened


QWEN3_TOKENS = ["<", "think", ">\n", "The", " user", " asks", " for", " a", " capital", ".\n",
                "</", "think", ">\n\n", "Paris", "."]  # fmt: skip


def counted(tokens: list[str], *, inside: bool = False, per_piece: int = 1) -> int:
    """Reasoning tokens when `tokens` arrive `per_piece` at a time."""
    splitter = ThinkSplitter(inside=inside)
    for i in range(0, len(tokens), per_piece):
        chunk = tokens[i : i + per_piece]
        splitter.feed("".join(chunk), len(chunk))
    splitter.end()
    return splitter.reasoning_tokens


def test_reasoning_tokens_run_to_the_one_that_closes_the_tag() -> None:
    assert "".join(QWEN3_TOKENS) == QWEN3
    assert counted(QWEN3_TOKENS) == 13  # `<think>` ... `>\n\n`, not `Paris` `.`
    r1 = ["Okay", ",", " France", ".\n", "</think>", "\n\n", "The", " capital"]
    assert counted(r1, inside=True) == 5  # the prompt opened it: from the first token
    assert counted(["more", " thought"], inside=True) == 2  # cut off: all reasoning
    assert counted(["<", "b", ">bold"]) == 0  # held back as a possible tag, then answer
    assert counted(["Paris", "."]) == 0
    assert counted(["\n", "<think>", "x", "</think>", "y"]) == 4  # leading whitespace held


def test_reasoning_tokens_of_pieces_of_several_tokens() -> None:
    """A piece counts whole on the side it starts on (text of held-back tokens comes later)."""
    assert counted(QWEN3_TOKENS, per_piece=2) == 14  # the 7th piece, `>\n\n` `Paris`, closes it
    assert counted(QWEN3_TOKENS, per_piece=3) == 15
    assert counted(["Hi", "<think>"], per_piece=2) == 0
    assert split_pieces([(t, 1) for t in QWEN3_TOKENS]) == (*split_whole(QWEN3), 13)
