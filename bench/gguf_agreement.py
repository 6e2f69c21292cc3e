"""Anvyl's GGUF import against llama.cpp, per architecture: logits and token ids on one file.

For each architecture of `tests/catalog/arch_ggufs.py` (small random-weight models written as
llama.cpp's converter writes them, F32 and Q8_0) and each K-quant fixture made by llama.cpp's own
quantize tool, the same GGUF goes through Anvyl's import (mlx-lm) and through llama.cpp; the
logits of every position of a 48-token sequence are correlated (Pearson, per position; the
minimum is reported), and a multilingual text is tokenized by both (ids compared line by line).

llama.cpp comes from the llama-cpp-python 0.3.16 sources: its Python package folder and the
shared libraries of a build of the vendored llama.cpp (as /work/shared/tools/build-llama-server.sh
builds it; libllama.so and libggml*.so), plus `diskcache` on the path:

    .venv/bin/python bench/gguf_agreement.py --llama-py SDIST --llama-lib BIN [--pylib DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests" / "catalog"))

from _results import save  # noqa: E402

POSITIONS = [(7 * i + 3) % 250 + 3 for i in range(48)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--llama-py", type=Path, required=True, help="llama-cpp-python source dir")
    ap.add_argument("--llama-lib", type=Path, required=True, help="dir of libllama.so")
    ap.add_argument("--pylib", type=Path, help="extra Python path (diskcache)")
    args = ap.parse_args()
    os.environ["LLAMA_CPP_LIB_PATH"] = str(args.llama_lib)
    sys.path[:0] = [str(args.llama_py), *([str(args.pylib)] if args.pylib else [])]

    import numpy as np
    from arch_ggufs import ARCHS, MULTILINGUAL, gpt2_vocab, hf_weights, spm_vocab, write_arch_gguf
    from gguf import GGMLQuantizationType as QT

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        spm = spm_vocab(tmp)
        cases: list[tuple[str, str, Path]] = []
        for name, arch in ARCHS.items():
            vocab = gpt2_vocab() if arch.tokenizer.startswith("gpt2") else spm
            weights = hf_weights(arch, len(vocab["tokens"]))
            for qtype in (QT.F32, QT.Q8_0):
                path = tmp / f"{name}-{qtype.name}.gguf"
                write_arch_gguf(path, arch, vocab, weights, qtype)
                cases.append((name, qtype.name, path))
        for fixture in sorted((ROOT / "tests" / "catalog" / "fixtures").glob("*.gguf")):
            name, _, quant = fixture.stem.partition("-")
            cases.append((name, quant, fixture))
        for name, quant, path in cases:
            row = _compare(np, path, tmp / f"{name}-{quant}-mlx", MULTILINGUAL)
            rows.append({"architecture": name, "quantization": quant, **row})
            print(
                f"{name:8} {quant:7} logits corr min {row['min_correlation']:.6f}  "
                f"token ids equal {row['lines_equal']}/{row['lines']}"
            )
    save("gguf_agreement", {"rows": rows})
    return 0


def _compare(np: Any, gguf_path: Path, out: Path, text: str) -> dict[str, Any]:
    import llama_cpp
    import mlx.core as mx
    from mlx_lm.utils import load_model
    from tokenizers import Tokenizer

    from anvyl.catalog.gguf_import import import_gguf

    info = import_gguf(gguf_path, out, model_id="bench-mlx")
    model, _ = load_model(info.path)
    ours = np.array(model(mx.array([POSITIONS])).astype(mx.float32))[0]
    llama = llama_cpp.Llama(str(gguf_path), logits_all=True, verbose=False, n_ctx=256)
    llama.eval(POSITIONS)
    theirs = np.array(llama.scores[: len(POSITIONS)], dtype=np.float32)
    corr = [float(np.corrcoef(a, b)[0, 1]) for a, b in zip(ours, theirs, strict=True)]
    tok = Tokenizer.from_file(str(info.path / "tokenizer.json"))
    lines = text.split("\n")
    equal = sum(
        tok.encode(line, add_special_tokens=False).ids
        == llama.tokenize(line.encode(), add_bos=False, special=False)
        for line in lines
    )
    return {"min_correlation": min(corr), "lines": len(lines), "lines_equal": equal}


if __name__ == "__main__":
    sys.exit(main())
