#!/usr/bin/env python3
"""Generate the Hugging Face reference fixtures under tests/fixtures/.

The Rust crates must reproduce Hugging Face transformers + PEFT exactly; this
script builds tiny random GPT-2 models and records what HF/PEFT compute for
them (logits, generate() outputs, tokenizer ids, prefix-tuning tensors, losses,
gradients and one AdamW step).

How to run (from the repository root; nothing here is needed by cargo/CI):

    python3.11 -m venv /work/venv
    /work/venv/bin/pip install "transformers==5.23.0" "peft==0.21.2" \
        "torch==2.15.0" safetensors numpy
    # (torch from PyPI (its +cu132 build, run on CPU); a CPU-only wheel works too)
    /work/venv/bin/python scripts/make_fixtures.py [OUT_DIR=tests/fixtures]

Pinned versions the committed fixtures were produced with:
    torch 2.15.0, transformers 5.23.0, peft 0.21.2, tokenizers 0.23.3,
    safetensors 0.8.0, numpy 2.4.6, Python 3.11.7.
NOTE: transformers >= 5.24 drops the PEFT prefix during generate(); keep 5.23.0.

Inputs read: /work/shared/tokenizer/gpt2/ (GPT-2 BPE files) and
/work/shared/data/e2e/devset.csv (E2E NLG, CC BY-SA 4.0). Override with the
environment variables GPT2_TOKENIZER_DIR / E2E_DEVSET.

Everything is float32, eager attention, dropout 0, seeded; the script is
deterministic on a given machine (re-running rewrites identical ids; float
values may differ in the last ulp across CPUs/thread counts).
"""

import csv
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

import peft
import transformers
from peft import PeftModel, PrefixTuningConfig, get_peft_model
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

TOKENIZER_DIR = Path(os.environ.get("GPT2_TOKENIZER_DIR", "/work/shared/tokenizer/gpt2"))
E2E_DEVSET = Path(os.environ.get("E2E_DEVSET", "/work/shared/data/e2e/devset.csv"))
TOKENIZER_FILES = [
    "tokenizer.json",
    "vocab.json",
    "merges.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
]
E2E_LICENSE = (
    "E2E NLG Challenge dataset (Novikova, Dusek, Rieser 2017), "
    "licensed CC BY-SA 4.0; texts below are quoted from devset.csv"
)

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)
torch.set_default_dtype(torch.float32)

VERSIONS = {
    "python": sys.version.split()[0],
    "torch": torch.__version__,
    "transformers": transformers.__version__,
    "peft": peft.__version__,
    "numpy": np.__version__,
}


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def seed(s):
    torch.manual_seed(s)
    np.random.seed(s)


def pad_batch(prompts, pad_id, side):
    """Pad a list of id lists into (input_ids, attention_mask) int64 tensors."""
    t = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), t), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), t), dtype=torch.long)
    for i, p in enumerate(prompts):
        if side == "right":
            ids[i, : len(p)] = torch.tensor(p)
            mask[i, : len(p)] = 1
        else:
            ids[i, t - len(p) :] = torch.tensor(p)
            mask[i, t - len(p) :] = 1
    return ids, mask


def hf_position_ids(mask):
    """Exactly GenerationMixin._prepare_position_ids_for_generation."""
    pos = mask.long().cumsum(-1) - 1
    return pos.masked_fill(mask == 0, 0)


def strip_new_tokens(seqs, prompt_width, eos_id):
    """New tokens after the (left-padded) prompt; cut after the first eos (kept)."""
    out = []
    for row in seqs.tolist():
        new = row[prompt_width:]
        if eos_id is not None and eos_id in new:
            new = new[: new.index(eos_id) + 1]
        out.append(new)
    return out


def load_model(path):
    m = GPT2LMHeadModel.from_pretrained(path, attn_implementation="eager", dtype=torch.float32)
    m.eval()
    assert m.config._attn_implementation == "eager"
    return m


def run_generate(model, prompts, pad_id, eos_id, kwargs):
    """One left-padded batch through model.generate(**kwargs)."""
    ids, mask = pad_batch(prompts, pad_id, "left")
    full = dict(kwargs)
    full.update(pad_token_id=pad_id, eos_token_id=eos_id)
    is_beam = full.get("num_beams", 1) > 1
    if is_beam:
        full.update(output_scores=True, return_dict_in_generate=True)
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, **full)
    seqs = out.sequences if is_beam else out
    res = {
        "kwargs": full,
        "new_tokens": strip_new_tokens(seqs, ids.shape[1], eos_id),
        "raw_sequences": seqs.tolist(),
    }
    if is_beam:
        res["sequences_scores"] = [float(x) for x in out.sequences_scores.tolist()]
    return res


