"""Ask a running Anvyl model one question with the official `openai` SDK; print answer and speed.

    python examples/chat.py --base-url http://localhost:1234/v1 --model smollm2-135m-instruct-mlx
"""

from __future__ import annotations

import argparse
import time

from openai import OpenAI


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default="http://localhost:1234/v1")
    parser.add_argument("--model", default="smollm2-135m-instruct-mlx")
    parser.add_argument("--api-key", default="not-needed")
    parser.add_argument("--prompt", default="What is the capital of France?")
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()

    client = OpenAI(base_url=args.base_url, api_key=args.api_key)
    start = time.perf_counter()
    first: float | None = None
    parts: list[str] = []
    usage = None
    stream = client.chat.completions.create(
        model=args.model,
        messages=[{"role": "user", "content": args.prompt}],
        max_tokens=args.max_tokens,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            if first is None:
                first = time.perf_counter()
            parts.append(chunk.choices[0].delta.content)
            print(chunk.choices[0].delta.content, end="", flush=True)
        if chunk.usage:
            usage = chunk.usage
    end = time.perf_counter()
    print()
    if usage and first is not None:
        decode_s = max(end - first, 1e-9)
        rate = (usage.completion_tokens - 1) / decode_s if usage.completion_tokens > 1 else 0.0
        print(
            f"-- {usage.completion_tokens} tokens, time to first token {first - start:.2f} s, "
            f"{rate:.1f} tokens/s"
        )


if __name__ == "__main__":
    main()
