"""Reasoning in `<think>` tags through every API, with the real bundled model.

No reasoning model fits this machine, so the bundled SmolLM2 gets a reasoning chat template
(DeepSeek-R1 style: the generation prompt opens `<think>`, and `enable_thinking=false` closes it
at once, as Qwen3's does; mlx-lm defaults the switch to off here, as this tokenizer has no
`<think>` token, so the tests turn it on as each API does). Shown two worked examples, the model
itself writes its reasoning, `</think>` and the answer at temperature 0:
"France's capital is Paris.\\n</think>\\n\\nParis.".
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import lmstudio as lms
import ollama
import openai
import pytest
from modelserver_harness import MODEL_ID, RunningServer, start_server, stop_server
from transformers import AutoTokenizer

THOUGHT, ANSWER = "France's capital is Paris.", "Paris."
REASONING_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% if enable_thinking is defined and enable_thinking is false %}"
    "{{ '<think>\n\n</think>\n\n' }}{% else %}{{ '<think>\n' }}{% endif %}{% endif %}"
)
SYSTEM = "Think first inside <think> tags, then answer."
EXAMPLES = [
    ("What is the capital of Italy?", "<think>\nItaly's capital is Rome.\n</think>\n\nRome."),
    ("What is the capital of Spain?", "<think>\nSpain's capital is Madrid.\n</think>\n\nMadrid."),
]
QUESTION = "What is the capital of France?"
GENERATED = f"{THOUGHT}\n</think>\n\n{ANSWER}"  # what the model writes after the prompt's `<think>`


def turns() -> list[dict[str, str]]:
    """The worked examples and the question, without the system prompt."""
    out = []
    for question, answer in EXAMPLES:
        out += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return [*out, {"role": "user", "content": QUESTION}]


def reasoning_model(bundled: Path, where: Path) -> Path:
    """The bundled model's files (linked) under a reasoning chat template."""
    where.mkdir()
    for item in bundled.iterdir():
        if item.name != "tokenizer_config.json":
            (where / item.name).symlink_to(item)
    config = json.loads((bundled / "tokenizer_config.json").read_text())
    config["chat_template"] = REASONING_TEMPLATE
    (where / "tokenizer_config.json").write_text(json.dumps(config))
    return where


@pytest.fixture(scope="module")
def server(
    bundled_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """One server on the reasoning copy of the bundled model."""
    base = tmp_path_factory.mktemp("thinking")
    model = reasoning_model(bundled_model, base / "model")
    s = start_server(model, base / "server.log", "--ctx", "1024")
    yield s
    stop_server(s)


@pytest.fixture(scope="module")
def reasoning_tokens(bundled_model: Path) -> int:
    """Tokens of GENERATED up to the one that completes `</think>`, counted by the tokenizer."""
    tokenizer: Any = AutoTokenizer.from_pretrained(str(bundled_model))
    ids = tokenizer.encode(GENERATED, add_special_tokens=False)
    return next(k for k in range(1, len(ids) + 1) if "</think>" in tokenizer.decode(ids[:k]))


def test_openai_chat_splits_reasoning_content(server: RunningServer, reasoning_tokens: int) -> None:
    """`message.reasoning_content` and `delta.reasoning_content`, as llama.cpp and vLLM send."""
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0)
    messages = [{"role": "system", "content": SYSTEM}, *turns()]
    on = {"chat_template_kwargs": {"enable_thinking": True}}
    r = client.chat.completions.create(model=MODEL_ID, messages=messages, temperature=0,
                                       max_tokens=40, extra_body=on)  # type: ignore[arg-type]  # fmt: skip
    message = r.choices[0].message
    assert (message.reasoning_content, message.content) == (THOUGHT, ANSWER)  # type: ignore[attr-defined]
    assert r.usage is not None and r.usage.completion_tokens_details is not None
    assert r.usage.completion_tokens_details.reasoning_tokens == reasoning_tokens
    stream = client.chat.completions.create(model=MODEL_ID, messages=messages, temperature=0,
                                            max_tokens=40, stream=True, extra_body=on,
                                            stream_options={"include_usage": True})  # type: ignore[arg-type]  # fmt: skip
    thought, text = "", ""
    for chunk in stream:
        if chunk.usage is not None:
            details = chunk.usage.completion_tokens_details
            assert details is not None and details.reasoning_tokens == reasoning_tokens
        if chunk.choices:
            delta = chunk.choices[0].delta
            thought += getattr(delta, "reasoning_content", None) or ""
            text += delta.content or ""
    assert (thought, text) == (THOUGHT, ANSWER)
    cut = client.chat.completions.create(model=MODEL_ID, messages=messages, temperature=0,
                                         max_tokens=3, extra_body=on)  # type: ignore[arg-type]  # fmt: skip
    assert cut.choices[0].finish_reason == "length" and not cut.choices[0].message.content
    assert THOUGHT.startswith(cut.choices[0].message.reasoning_content)  # type: ignore[attr-defined]
    assert cut.usage is not None and cut.usage.completion_tokens_details is not None
    assert cut.usage.completion_tokens_details.reasoning_tokens == 3  # cut off: all reasoning


def test_enable_thinking_false_closes_the_reasoning(server: RunningServer) -> None:
    """`chat_template_kwargs.enable_thinking=false` reaches the template: no reasoning."""
    body = {"model": MODEL_ID, "messages": turns(), "temperature": 0, "max_tokens": 20,
            "chat_template_kwargs": {"enable_thinking": False}}  # fmt: skip
    message = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=60).json()
    assert "reasoning_content" not in message["choices"][0]["message"]
    bad = httpx.post(f"{server.url}/v1/chat/completions", timeout=60,
                     json={**body, "chat_template_kwargs": {"tools": []}})  # fmt: skip
    assert bad.status_code == 400 and "chat_template_kwargs" in bad.text