def gpt2_config(**kw):
    base = dict(
        activation_function="gelu_new",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        summary_first_dropout=0.0,
        initializer_range=0.2,
        use_cache=True,
    )
    base.update(kw)
    cfg = GPT2Config(**base)
    cfg._attn_implementation = "eager"
    return cfg


def build_random_model(cfg, s):
    seed(s)
    model = GPT2LMHeadModel(cfg)  # default HF GPT-2 init with initializer_range=0.2
    # HF init leaves all biases at 0 and LayerNorm at (1, 0); perturb them so a
    # Rust loader that drops a bias / LN affine would be caught by the fixtures.
    g = torch.Generator().manual_seed(s + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.add_(torch.randn(p.shape, generator=g) * 0.1)
            elif ("ln_" in name) and name.endswith(".weight"):
                p.copy_(1.0 + torch.randn(p.shape, generator=g) * 0.1)
    model.eval()
    return model


def random_prompts(lengths, vocab, s, exclude=()):
    g = torch.Generator().manual_seed(s)
    prompts = []
    for n in lengths:
        p = []
        while len(p) < n:
            t = int(torch.randint(1, vocab, (1,), generator=g))
            if t not in exclude:
                p.append(t)
        prompts.append(p)
    return prompts


def model_reference(model, prompts, pad_id):
    """Plain forward references: right-padded and left-padded batches."""
    tensors = {}
    r_ids, r_mask = pad_batch(prompts, pad_id, "right")
    l_ids, l_mask = pad_batch(prompts, pad_id, "left")
    l_pos = hf_position_ids(l_mask)
    with torch.no_grad():
        r_logits = model(input_ids=r_ids, attention_mask=r_mask).logits
        l_logits = model(input_ids=l_ids, attention_mask=l_mask, position_ids=l_pos).logits
    # sanity: padding side must not change valid-token logits
    for i, p in enumerate(prompts):
        t = r_ids.shape[1]
        a = r_logits[i, : len(p)]
        b = l_logits[i, t - len(p) :]
        assert torch.allclose(a, b, atol=1e-4), (i, (a - b).abs().max())
    tensors.update(
        {
            "batch.input_ids": r_ids,
            "batch.attention_mask": r_mask,
            "batch.logits": r_logits.float().contiguous(),
            "left.input_ids": l_ids,
            "left.attention_mask": l_mask,
            "left.position_ids": l_pos,
            "left.logits": l_logits.float().contiguous(),
        }
    )
    return tensors


GEN_SPECS = {
    "greedy": dict(max_new_tokens=12, do_sample=False),
    "beam4": dict(
        num_beams=4, max_new_tokens=12, early_stopping=True, length_penalty=1.0, do_sample=False
    ),
    "beam4_lp": dict(
        num_beams=4,
        max_new_tokens=10,
        length_penalty=0.8,
        early_stopping=False,
        no_repeat_ngram_size=2,
        min_new_tokens=3,
        do_sample=False,
    ),
    "beam5": dict(num_beams=5, max_new_tokens=8, early_stopping=True, do_sample=False),
}


def generation_reference(model, prompts, pad_id, eos_id):
    res = {}
    for name, kw in GEN_SPECS.items():
        res[name] = run_generate(model, prompts, pad_id, eos_id, kw)
    # bad words: block the first greedy token of prompt 0 and a bigram greedy
    # produced for another prompt (which must not contain token a).
    g = res["greedy"]["new_tokens"]
    a = g[0][0]
    bigram = None
    for row in g[1:] + g[:1]:
        for k in range(1, len(row)):
            if a not in (row[k - 1], row[k]) and row[k] != eos_id:
                bigram = [row[k - 1], row[k]]
                break
        if bigram:
            break
    assert bigram is not None
    bad = [[a], bigram]
    kw = dict(GEN_SPECS["greedy"], bad_words_ids=bad)
    res["greedy_bad_words"] = run_generate(model, prompts, pad_id, eos_id, kw)
    assert res["greedy_bad_words"]["new_tokens"] != g, "bad_words_ids had no effect"
    return res


def write_safetensors(path, tensors):
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(path))


