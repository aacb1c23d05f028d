"""PyTorch + PEFT baseline for `prefix-tune bench train` / `bench generate`, same shapes.

Run in the fixtures venv (see make_fixtures.py):

    python scripts/bench_peft.py [TARGET_FRACTION] [--device cpu|cuda] [--steps N]

Prints one JSON line per benchmark: a GPT-2-small-shaped random model, prefix training
(batch 5 x 64 tokens, P = 10, MLP 512, AdamW) and greedy / beam-5 decoding (16-token prompt,
32 new tokens).
"""
import argparse
import json
import resource
import time

import torch
from peft import PrefixTuningConfig, get_peft_model
from transformers import GPT2Config, GPT2LMHeadModel

parser = argparse.ArgumentParser()
# Only the last TARGET_FRACTION of each sequence carries the loss (E2E-shaped: 0.5), as
# `prefix-tune bench train --target-fraction`.
parser.add_argument("target_fraction", nargs="?", type=float, default=1.0)
parser.add_argument("--device", default="cpu")
parser.add_argument("--steps", type=int, default=3)
parser.add_argument("--seq-len", type=int, default=64)
parser.add_argument("--what", choices=["train", "generate", "both"], default="both")
parser.add_argument("--autocast", choices=["bf16", "f16"], help="autocast in this dtype (bf16 on the CPU: oneDNN's AMX bf16 matmuls)")
parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: PyTorch's, one per core)")
args = parser.parse_args()
if args.threads:
    torch.set_num_threads(args.threads)
device = torch.device(args.device)


def autocast():
    dtype = torch.float16 if args.autocast == "f16" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype, enabled=args.autocast is not None)


def sync():
    if device.type == "cuda":
        torch.cuda.synchronize()


def gpu_memory():
    """The most the process took from the GPU (reserved) and its tensors held (allocated), in
    MiB, as `prefix-tune bench` reports its allocator's pools; None on the CPU."""
    if device.type != "cuda":
        return None
    mib = 1 << 20
    return {"reserved_mib": torch.cuda.max_memory_reserved() / mib, "allocated_mib": torch.cuda.max_memory_allocated() / mib}


torch.manual_seed(0)
config = GPT2Config(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
base = GPT2LMHeadModel(config).eval().to(device)
peft_model = get_peft_model(
    base,
    PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=10, prefix_projection=True, encoder_hidden_size=512),
)
optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=5e-5)

batch, seq, steps = 5, args.seq_len, args.steps
source_len = seq - max(1, round(seq * args.target_fraction))
ids = torch.randint(0, config.vocab_size, (batch * (steps + 1), seq)).to(device)


def step(chunk):
    labels = chunk.clone()
    labels[:, :source_len] = -100
    with autocast():
        out = peft_model(input_ids=chunk, labels=labels)
    out.loss.backward()
    optimizer.step()
    optimizer.zero_grad()


if args.what in ("train", "both"):
    step(ids[:batch])  # warm-up
    sync()
    start = time.perf_counter()
    for i in range(1, steps + 1):
        step(ids[i * batch:(i + 1) * batch])
    sync()
    seconds = time.perf_counter() - start
    print(json.dumps({"bench": "train", "impl": "pytorch+peft", "device": args.device, "autocast": args.autocast,
                      "threads": torch.get_num_threads(), "steps": steps,
                      "tokens_per_second": batch * seq * steps / seconds, "seconds_per_step": seconds / steps,
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "gpu_memory": gpu_memory()}))

if args.what in ("generate", "both"):
    prompt = torch.randint(0, config.vocab_size, (1, 16)).to(device)
    results = {}
    # "sample": temperature 0.8, top-k 50, top-p 0.9, as `prefix-tune bench generate` draws.
    sampling = dict(do_sample=True, temperature=0.8, top_k=50, top_p=0.9)
    for name, beams, draw in [("greedy", 1, {}), ("beam5", 5, {}), ("sample", 1, sampling)]:
        kwargs = dict(max_new_tokens=32, min_new_tokens=32, num_beams=beams, do_sample=False, pad_token_id=50256)
        kwargs.update(draw)
        with torch.no_grad(), autocast():
            base.generate(prompt, **kwargs)
            sync()
            start = time.perf_counter()
            out = base.generate(prompt, **kwargs)
            sync()
            seconds = time.perf_counter() - start
        new = out.shape[1] - prompt.shape[1]
        results[name] = {"seconds": seconds, "tokens_per_second": new / seconds}
    print(json.dumps({"bench": "generate", "impl": "pytorch", "device": args.device, "autocast": args.autocast, "results": results, "gpu_memory": gpu_memory()}))
