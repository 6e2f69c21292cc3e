"""Greedy top-1 agreement between Anvyl's model and llama.cpp on the same GGUF, prompt by prompt.

For each of a fixed set of chat prompts, llama.cpp (its Python bindings, from the benchmark's own
venv: `bench/engine.py --setup-llama-python`) decodes a greedy continuation; then the whole sequence
(prompt + continuation) is fed once, teacher-forced, to the model as Anvyl loads it, for each
weight dtype. At every continuation position the two engines' arg-max tokens are compared: the
agreement is the share of positions where they pick the same next token, plus how many prompts
match from the first token to the last. Prints a table and saves JSON under bench/results/.

    .venv/bin/python bench/agreement.py [--model DIR] [--tokens 24] [--dtypes float32,quantized]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from _results import save  # noqa: E402
from engine import LLAMA_VENV, base_env, default_model, find_gguf, llama_python  # noqa: E402

PROMPTS = (
    "What is the capital of France?",
    "Name three primary colours.",
    "Write a haiku about the sea.",
    "What is 12 times 12?",
    "Explain what a CPU does in one sentence.",
    "Translate 'good morning' into Spanish.",
    "Who wrote Romeo and Juliet?",
    "Give me a synonym for 'happy'.",
    "What is the boiling point of water in Celsius?",
    "List the days of the week.",
    "Why is the sky blue?",
    "Suggest a name for a pet cat.",
    "What is the largest planet in the solar system?",
    "Describe a tree in five words.",
    "How many legs does a spider have?",
    "Write one sentence about autumn.",
)

# Runs in llama.cpp's venv: greedy continuation of each token sequence, ids only.
LLAMA_SCRIPT = r"""
import json, sys
import numpy as np
from llama_cpp import Llama
job = json.load(sys.stdin)
out = []
for ids in job["prompts"]:
    # A fresh context per prompt: reset() alone leaves the last prompt's KV cells visible.
    llm = Llama(model_path=job["gguf"], n_ctx=1024, n_threads=job["threads"], verbose=False,
                logits_all=True)
    # One token at a time: with logits_all, 0.3.16's batched eval returns scrambled logits
    # (correlation 0.25-0.97 with its own one-by-one logits, measured on a 63-token prompt).
    for t in ids:
        llm.eval([t])
    gen = []
    for _ in range(job["tokens"]):
        tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        gen.append(tok)
        if tok in job["eos"]:
            break
        llm.eval([tok])
    out.append(gen)
print(json.dumps(out))
"""

# Runs in the project's venv: arg-max of every position, the model as Anvyl loads it.
ANVYL_SCRIPT = r"""
import json, sys
from pathlib import Path
import mlx.core as mx
from anvyl.modelserver.loader import load_model_dir
job = json.load(sys.stdin)
loaded = load_model_dir(Path(job["model"]), job["dtype"])
out = []
for ids in job["sequences"]:
    logits = loaded.model(mx.array([ids]))
    out.append(mx.argmax(logits[0], axis=-1).tolist())
print(json.dumps({"dtype": loaded.dtype, "argmax": out}))
"""


def chat_ids(model: Path) -> tuple[list[list[int]], list[int]]:
    """Token ids of each prompt with the chat template, and the end-of-turn ids."""
    from mlx_lm.tokenizer_utils import load as load_tokenizer

    tok = load_tokenizer(model)
    prompts = [
        list(tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True))
        for p in PROMPTS
    ]
    return prompts, sorted(int(i) for i in tok.eos_token_ids)


def run_json(cmd: list[str], job: dict[str, Any], env: dict[str, str] | None = None) -> Any:
    """Run a helper script with a JSON job on stdin; its last stdout line as JSON."""
    done = subprocess.run(
        cmd, input=json.dumps(job), capture_output=True, text=True, check=False, env=env
    )
    if done.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare(
    prompts: list[list[int]], continuations: list[list[int]], argmax: list[list[int]]
) -> dict[str, Any]:
    """Agreement of Anvyl's arg-max with llama.cpp's greedy token at each continuation position."""
    agree = total = whole = first = 0
    per_prompt = []
    for prompt, gen, picks in zip(prompts, continuations, argmax, strict=True):
        # Position len(prompt)-1+i predicts gen[i].
        mine = picks[len(prompt) - 1 : len(prompt) - 1 + len(gen)]
        same = sum(1 for a, b in zip(mine, gen, strict=True) if a == b)
        agree += same
        total += len(gen)
        whole += same == len(gen)
        first += bool(gen) and mine[0] == gen[0]
        diverge = next((i for i, (a, b) in enumerate(zip(mine, gen, strict=True)) if a != b), None)
        per_prompt.append({"tokens": len(gen), "agree": same, "first_difference": diverge})
    return {
        "positions": total,
        "agreement": round(agree / total, 4) if total else 0.0,
        "first_token_agree": first,
        "prompts_identical": whole,
        "prompts": len(prompts),
        "per_prompt": per_prompt,
    }


def main() -> int:
    """Run both engines, print the table, save the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, help="MLX model directory (default: the bundled one)")
    ap.add_argument("--gguf", type=Path, help="GGUF for llama.cpp (default: the model's source)")
    ap.add_argument("--tokens", type=int, default=24, help="greedy tokens per prompt")
    ap.add_argument("--dtypes", default="float32,quantized", help="Anvyl weight dtypes to compare")
    ap.add_argument("--llama-venv", type=Path, default=LLAMA_VENV)
    args = ap.parse_args()
    model = (args.model or default_model()).resolve()
    py = llama_python(args.llama_venv)
    if py is None:
        print(
            f"llama.cpp is not built in {args.llama_venv}: run bench/engine.py --setup-llama-python"
        )
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="anvyl-agreement-"))
    gguf = args.gguf or find_gguf(model, workdir)
    if gguf is None:
        print("no GGUF for llama.cpp: pass --gguf")
        return 2
    prompts, eos = chat_ids(model)
    job = {"gguf": str(gguf), "prompts": prompts, "tokens": args.tokens, "eos": eos, "threads": 1}
    continuations = run_json([str(py), "-c", LLAMA_SCRIPT], job)
    sequences = [p + g for p, g in zip(prompts, continuations, strict=True)]
    results = {}
    for dtype in args.dtypes.split(","):
        anvyl_job = {"model": str(model), "dtype": dtype, "sequences": sequences}
        out = run_json([sys.executable, "-c", ANVYL_SCRIPT], anvyl_job, env=base_env())
        results[out["dtype"]] = compare(prompts, continuations, out["argmax"])
    print(
        f"\nGreedy top-1 agreement with llama.cpp ({len(prompts)} chat prompts, "
        f"{args.tokens} greedy tokens each, teacher-forced on llama.cpp's tokens)\n"
    )
    print(f"| {'Anvyl weights':<14} | agreement | first token | identical prompts |")
    print(f"| {'-' * 14} | --------- | ----------- | ----------------- |")
    for dtype, r in results.items():
        n = r["prompts"]
        first, same = f"{r['first_token_agree']}/{n}", f"{r['prompts_identical']}/{n}"
        print(f"| {dtype:<14} | {r['agreement']:>9.1%} | {first:>11} | {same:>17} |")
    meta = {"model": str(model), "gguf": str(gguf), "tokens": args.tokens}
    save("agreement", {"meta": meta, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
