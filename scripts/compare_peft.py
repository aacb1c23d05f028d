"""Same-run comparison of `prefix-tune bench` with PyTorch + PEFT (scripts/bench_peft.py),
interleaved A B A B so that both see the same machine state. Prints one JSON line per benchmark
with each side's runs and the ratio of medians: training tokens/s (ours / theirs; > 1 means we
are faster) and decoding time (ours / theirs; < 1 means we are faster). On a GPU it also reports
the GPU memory each side reserved (`gpu_reserved_ratio`: ours / theirs, < 1 means we take less).

    python scripts/compare_peft.py --binary target/release/prefix-tune --rounds 3 --target-fraction 0.5
    python scripts/compare_peft.py --backend wgpu --device cuda --steps 20   # on a GPU machine
    python scripts/compare_peft.py --before old/prefix-tune    # also an older build, A B C A B C
    python scripts/compare_peft.py --dtype bf16    # ours in bf16; PEFT in f32 and under bf16 autocast
    python scripts/compare_peft.py --backend wgpu --device cuda --dtype f16   # ours f16; PyTorch f32 and f16 autocast
    python scripts/compare_peft.py --backend wgpu --device cuda --env PREFIX_TUNE_MATMUL=shaders:128x128_v4 \
        --before target/release/prefix-tune   # ours through our matmul, and without it, in the same rounds

With --dtype bf16 our side runs `--dtype bf16`, and each round also runs PyTorch under bf16
autocast (AMX through oneDNN on a CPU that has it), reported as `peft_autocast_*` beside the f32
baseline: the issue's target is against the f32 baseline, the autocast run says how we stand
against PyTorch at the same precision.

With --before, each round also runs the older binary, and the report adds its medians and the
speed-up of --binary over it, so a change is measured before and after in the same run. --env
KEY=VALUE (repeatable) sets a variable for --binary's runs only, so --before may be the same
binary without it.

Run it in the fixtures venv (torch, transformers, peft as pinned in make_fixtures.py).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def last_json(command, bench, env=None):
    out = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
    lines = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
    return next(l for l in lines if l.get("bench") == bench)


def gpu_memory(runs):
    """The largest GPU memory any run reserved, and the largest its tensors held at once (PyTorch)
    or at the end (ours: `in_use` after the timed work), in MiB; None where a run has no GPU."""
    reports = [r.get("gpu_memory") for r in runs]
    if not reports or None in reports:
        return None
    held = [r.get("allocated_mib", r.get("in_use_mib")) for r in reports]
    return {"reserved_mib": max(r["reserved_mib"] for r in reports), "held_mib": max(held)}


def memory_report(ours, theirs):
    """Both sides' GPU memory and ours over theirs (< 1: we take less), where both ran on a GPU."""
    mine, hf = gpu_memory(ours), gpu_memory(theirs)
    if not (mine and hf):
        return {}
    return {"prefix_tune_gpu_memory": mine, "peft_gpu_memory": hf, "gpu_reserved_ratio": mine["reserved_mib"] / hf["reserved_mib"]}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", default="target/release/prefix-tune")
    parser.add_argument("--backend", default="flex")
    parser.add_argument("--device", default="cpu", help="PyTorch's device: cpu or cuda")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--target-fraction", type=float, default=0.5)
    parser.add_argument("--seq-len", type=int, default=64, help="training sequence length (E2E's mean is 55)")
    parser.add_argument("--what", choices=["train", "generate", "both"], default="both")
    parser.add_argument("--before", help="an older prefix-tune binary to run in the same rounds")
    parser.add_argument("--dtype", choices=["f32", "bf16", "f16"], default="f32", help="our --dtype; bf16 or f16 also runs PyTorch under autocast in that dtype")
    parser.add_argument("--threads", type=int, help="CPU threads on both sides: our --threads, PyTorch's set_num_threads")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="set for --binary's runs only (not --before's)")
    args = parser.parse_args()
    ours_env = dict(os.environ, **dict(pair.split("=", 1) for pair in args.env))
    threads = ["--threads", str(args.threads)] if args.threads else []
    theirs_cmd = [sys.executable, str(HERE / "bench_peft.py"), str(args.target_fraction),
                  "--device", args.device, "--steps", str(args.steps), "--seq-len", str(args.seq_len)] + threads
    autocast_cmd = theirs_cmd + ["--autocast", args.dtype] if args.dtype != "f32" else None
    ours_cmd = [args.binary, "bench", "--backend", args.backend, "--dtype", args.dtype] + threads
    before_cmd = [args.before, "bench", "--backend", args.backend, "--dtype", args.dtype] + threads if args.before else None
    if args.what in ("train", "both"):
        train_args = ["train", "--steps", str(args.steps), "--seq-len", str(args.seq_len), "--target-fraction", str(args.target_fraction)]
        ours, theirs, before, autocast = [], [], [], []
        for _ in range(args.rounds):
            ours.append(last_json(ours_cmd + train_args, "train", ours_env))
            theirs.append(last_json(theirs_cmd + ["--what", "train"], "train"))
            if autocast_cmd:
                autocast.append(last_json(autocast_cmd + ["--what", "train"], "train"))
            if before_cmd:
                before.append(last_json(before_cmd + train_args, "train"))
        ours_tps = statistics.median(r["tokens_per_second"] for r in ours)
        theirs_tps = statistics.median(r["tokens_per_second"] for r in theirs)
        report = {"bench": "train", "backend": args.backend, "torch_device": args.device, "threads": args.threads, "env": args.env,
                  "target_fraction": args.target_fraction, "seq_len": args.seq_len,
                  "prefix_tune_tokens_per_second": ours_tps, "peft_tokens_per_second": theirs_tps,
                  "ratio": ours_tps / theirs_tps, "dtype": args.dtype,
                  "prefix_tune_peak_rss_mib": max(r.get("peak_rss_mib") or 0 for r in ours),
                  "peft_peak_rss_mib": max(r.get("peak_rss_mib") or 0 for r in theirs)}
        report.update(memory_report(ours, theirs))
        if autocast:
            autocast_tps = statistics.median(r["tokens_per_second"] for r in autocast)
            report.update({"peft_autocast_tokens_per_second": autocast_tps, "ratio_to_autocast": ours_tps / autocast_tps})
        if before:
            before_tps = statistics.median(r["tokens_per_second"] for r in before)
            report.update({"before_tokens_per_second": before_tps, "before_ratio": before_tps / theirs_tps, "speedup": ours_tps / before_tps})
        report.update({"prefix_tune_runs": ours, "peft_runs": theirs, "peft_autocast_runs": autocast, "before_runs": before})
        print(json.dumps(report), flush=True)
    if args.what in ("generate", "both"):
        ours, theirs, before, autocast = [], [], [], []
        for _ in range(args.rounds):
            ours.append(last_json(ours_cmd + ["generate"], "generate", ours_env))
            theirs.append(last_json(theirs_cmd + ["--what", "generate"], "generate"))
            if autocast_cmd:
                autocast.append(last_json(autocast_cmd + ["--what", "generate"], "generate"))
            if before_cmd:
                before.append(last_json(before_cmd + ["generate"], "generate"))
        report = {"bench": "generate", "backend": args.backend, "torch_device": args.device, "dtype": args.dtype, "threads": args.threads, "env": args.env}
        report.update(memory_report(ours, theirs))
        for name in ("greedy", "beam5", "sample"):
            if not all(name in r["results"] for r in ours + theirs):
                continue  # a build or script from before "sample" was timed
            mine = statistics.median(r["results"][name]["seconds"] for r in ours)
            hf = statistics.median(r["results"][name]["seconds"] for r in theirs)
            report[name] = {"prefix_tune_seconds": mine, "hf_generate_seconds": hf, "time_ratio": mine / hf}
            if autocast:
                hf16 = statistics.median(r["results"][name]["seconds"] for r in autocast)
                report[name].update({"hf_autocast_seconds": hf16, "time_ratio_to_autocast": mine / hf16})
            if before and all(name in r["results"] for r in before):
                old = statistics.median(r["results"][name]["seconds"] for r in before)
                report[name].update({"before_seconds": old, "before_time_ratio": old / hf, "speedup": old / mine})
        report.update({"prefix_tune_runs": ours, "hf_runs": theirs, "hf_autocast_runs": autocast, "before_runs": before})
        print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