def test_anthropic_thinking_blocks_only_when_asked(server: RunningServer) -> None:
    client = anthropic.Anthropic(base_url=server.url, api_key="none", max_retries=0)
    ask = {"model": MODEL_ID, "max_tokens": 40, "system": SYSTEM, "messages": turns(),
           "extra_body": {"temperature": 0}}  # fmt: skip
    thinking = {"type": "enabled", "budget_tokens": 1024}
    r = client.messages.create(**ask, thinking=thinking)  # type: ignore[arg-type]
    assert [b.type for b in r.content] == ["thinking", "text"]
    assert (r.content[0].thinking, r.content[1].text) == (THOUGHT, ANSWER)  # type: ignore[union-attr]
    with client.messages.stream(**ask, thinking=thinking) as stream:  # type: ignore[arg-type]
        deltas = [e.delta.thinking for e in stream if e.type == "content_block_delta"
                  and e.delta.type == "thinking_delta"]  # fmt: skip
        final = stream.get_final_message()
    assert "".join(deltas) == THOUGHT and final.content[0].thinking == THOUGHT  # type: ignore[union-attr]
    plain = client.messages.create(**ask)  # type: ignore[arg-type]
    assert [b.type for b in plain.content] == ["text"]
    omitted = thinking | {"display": "omitted"}  # the block comes back without its text
    hidden = client.messages.create(**ask, thinking=omitted)  # type: ignore[arg-type]
    assert [b.type for b in hidden.content] == ["thinking", "text"]
    assert (hidden.content[0].thinking, hidden.content[1].text) == ("", ANSWER)  # type: ignore[union-attr]
    with client.messages.stream(**ask, thinking=omitted) as stream:  # type: ignore[arg-type]
        kinds = [e.delta.type for e in stream if e.type == "content_block_delta"]
    assert "thinking_delta" not in kinds and "text_delta" in kinds
    # Not asked for, the template is told to skip reasoning: it closes `<think>` in the prompt.
    count = {k: v for k, v in ask.items() if k in ("model", "system", "messages")}
    closed = client.messages.count_tokens(**count).input_tokens  # type: ignore[arg-type]
    opened = client.messages.count_tokens(**count, thinking=thinking).input_tokens  # type: ignore[arg-type]
    assert closed > opened


def test_responses_reasoning_item(server: RunningServer, reasoning_tokens: int) -> None:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0)
    ask = {"model": MODEL_ID, "instructions": SYSTEM, "input": turns(), "temperature": 0,
           "max_output_tokens": 40, "reasoning": {"effort": "medium"}}  # fmt: skip
    r = client.responses.create(**ask)  # type: ignore[call-overload]
    assert [item.type for item in r.output] == ["reasoning", "message"]
    assert r.output[0].content[0].text == THOUGHT and r.output_text == ANSWER
    assert r.usage is not None
    assert r.usage.output_tokens_details.reasoning_tokens == reasoning_tokens
    with client.responses.stream(**ask) as stream:
        deltas = [e.delta for e in stream if e.type == "response.reasoning_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == THOUGHT and final.output_text == ANSWER
    assert final.usage is not None
    assert final.usage.output_tokens_details.reasoning_tokens == reasoning_tokens


def test_ollama_think(server: RunningServer) -> None:
    client = ollama.Client(host=server.url)
    messages = [{"role": "system", "content": SYSTEM}, *turns()]
    options = {"temperature": 0, "num_predict": 40}
    r = client.chat(model=MODEL_ID, messages=messages, think=True, options=options)
    assert (r.message.thinking, r.message.content) == (THOUGHT, ANSWER)
    parts = list(client.chat(model=MODEL_ID, messages=messages, stream=True, think=True,
                             options=options))  # fmt: skip
    assert "".join(p.message.thinking or "" for p in parts) == THOUGHT
    assert "".join(p.message.content for p in parts) == ANSWER
    off = client.chat(model=MODEL_ID, messages=messages, think=False, options=options)
    assert not off.message.thinking
    assert "thinking" in (client.show(MODEL_ID).capabilities or [])


def test_lmstudio_sdk_types_reasoning_fragments(server: RunningServer) -> None:
    """The SDK's fragments are typed as LM Studio types them; the text passes whole. `complete`
    on the rendered prompt (the SDK has no switch for the template's reasoning)."""
    chat = [{"role": "system", "content": SYSTEM}, *turns()]
    raw = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in chat)
    raw += "<|im_start|>assistant\n<think>\n"  # the template opened the reasoning
    with lms.Client(f"127.0.0.1:{server.port}") as client:
        model = client.llm.model(MODEL_ID)
        stream = model.complete_stream(raw, config={"temperature": 0.0, "maxTokens": 40})
        fragments = [(f.reasoning_type, f.content) for f in stream]
        result = stream.result()
        parsing_off = {"enabled": False, "startString": "", "endString": ""}
        off = {"temperature": 0.0, "maxTokens": 40, "reasoningParsing": parsing_off}
        plain = {f.reasoning_type for f in model.complete_stream(raw, config=off)}  # type: ignore[arg-type]
    assert "".join(text for _, text in fragments) == result.content == GENERATED
    kinds = [kind for kind, _ in fragments]
    assert kinds[0] == "reasoning" and kinds.count("reasoningEndTag") == 1
    assert set(kinds[kinds.index("reasoningEndTag") + 1 :]) == {"none"}
    assert "".join(t for k, t in fragments if k == "reasoning").strip() == THOUGHT
    assert "".join(t for k, t in fragments if k == "none").strip() == ANSWER
    assert plain == {"none"}
