"""Micro-benchmark: Anvyl's quantized matmul kernel against MLX's float32 and quantized matmuls.

At the bundled model's shapes (SmolLM2-135M: hidden 576, kv 192, MLP 1536, vocab 49152; `--shapes
1b` for the 1B-class benchmark model's, `1b-5bit` for 5-bit weights) and decode batch sizes, per
call in microseconds, each measured as a chain of calls in one `mx.eval` the way a decode step
runs them, each call with its own copy of the weights (64 MB of float32
copies at least) so that, as in a decode step, weights come from memory rather than the cache.
Float32 uses the weight stored (in, out), as the server's float32 path does; run it with
OpenBLAS preloaded to compare with what the server does:

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3 \
        .venv/bin/python bench/kernel.py
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import mlx.core as mx

SHAPES = {  # (out, in, bits): q/o, k/v, gate/up, down, tied output head
    "135m": [(576, 576, 4), (192, 576, 4), (1536, 576, 4), (576, 1536, 4), (49152, 576, 8)],
    # bench/engine.py --random-1b (GGUF Q5_0/Q5_1/Q5_K layers become 5-bit ones)
    "1b": [(2048, 2048, 4), (512, 2048, 4), (8192, 2048, 4), (2048, 8192, 4), (49152, 2048, 8)],
    "1b-5bit": [(2048, 2048, 5), (8192, 2048, 5), (2048, 8192, 5)],
}
ROWS = (1, 4, 8, 16)


def time_chain(fns: list[Callable[[mx.array], mx.array]], x: mx.array, repeats: int) -> float:
    """Fastest microseconds per call, one evaluation calling each of `fns` (distinct weights)."""
    mx.eval([fn(x + i) for i, fn in enumerate(fns)])
    samples = []
    for _ in range(repeats):
        xs = [x + i for i in range(len(fns))]
        mx.eval(xs)
        start = time.perf_counter()
        mx.eval([fn(xi) for fn, xi in zip(fns, xs, strict=True)])
        samples.append((time.perf_counter() - start) / len(fns) * 1e6)
    samples.sort()
    return samples[0]


def main() -> None:
    """Print one table row per shape and batch size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=0, help="kernel threads (0: default)")
    parser.add_argument("--shapes", choices=sorted(SHAPES), default="135m")
    parser.add_argument("--rows", default=",".join(map(str, ROWS)), help="batch sizes")
    args = parser.parse_args()
    try:
        import anvyl_kernels as kernels
    except ImportError:
        kernels = None
    if kernels is not None and args.threads:
        kernels.set_num_threads(args.threads)
    note = f"kernel {kernels.simd()}, {kernels.num_threads()} threads" if kernels else "no kernel"
    print(f"# {note}; microseconds per call (best of {args.repeats})")
    print("| out x in | bits | rows | fp32 matmul | mx.quantized_matmul | anvyl qmm | vs fp32 |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    mx.random.seed(0)
    for out_dim, in_dim, bits in SHAPES[args.shapes]:
        copies = max(2, min(64, int(64e6 // (out_dim * in_dim * 4))))
        fp32, quant, ours = [], [], []
        for _ in range(copies):
            weight = mx.random.normal((out_dim, in_dim)) * 0.05
            wq, scales, biases = mx.quantize(weight, group_size=32, bits=bits)
            scales, biases = scales.astype(mx.float16), biases.astype(mx.float16)
            w_t = mx.contiguous(
                mx.dequantize(wq, scales.astype(mx.float32), biases.astype(mx.float32), 32, bits).T
            )
            mx.eval(wq, scales, biases, w_t)
            fp32.append(lambda a, w_t=w_t: a @ w_t)
            quant.append(
                lambda a, q=(wq, scales, biases), bits=bits: mx.quantized_matmul(
                    a, *q, transpose=True, group_size=32, bits=bits
                )
            )
            if kernels is not None:
                ours.append(
                    lambda a, q=(wq, scales, biases), bits=bits: kernels.qmm(a, *q, 32, bits)
                )
        for rows in (int(r) for r in args.rows.split(",")):
            x = mx.random.normal((rows, in_dim))
            t_fp32 = time_chain(fp32, x, args.repeats)
            t_quant = time_chain(quant, x, args.repeats)
            cells = "- | -"
            if kernels is not None:
                t_ours = time_chain(ours, x, args.repeats)
                cells = f"{t_ours:.0f} | {t_fp32 / t_ours:.2f}x"
            shape = f"{out_dim}x{in_dim} | {bits} | {rows}"
            print(f"| {shape} | {t_fp32:.0f} | {t_quant:.0f} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
