#!/usr/bin/env python3
"""Record official metric figures on small real samples, for crates/eval's tests.

Run from the repository root inside a venv with the PyPI packages
`pycocoevalcap sacrebleu rouge-score nltk` (e.g. /work/venv-eval):

    MTEVAL_PL=/path/to/e2e-metrics/mteval/mteval-v13a-sig.pl \
    python scripts/make_metric_fixtures.py ../shared/data

Writes tests/fixtures/eval/*.json. Official tools used:
- E2E BLEU/NIST: e2e-metrics' mteval-v13a-sig.pl (not shipped here; give its path in MTEVAL_PL).
  It prints 4 decimals, so a temporary copy is run with its report format widened to 10 decimals
  (and its unused `use XML::Twig` dropped).
  Inputs are written as e2e-metrics' create_mteval_file writes them (refs padded with empty segs).
- E2E ROUGE-L, CIDEr-D, METEOR: pycocoevalcap (the package e2e-metrics vendors), after its
  Stanford PTBTokenizer (java) exactly as COCOEvalCap.evaluate does.
- WebNLG/DART BLEU: sacrebleu corpus_bleu(tokenize='none', smooth_method='none'), which equals
  multi-bleu.perl; lowercase=True for WebNLG (-lc).
- WebNLG/DART TER (same files): sacrebleu.metrics.TER() at its defaults (case-insensitive, no
  normalization or punctuation removal), corpus score and per-sentence (edits, mean ref length).
- ter_cases.json: the same TER on hand-made cases that exercise shifts and the search's limits,
  plus seeded random shuffles.
- XSUM ROUGE: rouge_score.RougeScorer(['rouge1','rouge2','rougeL'], use_stemmer=True), mean F1.
Perturbations are deterministic (seeded), so re-running gives the same files.

`--only a.json,b.json` rewrites just those files (the samples are still drawn in order, so they
are the same as in a full run); e.g. `--only webnlg_bleu.json,dart_bleu.json,ter_cases.json`
needs neither MTEVAL_PL nor java.
"""
import csv, json, os, random, re, subprocess, sys, tempfile

import sacrebleu
from sacrebleu.metrics import TER
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from rouge_score import rouge_scorer

ARGS = sys.argv[1:]
ONLY = None
if "--only" in ARGS:
    i = ARGS.index("--only")
    ONLY = set(ARGS[i + 1].split(","))
    del ARGS[i:i + 2]
DATA = ARGS[0] if ARGS else "../shared/data"
OUT = "tests/fixtures/eval"
rng = random.Random(20210101)


