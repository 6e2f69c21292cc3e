"""`logprobs`/`top_logprobs` and `n` choices on a real server, through the official SDK."""

from __future__ import annotations

import openai
import pytest
from modelserver_harness import MODEL_ID, RunningServer

PARIS = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def client(structured_server: RunningServer) -> openai.OpenAI:
    """The SDK on the shared server."""
    return openai.OpenAI(base_url=f"{structured_server.url}/v1", api_key="x", max_retries=0)


def test_greedy_choices_with_logprobs(client: openai.OpenAI) -> None:
    """n=2 greedy: equal choices; one entry per token, tokens spell the text, top-1 is chosen."""
    r = client.chat.completions.create(
        model=MODEL_ID, messages=PARIS, temperature=0, max_tokens=8, n=2, logprobs=True,
        top_logprobs=3,
    )  # fmt: skip
    assert [c.index for c in r.choices] == [0, 1]
    assert r.choices[0].message.content == r.choices[1].message.content
    assert r.usage is not None
    for choice in r.choices:
        assert choice.logprobs is not None and choice.logprobs.content
        entries = choice.logprobs.content
        assert "".join(e.token for e in entries) == choice.message.content
        for e in entries:
            assert len(e.top_logprobs) == 3 and e.logprob <= 0
            assert e.top_logprobs[0].token == e.token
            values = [t.logprob for t in e.top_logprobs]
            assert values == sorted(values, reverse=True)
    listed = sum(len(c.logprobs.content or []) for c in r.choices if c.logprobs)
    assert (
        listed <= r.usage.completion_tokens <= listed + 2
    )  # the end-of-sequence token is not text


def test_streamed_choices_carry_their_index_and_logprobs(client: openai.OpenAI) -> None:
    """Seeded sampling with n=3, streamed: each index assembles its own text and logprobs."""
    stream = client.chat.completions.create(
        model=MODEL_ID, messages=PARIS, temperature=1.0, seed=7, max_tokens=8, n=3,
        logprobs=True, stream=True, stream_options={"include_usage": True},
    )  # fmt: skip
    texts: dict[int, str] = {}
    tokens: dict[int, str] = {}
    finished: set[int] = set()
    usage = None
    for chunk in stream:
        if not chunk.choices:
            usage = chunk.usage
            continue
        c = chunk.choices[0]
        texts[c.index] = texts.get(c.index, "") + (c.delta.content or "")
        for e in (c.logprobs.content or []) if c.logprobs else []:
            tokens[c.index] = tokens.get(c.index, "") + e.token
        if c.finish_reason:
            finished.add(c.index)
    assert finished == {0, 1, 2}
    assert tokens == texts
    assert usage is not None and usage.completion_tokens > 0


def test_completion_logprobs_shape(client: openai.OpenAI) -> None:
    """Text completions: tokens, token_logprobs, top_logprobs and text offsets."""
    r = client.completions.create(
        model=MODEL_ID, prompt="The capital of France is", temperature=0, max_tokens=4, logprobs=2
    )
    lp = r.choices[0].logprobs
    assert lp is not None and lp.tokens and lp.token_logprobs and lp.top_logprobs
    # The engine's detokenizer drops the first token's leading space from the text.
    assert "".join(lp.tokens).lstrip() == r.choices[0].text.lstrip()
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(lp.tokens))]
    assert all(len(top) <= 2 for top in lp.top_logprobs)