def tensor_summary(tensors):
    return {k: {"shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", "")} for k, v in tensors.items()}


def dump_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, ensure_ascii=False)
        f.write("\n")


# ---------------------------------------------------------------------------
# A + B: tiny models and plain references
# ---------------------------------------------------------------------------


def choose_eos(model, prompts):
    """Pick an eos id for gpt2-a that greedy emits mid-continuation and that
    makes beam search finish some hypotheses before max_new_tokens."""
    pad = 0
    kw = dict(GEN_SPECS["greedy"])
    ids, mask = pad_batch(prompts, pad, "left")
    with torch.no_grad():
        g = model.generate(input_ids=ids, attention_mask=mask, pad_token_id=pad, eos_token_id=None, **kw)
    conts = g[:, ids.shape[1] :].tolist()
    in_prompts = {t for p in prompts for t in p}
    cands = []
    for i, row in enumerate(conts):
        for k, t in enumerate(row):
            if k >= 2 and t not in in_prompts and t != pad and t not in cands:
                cands.append(t)
    best = None
    for c in cands:
        res = generation_reference_probe(model, prompts, c)
        if res is None:
            continue
        score = res
        if best is None or score > best[0]:
            best = (score, c)
    assert best is not None, "no eos candidate makes beams finish early"
    return best[1], conts


def generation_reference_probe(model, prompts, eos):
    """Score how informative `eos` makes the generate fixtures."""
    score = 0
    greedy = run_generate(model, prompts, eos, eos, GEN_SPECS["greedy"])["new_tokens"]
    stopped = sum(1 for r in greedy if r and r[-1] == eos)
    if stopped == 0 or stopped == len(prompts):
        return None  # want a mix of finished / unfinished greedy rows
    if any(len(r) < 3 for r in greedy):
        score -= 1
    for name in ("beam4", "beam4_lp", "beam5"):
        r = run_generate(model, prompts, eos, eos, GEN_SPECS[name])["new_tokens"]
        fin = sum(1 for x in r if x and x[-1] == eos)
        score += 2 * (0 < fin < len(prompts)) + (fin > 0)
    return score


