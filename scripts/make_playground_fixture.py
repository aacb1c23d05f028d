"""A GPT-2 in HF layout whose greedy answer to any one-token prompt is a fixed hostile string:
tests/fixtures/gpt2-script, for the playground's headless-Chromium test (the page must show
model text as text, never as markup).

    python scripts/make_playground_fixture.py [tests/fixtures]

How it writes a chosen text: attention and MLP are zero, so the last hidden state is
LayerNorm(wte[token] + wpe[position]); wpe[p] = 100·e_p dominates, so position p's logits are
≈ 5.6·wte[v][p] for every token v, and wte[v] = Σ e_p over the positions p where v is the
script's token (EOS after the last). Weights are stored in f16 (exact: 0, 1, 100).
Pinned: torch 2.15.0, transformers 5.23.0 (as scripts/make_fixtures.py).
"""
import json
import shutil
import sys
from pathlib import Path

import torch
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

HOSTILE = '<img src=x onerror="document.title=\'pwned\'"><b>bold</b>'
D = 32
out = Path(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures") / "gpt2-script"
tokenizer_dir = Path("tests/fixtures/gpt2-b")
tok = AutoTokenizer.from_pretrained(tokenizer_dir)
script = tok.encode(HOSTILE) + [tok.eos_token_id]
assert len(script) <= D, f"{len(script)} tokens: widen D"
prompt = tok.encode("Q")
assert len(prompt) == 1 and prompt[0] not in script

config = GPT2Config(vocab_size=len(tok), n_positions=D, n_embd=D, n_layer=1, n_head=2, n_inner=D, layer_norm_epsilon=1e-5,
                    bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)
model = GPT2LMHeadModel(config)
with torch.no_grad():
    for p in model.parameters():
        p.zero_()
    for ln in [model.transformer.h[0].ln_1, model.transformer.h[0].ln_2, model.transformer.ln_f]:
        ln.weight.fill_(1.0)
    for position, token in enumerate(script):
        model.transformer.wpe.weight[position, position] = 100.0
        model.transformer.wte.weight[token, position] += 1.0
model.eval()
ids = torch.tensor([prompt])
generated = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=len(script) + 2, do_sample=False, pad_token_id=tok.eos_token_id)
new = generated[0, 1:].tolist()
assert new == script, (new, script)
text = tok.decode(new[:-1])
assert text == HOSTILE, text

out.mkdir(parents=True, exist_ok=True)
model.half().save_pretrained(out)
for f in ["vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]:
    shutil.copy(tokenizer_dir / f, out / f)
(out / "reference.json").write_text(json.dumps({"prompt": "Q", "text": HOSTILE, "ids": new, "transformers": __import__("transformers").__version__, "torch": torch.__version__}, indent=2) + "\n")
print("wrote", out, len(script), "tokens")