def perturb(text):
    """A plausible system output: drop, duplicate or swap words, change a word's case."""
    words = text.split()
    if len(words) > 4:
        op = rng.randrange(4)
        i = rng.randrange(len(words) - 1)
        if op == 0:
            del words[i]
        elif op == 1:
            words.insert(i, words[i])
        elif op == 2:
            words[i], words[i + 1] = words[i + 1], words[i]
        else:
            words[i] = words[i].upper()
    if rng.random() < 0.3:
        words = words[: max(1, len(words) * 2 // 3)]
    return " ".join(words)


def e2e_sample(n=40):
    groups, order = {}, []
    with open(os.path.join(DATA, "e2e/devset.csv"), encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["mr"] not in groups:
                if len(order) == n:
                    continue
                order.append(row["mr"])
                groups[row["mr"]] = []
            groups[row["mr"]].append(row["ref"])
    refs = [groups[m] for m in order]
    # Mostly perturbed first references; a few references verbatim (BLEU/NIST see exact matches).
    hyps = [r[1] if i % 7 == 0 and len(r) > 1 else perturb(r[0]) for i, r in enumerate(refs)]
    return order, refs, hyps


def mteval_file(data, path, file_type):
    # Same layout as e2e-metrics' create_mteval_file.
    sets = [[]]
    for inst_no, inst in enumerate(data):
        inst = inst if isinstance(inst, list) else [inst]
        for ref_no, ref in enumerate(inst):
            if len(sets) <= ref_no:
                sets.append([""] * inst_no)
            sets[ref_no].append(ref)
        ref_no += 1
        while ref_no < len(sets):
            sets[ref_no].append("")
            ref_no += 1
    with open(path, "w", encoding="utf-8") as fh:
        fh.write('<%sset setid="e2e" srclang="any" trglang="en">\n' % file_type)
        for set_no, inst_set in enumerate(sets):
            sysid = file_type + ("" if len(sets) == 1 else "_%d" % set_no)
            fh.write('<doc docid="test" genre="news" origlang="any" sysid="%s">\n<p>\n' % sysid)
            for i, inst in enumerate(inst_set, start=1):
                fh.write('<seg id="%d">%s</seg>\n' % (i, inst))
            fh.write("</p>\n</doc>\n")
        fh.write("</%sset>" % file_type)


def run_mteval(refs, hyps, srcs):
    script = os.environ.get("MTEVAL_PL")
    if not script:
        sys.exit("set MTEVAL_PL to e2e-metrics' mteval/mteval-v13a-sig.pl")
    tmp = tempfile.mkdtemp(prefix="mteval-")
    text = open(script, encoding="utf-8").read()
    # XML::Twig is only used for .xml inputs; .sgm inputs do not need it (often not installed).
    text = text.replace("use XML::Twig;", "")
    text = text.replace('"NIST score = %2.4f  BLEU score = %.4f', '"NIST score = %2.10f  BLEU score = %.10f')
    wide = os.path.join(tmp, "mteval-wide.pl")
    open(wide, "w", encoding="utf-8").write(text)
    for name, data, kind in [("ref", refs, "ref"), ("sys", hyps, "tst"), ("src", srcs, "src")]:
        mteval_file(data, os.path.join(tmp, name + ".sgm"), kind)
    out = subprocess.check_output(
        ["perl", wide, "-r", os.path.join(tmp, "ref.sgm"), "-s", os.path.join(tmp, "src.sgm"),
         "-t", os.path.join(tmp, "sys.sgm"), "-f", os.path.join(tmp, "log.txt")],
        stderr=subprocess.STDOUT, cwd=tmp).decode("utf-8")
    nist = float(re.search(r"NIST score = ([0-9.]+)", out).group(1))
    bleu = float(re.search(r"BLEU score = ([0-9.]+)", out).group(1))
    return bleu, nist


def coco(refs, hyps):
    gts = {i: [{"caption": r} for r in rs] for i, rs in enumerate(refs)}
    res = {i: [{"caption": h}] for i, h in enumerate(hyps)}
    tok = PTBTokenizer()
    gts_t, res_t = tok.tokenize(gts), tok.tokenize(res)
    rouge, _ = Rouge().compute_score(gts_t, res_t)
    cider, _ = Cider().compute_score(gts_t, res_t)
    meteor, _ = Meteor().compute_score(gts_t, res_t)
    ptb_refs = [gts_t[i] for i in range(len(refs))]
    ptb_hyps = [res_t[i][0] for i in range(len(hyps))]
    return ptb_refs, ptb_hyps, rouge, cider, meteor


def wanted(name):
    return ONLY is None or name in ONLY


def write(name, obj):
    with open(os.path.join(OUT, name), "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, ensure_ascii=False)
        f.write("\n")


def write_xsum(summaries, preds):
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    per = [scorer.score(t, p) for t, p in zip(summaries, preds)]
    mean = {k: sum(s[k].fmeasure for s in per) / len(per) for k in ["rouge1", "rouge2", "rougeL"]}
    words = sorted({w for s in summaries + preds for w in re.findall(r"[a-z0-9]+", s.lower()) if len(w) > 3})
    write("xsum_rouge.json", {
        "source": "XSUM test.jsonl, first 30 summaries vs seeded perturbations",
        "references": summaries, "predictions": preds, "official": mean,
        "per_item_fmeasure": [{k: s[k].fmeasure for k in mean} for s in per],
        "porter_stems": {w: scorer._tokenizer._stemmer.stem(w) for w in words},
    })


def ter_sentences(hyps, groups):
    """sacrebleu's per-sentence TER statistics: [fewest edits over the refs, mean ref length]."""
    ter = TER()
    out = []
    for h, refs in zip(hyps, groups):
        t = ter.sentence_score(h, refs)
        out.append([t.num_edits, t.ref_length])
    return out


def ter_cases():
    """Hand-made cases for the shift search and its limits, then seeded random shuffles."""
    long_ref = " ".join(f"w{i}" for i in range(70))
    long_words = long_ref.split()
    twelve = " ".join(f"x{i}" for i in range(12))
    cases = [
        ("the cat sat on the mat", ["on the mat the cat sat"]),
        ("c d a b f e", ["a b c d e f"]),
        ("d e a b c", ["a b c d e"]),
        ("a a b b", ["b b a a"]),
        ("The Cat SAT on THE mat", ["the cat sat on the mat"]),
        ("Bangalore, India is where it is.", ["It is in Bangalore , India ."]),
        ("Ünïcödé ÉCOLE ΣΟΦΟΣ", ["ünïcödé école σοφος", "ünïcödé école σοφοσ"]),
        ("", ["a b c"]),
        ("a b c", ["", "a b c"]),
        ("x y", [""]),
        # block longer than the largest shift (10 words)
        (f"tail end {twelve}", [f"{twelve} tail end"]),
        # block far beyond the largest shift distance (50 words)
        (" ".join(long_words[65:] + long_words[:65]), [long_ref]),
        # very different lengths: the band widens with the length ratio
        ("w3", [long_ref]),
        (long_ref, ["w3 w60"]),
        # repetitive text: many candidate shifts, the candidate budget runs out
        (" ".join(["a", "b", "c"] * 25), [" ".join(["c", "b", "a", "a"] * 20)]),
        ("one two three four five", ["five four three two one", "one three two four five", "two one"]),
        ("the airport is in madrid and serves madrid", ["madrid airport serves madrid and is in madrid"]),
        # two 12-word blocks swapped: a single shift would need a block longer than 10 words
        (" ".join([f"x{i}" for i in range(12)] + [f"y{i}" for i in range(12)]),
         [" ".join([f"y{i}" for i in range(12)] + [f"x{i}" for i in range(12)])]),
        # unrelated word salads where equally good shifts differ only in their target, and the
        # one Tercom ranks first (earliest target) changes the final count
        ("d c b a b b d a c b b a", ["a d a a a a c b d c d"]),
        ("c c b a b d c", ["c b b d c a a c"]),
        ("b a a a a b c a d d b", ["d b a c b d b d c c a"]),
    ]
    rng_t = random.Random(7)
    vocab = "a b c d e f g h".split()
    for k in range(150):
        n = rng_t.randrange(3, 40) if k % 10 else rng_t.randrange(60, 120)
        ref = [rng_t.choice(vocab) for _ in range(n)]
        hyp = list(ref)
        for _ in range(rng_t.randrange(1, 5)):
            op = rng_t.randrange(4)
            i = rng_t.randrange(len(hyp)) if hyp else 0
            if op == 0 and len(hyp) > 2:
                ln = rng_t.randrange(1, min(12, len(hyp)))
                block, rest = hyp[i:i + ln], hyp[:i] + hyp[i + ln:]
                j = rng_t.randrange(len(rest) + 1)
                hyp = rest[:j] + block + rest[j:]
            elif op == 1 and hyp:
                del hyp[i]
            elif op == 2:
                hyp.insert(i, rng_t.choice(vocab))
            elif hyp:
                hyp[i] = rng_t.choice(vocab)
        refs = [" ".join(ref)] + ([" ".join(rng_t.sample(ref, len(ref)))] if k % 3 == 0 else [])
        cases.append((" ".join(hyp), refs))
    return cases


def write_ter_cases():
    cases = ter_cases()
    hyps = [h for h, _ in cases]
    groups = [r for _, r in cases]
    most = max(len(r) for r in groups)
    streams = [[g[k] if k < len(g) else None for g in groups] for k in range(most)]
    t = TER().corpus_score(hyps, streams)
    write("ter_cases.json", {
        "source": "hand-made TER cases (shifts, limits, empty sides, case) and seeded random shuffles",
        "references": groups, "hypotheses": hyps,
        "official": {"TER": t.score, "TER_edits": t.num_edits, "TER_ref_length": t.ref_length},
        "ter_sentences": ter_sentences(hyps, groups),
    })


def main():
    os.makedirs(OUT, exist_ok=True)
    mrs, refs, hyps = e2e_sample()
    if wanted("e2e_metrics.json"):
        bleu, nist = run_mteval(refs, hyps, mrs)
        ptb_refs, ptb_hyps, rouge, cider, meteor = coco(refs, hyps)
        write("e2e_metrics.json", {
            "source": "E2E devset.csv, first 40 distinct MRs; hypotheses are seeded perturbations of references",
            "mrs": mrs, "references": refs, "hypotheses": hyps,
            "ptb_references": ptb_refs, "ptb_hypotheses": ptb_hyps,
            "official": {"BLEU": bleu, "NIST": nist, "ROUGE_L": rouge, "CIDEr": cider, "METEOR": meteor},
        })

    docs = [json.loads(l) for l in open(os.path.join(DATA, "xsum/test.jsonl"), encoding="utf-8")][:30]
    summaries = [d["summary"] for d in docs]
    preds = [perturb(s) for s in summaries]
    if wanted("xsum_rouge.json"):
        write_xsum(summaries, preds)

    for task, path, lowercase in [("webnlg", None, True), ("dart", "dart/dart-v1.1.1-full-dev.json", False)]:
        if task == "webnlg":
            text = open(os.path.join(DATA, "webnlg2017/test/testdata_with_lex.xml"), encoding="utf-8").read()
            groups = []
            for entry in re.findall(r"<entry .*?</entry>", text, re.S):
                lexes = [re.sub(r"\s+", " ", l).strip() for l in re.findall(r'<lex comment="good"[^>]*>(.*?)</lex>', entry, re.S)]
                if len(lexes) >= 3:
                    groups.append(lexes[:3])
                if len(groups) == 40:
                    break
        else:
            items = json.load(open(os.path.join(DATA, path), encoding="utf-8"))
            groups = [[a["text"] for a in it["annotations"]][:3] for it in items if len(it["annotations"]) >= 3][:40]
        import html
        groups = [[html.unescape(r) for r in g] for g in groups]
        hyps = [perturb(g[0]) if i % 5 else g[1] for i, g in enumerate(groups)]
        streams = [[g[k] for g in groups] for k in range(3)]
        if not wanted(f"{task}_bleu.json"):
            continue
        b = sacrebleu.corpus_bleu(hyps, streams, tokenize="none", smooth_method="none", lowercase=lowercase, force=True)
        t = TER().corpus_score(hyps, streams)
        write(f"{task}_bleu.json", {
            "source": f"{task}: first 40 items with >= 3 references (first 3 kept), hypotheses perturbed",
            "lowercase": lowercase, "references": groups, "hypotheses": hyps,
            "official": {"BLEU": b.score, "TER": t.score, "TER_edits": t.num_edits, "TER_ref_length": t.ref_length},
            "ter_sentences": ter_sentences(hyps, groups),
        })

    if wanted("ter_cases.json"):
        write_ter_cases()


if __name__ == "__main__":
    main()