def build_gpt2_a(out):
    d = out / "gpt2-a"
    cfg = gpt2_config(
        n_layer=3,
        n_head=4,
        n_embd=24,
        n_positions=64,
        vocab_size=1000,
        n_inner=None,
        layer_norm_epsilon=1e-5,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    model = build_random_model(cfg, 1234)
    prompts = random_prompts([11, 7, 4], 1000, 99)
    eos, probe_conts = choose_eos(model, prompts)
    # the chosen eos must not be in the prompts (random_prompts has no exclusion
    # here, choose_eos only considers tokens absent from the prompts)
    for c in (model.config, model.generation_config):
        c.bos_token_id = eos
        c.eos_token_id = eos
        c.pad_token_id = eos
    d.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(d, safe_serialization=True)
    return d, prompts, eos, probe_conts


def build_gpt2_b(out, tok):
    d = out / "gpt2-b"
    cfg = gpt2_config(
        n_layer=4,
        n_head=2,
        n_embd=16,
        n_positions=48,
        vocab_size=50257,
        n_inner=40,
        layer_norm_epsilon=1e-6,
        bos_token_id=50256,
        eos_token_id=50256,
        pad_token_id=50256,
    )
    model = build_random_model(cfg, 4321)
    for c in (model.config, model.generation_config):
        c.bos_token_id = 50256
        c.eos_token_id = 50256
        c.pad_token_id = 50256
    d.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(d, safe_serialization=True)
    for f in TOKENIZER_FILES:
        shutil.copyfile(TOKENIZER_DIR / f, d / f)
        os.chmod(d / f, 0o644)
    # short real-text prompts (kept short: logits are [3, T, 50257] float32)
    texts = [" name : The Vaults", " The Eagle is", " Hello"]
    prompts = [tok(t)["input_ids"] for t in texts]
    return d, prompts, texts


def plain_references(d, prompts, eos, extra):
    model = load_model(d)
    tensors = model_reference(model, prompts, eos)
    write_safetensors(d / "reference.safetensors", tensors)
    gens = generation_reference(model, prompts, eos, eos)
    ref = {
        "produced_by": "scripts/make_fixtures.py",
        "versions": VERSIONS,
        "model_dir": d.name,
        "prompts": prompts,
        "pad_token_id": eos,
        "eos_token_id": eos,
        "bos_token_id": eos,
        "padding_side_for_generate": "left",
        "attn_implementation": "eager",
        "generate": gens,
        "reference_safetensors": tensor_summary(tensors),
        "notes": [
            "generate: all prompts in ONE left-padded batch (pad=eos), attention_mask given, "
            "position_ids = (mask.cumsum(-1)-1).masked_fill(mask==0, 0) as HF computes.",
            "new_tokens: prompt excluded; cut after the first eos (eos kept); raw_sequences "
            "are the full HF output rows incl. left padding and trailing pad.",
            "beam sequences_scores = sum of log-probs (after logits processors) / "
            "(num_new_tokens ** length_penalty), num_new_tokens counted incl. eos.",
            "left.position_ids is what the left.logits forward was given.",
        ],
    }
    ref.update(extra)
    dump_json(d / "reference.json", ref)
    return model, gens


# ---------------------------------------------------------------------------
# C: tokenizer cases
# ---------------------------------------------------------------------------


def tokenizer_cases(out, tok):
    from tokenizers import Tokenizer

    raw = Tokenizer.from_file(str(TOKENIZER_DIR / "tokenizer.json"))
    with open(E2E_DEVSET, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    # 4 rows with distinct MRs (the last one contains a pound sign): 8 texts
    pound = next(i for i, r in enumerate(rows) if "£" in r["ref"])
    picks = [0, 57, 300, pound]
    assert len({rows[i]["mr"] for i in picks}) == 4
    texts = []
    for i in picks:
        texts.append(("e2e_mr", rows[i]["mr"]))
        texts.append(("e2e_ref", rows[i]["ref"]))
    edge = [
        ("emoji", "I love pizza 🍕🍕 and 👍🏽!"),
        ("cjk", "東京は日本の首都です。中文测试"),
        ("accented", "Café crème, naïve façade, Ångström, Zürich"),
        ("leading_space", " leading space"),
        ("trailing_space", "trailing space "),
        ("multiple_spaces", "a  b   c    d"),
        ("only_spaces", "    "),
        ("newlines", "line one\nline two\n\nline four\n"),
        ("crlf", "windows\r\nline"),
        ("tabs", "col1\tcol2\t\tcol3"),
        ("eot_middle", "first part<|endoftext|>second part"),
        ("eot_ends", "<|endoftext|>start and end<|endoftext|>"),
        ("eot_only", "<|endoftext|>"),
        ("eot_spaced", "a <|endoftext|> b"),
        ("e2e_linearized", " name : The Vaults | Type : pub <|endoftext|> The Vaults is a pub. <|endoftext|>"),
        ("empty", ""),
        ("digits", "1234567"),
        ("contractions", "aren't I'm"),
        ("mixed_punct", "Hello, world! (test) [x] {y} \"quoted\" -- ok... $12.50 £20 100%"),
    ]
    texts += edge
    cases = []
    for kind, text in texts:
        ids = tok(text)["input_ids"]
        assert ids == tok.encode(text, add_special_tokens=False)
        raw_ids = raw.encode(text, add_special_tokens=False).ids
        cases.append(
            {
                "kind": kind,
                "text": text,
                "ids": ids,
                "decoded": tok.decode(ids, clean_up_tokenization_spaces=False),
                "tokenizers_lib_ids_equal": raw_ids == ids,
            }
        )
    obj = {
        "produced_by": "scripts/make_fixtures.py",
        "versions": dict(VERSIONS, tokenizers=__import__("tokenizers").__version__),
        "tokenizer": "AutoTokenizer.from_pretrained(shared/tokenizer/gpt2) (fast, "
        + type(tok).__name__
        + "); ids = tok(text)['input_ids'] (GPT-2 adds no special tokens)",
        "license": E2E_LICENSE,
        "e2e_rows": picks,
        "cases": cases,
    }
    dump_json(out / "tokenizer_cases.json", obj)
    return cases


# ---------------------------------------------------------------------------
# D: PEFT prefix tuning
# ---------------------------------------------------------------------------


def cache_kv(cache, layer):
    if hasattr(cache, "layers"):
        return cache.layers[layer].keys, cache.layers[layer].values
    return cache[layer][0], cache[layer][1]


def manual_prefixed_greedy(base, peft_model, prompts, pad, eos, n_new, offset_positions):
    """Full-recompute greedy decoding with the prefix as past_key_values, to
    pin down which position ids PEFT+HF generate uses."""
    ids, mask = pad_batch(prompts, pad, "left")
    P = peft_model.active_peft_config.num_virtual_tokens
    done = torch.zeros(len(prompts), dtype=torch.bool)
    for _ in range(n_new):
        pos = hf_position_ids(mask)
        if offset_positions:
            pos = pos + P
        cache = peft_model.get_prompt(batch_size=ids.shape[0])
        full_mask = torch.cat([torch.ones(ids.shape[0], P, dtype=torch.long), mask], 1)
        with torch.no_grad():
            logits = base(input_ids=ids, attention_mask=full_mask, position_ids=pos, past_key_values=cache).logits
        nxt = logits[:, -1].argmax(-1)
        nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
        done = done | (nxt == eos)
        ids = torch.cat([ids, nxt[:, None]], 1)
        mask = torch.cat([mask, torch.ones(len(prompts), 1, dtype=torch.long)], 1)
        if done.all():
            break
    return ids


def peft_fixture(out, base_dir, prompts, eos, name, cfg_kwargs, s, init_std=None):
    init_std = init_std or {}
    d = out / "peft" / name
    d.mkdir(parents=True, exist_ok=True)
    base = load_model(base_dir)
    pcfg = PrefixTuningConfig(task_type="CAUSAL_LM", **cfg_kwargs)
    peft_model = get_peft_model(base, pcfg)
    peft_model.eval()
    seed(s)
    trainable = [(n, p) for n, p in peft_model.named_parameters() if p.requires_grad]
    with torch.no_grad():
        for n, p in trainable:
            p.normal_(0.0, init_std.get(n.split(".", 2)[-1], 0.5))  # key e.g. "transform.2.weight"
    P = pcfg.num_virtual_tokens
    L, H, D = base.config.n_layer, base.config.n_head, base.config.n_embd
    tensors = {n: p.detach().clone() for n, p in trainable}

    # what PEFT injects for batch size 3
    cache = peft_model.get_prompt(batch_size=3)
    cache_type = type(cache).__name__
    for l in range(L):
        k, v = cache_kv(cache, l)
        assert tuple(k.shape) == (3, H, P, D // H), k.shape
        tensors[f"past_keys.{l}"] = k.detach().clone()
        tensors[f"past_values.{l}"] = v.detach().clone()
    pe = peft_model.get_prompt_embedding_to_save("default")
    assert tuple(pe.shape) == (P, 2 * L * D)
    tensors["prompt_embeddings"] = pe.clone()
    # layout check: prompt_embeddings[p] viewed [2L, H, Dh]; row 2l = K_l, 2l+1 = V_l
    v5 = pe.view(P, 2 * L, H, D // H)
    for l in range(L):
        assert torch.equal(v5[:, 2 * l].permute(1, 0, 2), tensors[f"past_keys.{l}"][0])
        assert torch.equal(v5[:, 2 * l + 1].permute(1, 0, 2), tensors[f"past_values.{l}"][0])

    # forward logits on the right-padded batch
    r_ids, r_mask = pad_batch(prompts, eos, "right")
    with torch.no_grad():
        logits = peft_model(input_ids=r_ids, attention_mask=r_mask).logits
    # confirm forward semantics: positions P.., mask = [1]*P ++ mask
    with torch.no_grad():
        c2 = peft_model.get_prompt(batch_size=3)
        fm = torch.cat([torch.ones(3, P, dtype=torch.long), r_mask], 1)
        pos = (torch.arange(r_ids.shape[1]) + P)[None].expand(3, -1)
        manual = base(input_ids=r_ids, attention_mask=fm, position_ids=pos, past_key_values=c2).logits
    assert torch.allclose(manual, logits, atol=1e-5), (manual - logits).abs().max()
    with torch.no_grad():
        plain = base(input_ids=r_ids, attention_mask=r_mask).logits
    assert (plain - logits).abs().max() > 1e-2, "prefix has no visible effect"
    tensors["batch.input_ids"] = r_ids
    tensors["batch.attention_mask"] = r_mask
    tensors["batch.logits"] = logits.contiguous()

    # training references
    labels = r_ids.clone()
    labels[:, :3] = -100
    labels[r_mask == 0] = -100
    tensors["batch.labels"] = labels

    def losses():
        o = peft_model(input_ids=r_ids, attention_mask=r_mask, labels=labels)
        lg = o.logits[:, :-1].float()
        tg = labels[:, 1:]
        nll = torch.nn.functional.cross_entropy(
            lg.reshape(-1, lg.shape[-1]), tg.reshape(-1), ignore_index=-100, reduction="none"
        ).view(tg.shape)
        per_seq = nll.sum(1)
        return o.loss, per_seq.mean(), per_seq, nll.sum() / (tg != -100).sum()

    peft_model.zero_grad()
    loss_mean, loss_paper, per_seq, manual_mean = losses()
    assert torch.allclose(loss_mean, manual_mean, atol=1e-6)
    loss_paper.backward()
    for n, p in trainable:
        tensors[f"grad.{n}"] = p.grad.detach().clone()
    peft_model.zero_grad()
    loss_mean2, _, _, _ = losses()
    loss_mean2.backward()
    for n, p in trainable:
        tensors[f"grad_mean.{n}"] = p.grad.detach().clone()
    peft_model.zero_grad()
    opt_cfg = dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    opt = torch.optim.AdamW([p for _, p in trainable], **opt_cfg)
    _, lp3, _, _ = losses()
    lp3.backward()
    for n, p in trainable:
        assert torch.equal(p.grad, tensors[f"grad.{n}"])
    opt.step()
    for n, p in trainable:
        tensors[f"after_step.{n}"] = p.detach().clone()
    # restore the pre-step parameters for the adapter / generate references
    with torch.no_grad():
        for n, p in trainable:
            p.copy_(tensors[n])
    peft_model.zero_grad()

    # save adapter (PEFT format) and verify it reloads to the same logits
    adapter_dir = d / "adapter"
    peft_model.save_pretrained(adapter_dir)
    (adapter_dir / "README.md").unlink(missing_ok=True)  # boilerplate model card
    base2 = load_model(base_dir)
    reloaded = PeftModel.from_pretrained(base2, adapter_dir)
    reloaded.eval()
    with torch.no_grad():
        lg2 = reloaded(input_ids=r_ids, attention_mask=r_mask).logits
    assert torch.allclose(lg2, logits, atol=1e-5), (lg2 - logits).abs().max()

    # generate with the prefix vs. without
    gen_specs = {
        "greedy": dict(max_new_tokens=10, do_sample=False),
        "beam4": dict(num_beams=4, max_new_tokens=10, early_stopping=True, length_penalty=1.0, do_sample=False),
    }
    gens, base_gens = {}, {}
    plain_model = load_model(base_dir)
    for gname, kw in gen_specs.items():
        gens[gname] = run_generate(peft_model, prompts, eos, eos, kw)
        base_gens[gname] = run_generate(plain_model, prompts, eos, eos, kw)
        differs = gens[gname]["new_tokens"] != base_gens[gname]["new_tokens"]
        print(f"[peft/{name}] {gname}: prefixed differs from unprefixed: {differs}")
        print(f"    prefixed   {gens[gname]['new_tokens']}")
        print(f"    unprefixed {base_gens[gname]['new_tokens']}")
        assert differs, "prefix dropped in generate? (transformers >= 5.24?)"

    # which position ids does PEFT + HF generate use? (full-recompute replay)
    conv = {}
    for off in (False, True):
        seqs = manual_prefixed_greedy(base, peft_model, prompts, eos, eos, 10, off)
        w = max(len(p) for p in prompts)
        conv["P+cumsum" if off else "cumsum"] = strip_new_tokens(seqs, w, eos) == gens["greedy"]["new_tokens"]
    print(f"[peft/{name}] generate position convention matches: {conv}")

    write_safetensors(d / "params.safetensors", tensors)
    ref = {
        "produced_by": "scripts/make_fixtures.py",
        "versions": VERSIONS,
        "base_model_dir": "gpt2-a",
        "peft_config": {k: (v.value if hasattr(v, "value") else v) for k, v in pcfg.to_dict().items()
                        if not isinstance(v, set)},
        "num_virtual_tokens": P,
        "trainable_params": {n: list(p.shape) for n, p in trainable},
        "param_init": "trainable params ~ Normal(0, std) in named_parameters() order after "
                      "torch.manual_seed(%d); std 0.5 unless listed: %s" % (s, json.dumps(init_std)),
        "get_prompt_return_type": cache_type,
        "prompts": prompts,
        "pad_token_id": eos,
        "eos_token_id": eos,
        "forward_semantics": {
            "attention_mask": "PEFT prepends P ones: cat([ones(B,P), mask], 1)",
            "position_ids": "forward() passes none, so GPT-2 uses arange(T) + P (past length)",
            "labels": "passed through unchanged (no prefix labels for prefix tuning)",
            "explicit_position_ids": "PEFT._adjust_prompt_learning_kwargs adds P to any position_ids given",
        },
        "generate_semantics": {
            "attention_mask": "PEFT.prepare_inputs_for_generation prepends P ones to the 2D mask every step",
            "position_ids": "HF computes (mask.cumsum(-1)-1).masked_fill(mask==0,0) on the user mask, "
                            "then PEFT adds P: prompt tokens get P, P+1, ..; left-pad slots get P (masked anyway)",
            "past_key_values": "prefix injected once at prefill as a DynamicCache of length P, batch = B*num_beams "
                               "(beam search expands the batch first, so every beam gets the prefix)",
        },
        "generate_position_ids_match": conv,
        "losses": {
            "labels": "input_ids with first 3 tokens of each row and pads set to -100 (batch.labels)",
            "loss_mean": float(loss_mean.detach()),
            "loss_mean_def": "HF ForCausalLMLoss: mean CE over all non -100 shifted targets",
            "loss_paper": float(loss_paper.detach()),
            "loss_paper_def": "per-sequence sum of target-token NLL, mean over batch",
            "loss_paper_per_seq": [float(x) for x in per_seq],
            "num_target_tokens": int((labels[:, 1:] != -100).sum()),
        },
        "adamw": dict(opt_cfg, betas=list(opt_cfg["betas"]), objective="loss_paper", steps=1,
                      impl="torch.optim.AdamW defaults (amsgrad=False, maximize=False)"),
        "generate": gens,
        "generate_unprefixed": base_gens,
        "params_safetensors": tensor_summary(tensors),
    }
    dump_json(d / "reference.json", ref)
    return ref


# ---------------------------------------------------------------------------


class Bf16Product(torch.autograd.Function):
    """x @ w with both rounded to bf16 and the sums exact (f64): what `--dtype bf16` computes
    for a frozen weight. The input gradient is bf16(g) @ bf16(w)^T, kept in f32 as ours is
    (autograd through `.bfloat16()` would round it to bf16 as well)."""

    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(w)
        return (x.bfloat16().double() @ w.bfloat16().double()).float()

    @staticmethod
    def backward(ctx, g):
        (w,) = ctx.saved_tensors
        return (g.bfloat16().double() @ w.bfloat16().double().T).float(), None


def bf16_references(out, base_dir, name, cfg_kwargs):
    """Loss and prefix gradients of the PEFT fixture's batch with the frozen model's products in
    bf16: (1) emulating ours exactly (bf16 inputs, f64 sums, the prefix in f32), (2) under
    PyTorch's CPU bf16 autocast (products rounded to bf16 too, the prefix MLP in bf16)."""
    from transformers.pytorch_utils import Conv1D
    d = out / "peft" / name
    params = load_file(d / "params.safetensors")
    ids, mask, labels = params["batch.input_ids"], params["batch.attention_mask"], params["batch.labels"]

    def prefixed_model(emulate):
        base = load_model(base_dir)
        if emulate:
            for m in base.modules():
                if isinstance(m, Conv1D):
                    m.forward = (lambda m: lambda x: (Bf16Product.apply(x.reshape(-1, x.shape[-1]), m.weight) + m.bias).view(*x.shape[:-1], -1))(m)
            head = base.lm_head
            head.forward = lambda h: Bf16Product.apply(h.reshape(-1, h.shape[-1]), head.weight.T).view(*h.shape[:-1], -1)
        model = get_peft_model(base, PrefixTuningConfig(task_type="CAUSAL_LM", **cfg_kwargs))
        model.eval()
        trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        with torch.no_grad():
            for n, p in trainable:
                p.copy_(params[n])
        return model, trainable

    tensors, losses = {}, {}
    for mode in ("emulated", "autocast"):
        model, trainable = prefixed_model(mode == "emulated")
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=(mode == "autocast")):
            logits = model(input_ids=ids, attention_mask=mask).logits
        lg, tg = logits[:, :-1].float(), labels[:, 1:]
        nll = torch.nn.functional.cross_entropy(lg.reshape(-1, lg.shape[-1]), tg.reshape(-1), ignore_index=-100, reduction="none")
        loss = nll.view(tg.shape).sum(1).mean()  # the paper's objective
        loss.backward()
        losses[mode] = loss.item()
        for n, p in trainable:
            tensors[f"{mode}.grad.{n}"] = p.grad.detach().clone()
    save_file(tensors, d / "bf16.safetensors")
    dump_json(d / "bf16.json", {"loss_paper": losses, "versions": VERSIONS,
                                "note": "see bf16_references in scripts/make_fixtures.py"})
    print(f"[peft/{name}] bf16 losses: {losses}")


def f16_references(out, base_dir, name, cfg_kwargs):
    """Loss and prefix gradients of the PEFT fixture's batch under PyTorch's f16 autocast (the
    frozen products' inputs and outputs in f16, their sums f32; the prefix MLP in f16 too): the
    reference for `--dtype f16` on a GPU."""
    d = out / "peft" / name
    params = load_file(d / "params.safetensors")
    ids, mask, labels = params["batch.input_ids"], params["batch.attention_mask"], params["batch.labels"]
    model = get_peft_model(load_model(base_dir), PrefixTuningConfig(task_type="CAUSAL_LM", **cfg_kwargs))
    model.eval()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    with torch.no_grad():
        for n, p in trainable:
            p.copy_(params[n])
    with torch.autocast("cpu", dtype=torch.float16):
        logits = model(input_ids=ids, attention_mask=mask).logits
    lg, tg = logits[:, :-1].float(), labels[:, 1:]
    nll = torch.nn.functional.cross_entropy(lg.reshape(-1, lg.shape[-1]), tg.reshape(-1), ignore_index=-100, reduction="none")
    loss = nll.view(tg.shape).sum(1).mean()  # the paper's objective
    loss.backward()
    save_file({f"autocast.grad.{n}": p.grad.detach().clone() for n, p in trainable}, d / "f16.safetensors")
    dump_json(d / "f16.json", {"loss_paper": {"autocast": loss.item()}, "versions": VERSIONS,
                               "note": "see f16_references in scripts/make_fixtures.py"})
    print(f"[peft/{name}] f16 autocast loss: {loss.item()}")


PEFT_CONFIGS = {
    "flat": dict(num_virtual_tokens=5, prefix_projection=False),
    "mlp": dict(num_virtual_tokens=7, prefix_projection=True, encoder_hidden_size=20),
}


def bf16_fixtures(out, a_dir):
    for name, cfg in PEFT_CONFIGS.items():
        bf16_references(out, a_dir, name, cfg)
        f16_references(out, a_dir, name, cfg)


def main():
    args = [a for a in sys.argv[1:] if a != "--bf16-only"]  # bf16 and f16 references only
    out = Path(args[0] if args else "tests/fixtures")
    out.mkdir(parents=True, exist_ok=True)
    if "--bf16-only" in sys.argv:  # from the committed gpt2-a and PEFT fixtures
        bf16_fixtures(out, out / "gpt2-a")
        return
    print("versions:", VERSIONS)
    tok = AutoTokenizer.from_pretrained(str(TOKENIZER_DIR))

    seed(0)
    a_dir, a_prompts, a_eos, probe = build_gpt2_a(out)
    print("gpt2-a eos =", a_eos, "probe greedy (no eos):", probe)
    seed(0)
    plain_references(a_dir, a_prompts, a_eos, {"eos_choice": {
        "rule": "token emitted mid-continuation by eos-free greedy (pos>=2), not in prompts, "
                "maximising beams that finish early",
        "greedy_without_eos": probe}})

    seed(0)
    b_dir, b_prompts, b_texts = build_gpt2_b(out, tok)
    plain_references(b_dir, b_prompts, 50256, {"prompt_texts": b_texts})

    seed(0)
    cases = tokenizer_cases(out, tok)
    print("tokenizer cases:", len(cases), "all equal to tokenizers lib:",
          all(c["tokenizers_lib_ids_equal"] for c in cases))

    peft_fixture(out, a_dir, a_prompts, a_eos, "flat",
                 dict(num_virtual_tokens=5, prefix_projection=False), 2024)
    peft_fixture(out, a_dir, a_prompts, a_eos, "mlp",
                 dict(num_virtual_tokens=7, prefix_projection=True, encoder_hidden_size=20), 2025,
                 # smaller output layer so the prefix does not swamp the prompt
                 init_std={"transform.2.weight": 0.1, "transform.2.bias": 0.05})

    bf16_fixtures(out, a_dir)

    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"total fixture size: {total/1e6:.2f} MB")


if __name__ == "__main__":
    main()
