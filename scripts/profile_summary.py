"""Sums CubeCL's per-kernel GPU times (a `[profiling.logger] level = "basic"` log: one
`| duration | kernel name` line per launch) by kernel, over the last N launches.

    python scripts/profile_summary.py profile_train.log --last 3591 --steps 3

--last takes the steady state (e.g. the last `steps` steps, from `bench train --dispatches`'
dispatches_per_step), leaving out compilation, autotune's probes and warm-up. Prints one JSON
object: launches, GPU milliseconds in all and per step, and the kernels that took the most.
"""
import argparse
import collections
import json
import re

UNITS = {"ns": 1e-6, "µs": 1e-3, "us": 1e-3, "ms": 1.0, "s": 1e3}


def milliseconds(text):
    match = re.fullmatch(r"([\d.]+)(ns|µs|us|ms|s)", text.strip())
    return float(match.group(1)) * UNITS[match.group(2)] if match else None


def launches(path):
    with open(path, encoding="utf-8", errors="replace") as log:
        for line in log:
            parts = line.split("|")
            if line.startswith("| ") and len(parts) >= 3 and (ms := milliseconds(parts[1])) is not None:
                yield ms, parts[2].strip()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("log")
    parser.add_argument("--last", type=int, help="only the last N launches")
    parser.add_argument("--steps", type=int, default=1, help="steps those launches cover")
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    rows = list(launches(args.log))
    if args.last:
        rows = rows[-args.last:]
    total, count = collections.Counter(), collections.Counter()
    for ms, name in rows:
        total[name] += ms
        count[name] += 1
    gpu_ms = sum(total.values())
    print(json.dumps({
        "log": args.log, "launches": len(rows), "gpu_ms": round(gpu_ms, 3), "gpu_ms_per_step": round(gpu_ms / args.steps, 3),
        "top": [{"kernel": name[:80], "launches": count[name], "ms": round(ms, 3)} for name, ms in total.most_common(args.top)],
    }))


if __name__ == "__main__":
    main()
