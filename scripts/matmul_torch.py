#!/usr/bin/env python3
"""The products of `prefix-tune bench matmul` timed in PyTorch (CUDA by default), as JSON in
the same shape, so a GPU session sees product by product where wgpu's matmuls stand against
cuBLAS on the same machine. f32 runs with TF32 off (PyTorch's default for matmul), as PEFT's
f32 baseline does; --dtype f16 runs the products in half precision.

    python3 scripts/matmul_torch.py [--device cuda] [--dtype f32|f16] [--batch-size 5 --seq-len 64]
"""
import argparse
import json
import time

import torch


def products(d=768, layers=12, vocab=50257):
    layer = lambda name, k, n, t: (name, k, n, t, layers)
    return [
        layer("attention qkv", d, 3 * d, False), layer("attention out", d, d, False),
        layer("mlp up", d, 4 * d, False), layer("mlp down", 4 * d, d, False),
        layer("attention qkv, input gradient", 3 * d, d, True), layer("attention out, input gradient", d, d, True),
        layer("mlp up, input gradient", 4 * d, d, True), layer("mlp down, input gradient", d, 4 * d, True),
        ("lm head", d, vocab, True, 1), ("lm head, input gradient", vocab, d, False, 1),
    ]


def timed(fn, repeats, sync):
    for _ in range(3):
        fn()
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync()
    return (time.perf_counter() - start) * 1e3 / repeats


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="f32", choices=["f32", "f16"])
    parser.add_argument("--batch-size", type=int, default=5)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    dtype = torch.float32 if args.dtype == "f32" else torch.float16
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    rows = args.batch_size * args.seq_len
    results, step = [], 0.0
    for name, k, n, transposed, per_step in products():
        x = torch.randn(rows, k, device=device, dtype=dtype) * 0.02
        w = torch.randn(n, k, device=device, dtype=dtype) * 0.02 if transposed else torch.randn(k, n, device=device, dtype=dtype) * 0.02
        weight = w.t() if transposed else w
        ms = timed(lambda: x @ weight, args.repeats, sync)
        step += ms * per_step
        results.append({"product": name, "m": rows, "k": k, "n": n, "transposed_weight": transposed, "per_step": per_step,
                        "ms": ms, "tflops": 2 * rows * k * n / (ms * 1e-3) / 1e12})
    print(json.dumps({"bench": "matmul", "backend": f"torch {torch.__version__} on {args.device}", "dtype": args.dtype,
                      "rows": rows, "results": results, "step_ms": step}))


if __name__ == "__main__":
    main()
