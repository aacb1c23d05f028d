"""On a lent GPU, before any timing: the same decoding and training on wgpu and on the CPU
backend (flex) of one binary, on the test fixtures, so that a kernel the GPU runs wrongly (a race
lavapipe's CPU threads hide, a driver's miscompile) shows before its speed is read. Decoding goes
through the tuned products, the few-row kernel and the device's search; training through the
attention, cross-entropy, LayerNorm and AdamW kernels of shaders/.

    python3 scripts/gpu_parity.py BINARY        # one line per check, then "parity: N of M hold"

Decoding must give the same tokens (beam scores within 1e-4), and in --dtype f16 the few-row
kernel Burn's f16 matmul's; a 3-step training run the same losses within 1e-4 relative, and
within 5e-4 with --dtype f16 (the f16 checks skipped where the adapter has no f16). Exits 1 if
any check fails. Needs no Python package beyond the standard library. Runs from the repository
root. On lavapipe it takes a `wgpu` (WGSL) or a `vulkan` (SPIR-V) build.
"""
import json
import os
import random
import subprocess
import sys
import tempfile

FIXTURES = "tests/fixtures"


def run(binary, args, env=None):
    out = subprocess.run([binary] + args, capture_output=True, text=True, env=dict(os.environ, **(env or {})), timeout=300)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}")
    return out.stdout


def decoded(binary, model, options, backend, env):
    prompts = ["--prompt-ids", "11,42,7,99", "--prompt-ids", "5,6"]
    lines = run(binary, ["generate", "--model", f"{FIXTURES}/{model}", "--json", "--backend", backend] + options + prompts, env)
    return [json.loads(l) for l in lines.splitlines() if l.startswith("{")]


def same_decoding(gpu, cpu):
    return len(gpu) == len(cpu) and all(
        g["ids"] == c["ids"] and (g["score"] is None or abs(g["score"] - c["score"]) <= 1e-4 * max(1.0, abs(c["score"])))
        for g, c in zip(gpu, cpu))


def losses(binary, data, backend, out, dtype="f32"):
    # A zero flat prefix, without dropout: the two backends' random streams differ.
    run(binary, ["train", "--model", f"{FIXTURES}/gpt2-b", "--data", data, "--prefix-length", "3", "--reparam", "flat",
                 "--init", "zero", "--lr", "0.01", "--batch-size", "2", "--max-steps", "3", "--seed", "1",
                 "--prefix-dropout", "0", "--lm-dropout", "0", "--backend", backend, "--dtype", dtype, "--out", out])
    records = [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl"))]
    return [r["loss"] for r in records if "loss" in r and "step" in r]


def main():
    binary = sys.argv[1]
    checks, held = 0, 0

    def report(name, ok, detail=""):
        nonlocal checks, held
        checks, held = checks + 1, held + ok
        print(f"parity {'ok' if ok else 'DIFFERS'}: {name}{': ' + detail if detail and not ok else ''}", flush=True)

    for model in ["gpt2-a", "gpt2-b", "bart-a"]:
        for name, options in [("greedy", ["--max-new-tokens", "12"]), ("beam 4", ["--max-new-tokens", "12", "--num-beams", "4"])]:
            cpu = decoded(binary, model, options, "flex", {})
            for matmul in ["tune", "burn"]:
                try:
                    gpu = decoded(binary, model, options, "wgpu", {"PREFIX_TUNE_MATMUL": matmul})
                    report(f"{model} {name}, PREFIX_TUNE_MATMUL={matmul}", same_decoding(gpu, cpu), f"wgpu {gpu} against flex {cpu}")
                except (RuntimeError, subprocess.TimeoutExpired) as e:
                    report(f"{model} {name}, PREFIX_TUNE_MATMUL={matmul}", False, str(e))
    # --dtype f16 decoding: the few-row kernel (f16 weights, inputs rounded on their bits) where
    # a kernel of ours is asked for, Burn's f16 matmul otherwise; the same contract, so the same
    # tokens (scores within 1e-4), and a few-row kernel a GPU runs wrongly shows here.
    for model in ["gpt2-a", "bart-a"]:
        name = f"{model} beam 4 in f16, few-row kernel against Burn's f16 matmul"
        options = ["--max-new-tokens", "12", "--num-beams", "4", "--dtype", "f16"]
        try:
            ours, burns = (decoded(binary, model, options, "wgpu", {"PREFIX_TUNE_MATMUL": m}) for m in ["tune", "burn"])
            report(name, same_decoding(ours, burns), f"few-row {ours} against Burn's {burns}")
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            if "SHADER_F16" in str(e):
                print(f"parity skipped: {name} ({e})", flush=True)
            else:
                report(name, False, str(e))
    with tempfile.TemporaryDirectory() as tmp:
        rng = random.Random(0)
        data = os.path.join(tmp, "train.jsonl")
        with open(data, "w") as f:
            for _ in range(6):
                ids = [rng.randrange(50257) for _ in range(rng.randrange(8, 20))]
                f.write(json.dumps({"input_ids": ids, "labels": [-100] * (len(ids) // 2) + ids[len(ids) // 2:]}) + "\n")
        cpu = losses(binary, data, "flex", os.path.join(tmp, "cpu"))
        # In f32 within 1e-4 of flex. In f16 the frozen products are f16 (cooperative matrices
        # where CubeCL's SPIR-V finds them) with f32 sums: f16 rounding moves the losses off
        # f32's, on lavapipe by 1.5e-5 relative at most, so 5e-4 (f16's own rounding) leaves room
        # and still catches a wrong product; and they must not equal f32's, which shows the
        # products did run in f16.
        for dtype, tolerance in [("f32", 1e-4), ("f16", 5e-4)]:
            name = f"gpt2-b, 3 training steps in {dtype} against flex in f32"
            try:
                gpu = losses(binary, data, "wgpu", os.path.join(tmp, dtype), dtype)
                close = len(gpu) == len(cpu) == 3 and all(abs(g - c) <= tolerance * abs(c) for g, c in zip(gpu, cpu))
                report(f"{name} (flex losses {[round(c, 4) for c in cpu]})", close and (dtype == "f32" or gpu != cpu), f"wgpu losses {gpu} against flex {cpu}")
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                if dtype == "f16" and "SHADER_F16" in str(e):  # the one-line refusal of an adapter without f16
                    print(f"parity skipped: {name} ({e})", flush=True)
                else:
                    report(name, False, str(e))
    print(f"parity: {held} of {checks} hold", flush=True)
    sys.exit(0 if held == checks else 1)


if __name__ == "__main__":
    main()
