"""PyTorch + PEFT baseline for `prefix-tune bench train` / `bench generate`, same shapes.

Run in the fixtures venv (see make_fixtures.py): python scripts/bench_peft.py
Prints one JSON line per benchmark: a GPT-2-small-shaped random model on the CPU,
prefix training (batch 5 x 64 tokens, P = 10, MLP 512, AdamW) and greedy / beam-5 decoding
(16-token prompt, 32 new tokens).
"""
import json
import sys
import time

import torch
from peft import PrefixTuningConfig, get_peft_model
from transformers import GPT2Config, GPT2LMHeadModel

torch.manual_seed(0)
config = GPT2Config(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
base = GPT2LMHeadModel(config).eval()
peft_model = get_peft_model(
    base,
    PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=10, prefix_projection=True, encoder_hidden_size=512),
)
optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=5e-5)

batch, seq, steps = 5, 64, 3
# `python bench_peft.py 0.5`: only the last half of each sequence carries the loss (E2E-shaped),
# as `prefix-tune bench train --target-fraction 0.5`.
target_fraction = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
source_len = seq - max(1, round(seq * target_fraction))
ids = torch.randint(0, config.vocab_size, (batch * (steps + 1), seq))


def step(chunk):
    labels = chunk.clone()
    labels[:, :source_len] = -100
    out = peft_model(input_ids=chunk, labels=labels)
    out.loss.backward()
    optimizer.step()
    optimizer.zero_grad()


step(ids[:batch])  # warm-up
start = time.perf_counter()
for i in range(1, steps + 1):
    step(ids[i * batch:(i + 1) * batch])
seconds = time.perf_counter() - start
print(json.dumps({"bench": "train", "impl": "pytorch+peft", "threads": torch.get_num_threads(),
                  "tokens_per_second": batch * seq * steps / seconds, "seconds_per_step": seconds / steps}))

prompt = torch.randint(0, config.vocab_size, (1, 16))
results = {}
for name, beams in [("greedy", 1), ("beam5", 5)]:
    kwargs = dict(max_new_tokens=32, min_new_tokens=32, num_beams=beams, do_sample=False, pad_token_id=50256)
    with torch.no_grad():
        base.generate(prompt, **kwargs)
        start = time.perf_counter()
        out = base.generate(prompt, **kwargs)
        seconds = time.perf_counter() - start
    new = out.shape[1] - prompt.shape[1]
    results[name] = {"seconds": seconds, "tokens_per_second": new / seconds}
print(json.dumps({"bench": "generate", "impl": "pytorch", "results": results}))
