"""Same-run comparison of `prefix-tune bench train` with PyTorch + PEFT (scripts/bench_peft.py),
interleaved A B A B so that both see the same machine state. Prints one JSON line with each
side's runs and the ratio of medians (ours / theirs; > 1 means we are faster).

    python scripts/compare_peft.py --binary target/release/prefix-tune --rounds 3 --target-fraction 0.5

Run it in the fixtures venv (torch, transformers, peft as pinned in make_fixtures.py).
"""
import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def last_json(command, bench):
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    lines = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
    return next(l for l in lines if l.get("bench") == bench)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", default="target/release/prefix-tune")
    parser.add_argument("--backend", default="flex")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--target-fraction", type=float, default=0.5)
    args = parser.parse_args()
    ours, theirs = [], []
    for _ in range(args.rounds):
        ours.append(last_json([args.binary, "bench", "train", "--backend", args.backend,
                               "--target-fraction", str(args.target_fraction)], "train"))
        theirs.append(last_json([sys.executable, str(HERE / "bench_peft.py"), str(args.target_fraction)], "train"))
    ours_tps = statistics.median(r["tokens_per_second"] for r in ours)
    theirs_tps = statistics.median(r["tokens_per_second"] for r in theirs)
    print(json.dumps({"bench": "train", "target_fraction": args.target_fraction,
                      "prefix_tune_tokens_per_second": ours_tps, "peft_tokens_per_second": theirs_tps,
                      "ratio": ours_tps / theirs_tps, "prefix_tune_runs": ours, "peft_runs": theirs}))


if __name__ == "__main__":
    main()
