//! Agreement with the official scorers on the figures recorded by scripts/make_metric_fixtures.py
//! (tests/fixtures/eval), plus the predictions-file API.

use prefix_tune_data::e2e::TargetStyle;
use prefix_tune_data::{Group, Task};
use prefix_tune_eval::{coco, meteor, mteval, multibleu, porter, ptb, rouge_score, score_groups, score_predictions, ter, EvalError};
use serde_json::Value;
use std::path::PathBuf;

const TOL: f64 = 1e-4;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn fixture(name: &str) -> Value {
    let text = std::fs::read_to_string(fixtures().join("eval").join(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
}

fn nested(v: &Value) -> Vec<Vec<String>> {
    v.as_array().unwrap().iter().map(strings).collect()
}

fn close(name: &str, ours: f64, official: f64) {
    println!("{name}: ours {ours:.10} official {official:.10} diff {:.2e}", (ours - official).abs());
    assert!((ours - official).abs() <= TOL, "{name}: ours {ours} vs official {official}");
}

#[test]
fn e2e_bleu_nist_match_mteval() {
    let f = fixture("e2e_metrics.json");
    let m = mteval::score(&strings(&f["hypotheses"]), &nested(&f["references"]));
    close("BLEU", m.bleu, f["official"]["BLEU"].as_f64().unwrap());
    close("NIST", m.nist, f["official"]["NIST"].as_f64().unwrap());
}

#[test]
fn e2e_rouge_l_and_cider_match_pycocoevalcap_on_ptb_tokens() {
    let f = fixture("e2e_metrics.json");
    let (hyps, refs) = (strings(&f["ptb_hypotheses"]), nested(&f["ptb_references"]));
    close("ROUGE_L", coco::rouge_l(&hyps, &refs), f["official"]["ROUGE_L"].as_f64().unwrap());
    close("CIDEr", coco::cider_d(&hyps, &refs), f["official"]["CIDEr"].as_f64().unwrap());
}

#[test]
fn e2e_end_to_end_with_our_ptb_tokenizer() {
    let f = fixture("e2e_metrics.json");
    let raw_h = strings(&f["hypotheses"]);
    let raw_r = nested(&f["references"]);
    let official_h = strings(&f["ptb_hypotheses"]);
    let official_r = nested(&f["ptb_references"]);
    let mut same = 0;
    let mut total = 0;
    for (raw, official) in raw_h.iter().zip(&official_h).chain(raw_r.iter().flatten().zip(official_r.iter().flatten())) {
        total += 1;
        if ptb::tokenize(raw) == *official {
            same += 1;
        } else {
            println!("ptb differs:\n  ours     {}\n  official {}", ptb::tokenize(raw), official);
        }
    }
    println!("PTB tokenization identical for {same}/{total} sentences");
    assert!(same as f64 >= 0.95 * total as f64, "{same}/{total}");
    let hyps: Vec<String> = raw_h.iter().map(|h| ptb::tokenize(h)).collect();
    let refs: Vec<Vec<String>> = raw_r.iter().map(|rs| rs.iter().map(|r| ptb::tokenize(r)).collect()).collect();
    let rouge = coco::rouge_l(&hyps, &refs);
    let cider = coco::cider_d(&hyps, &refs);
    println!("end-to-end ROUGE_L {rouge} (official {}), CIDEr {cider} (official {})", f["official"]["ROUGE_L"], f["official"]["CIDEr"]);
    assert!((rouge - f["official"]["ROUGE_L"].as_f64().unwrap()).abs() < 5e-3);
    assert!((cider - f["official"]["CIDEr"].as_f64().unwrap()).abs() < 5e-2);
}

/// The jar from `$METEOR_JAR` (e.g. pycocoevalcap's `meteor/meteor-1.5.jar`), when java runs.
fn meteor_jar() -> Option<PathBuf> {
    let Some(jar) = meteor::find_jar(None).filter(|j| j.is_file()) else {
        println!("SKIPPED: no METEOR jar (set METEOR_JAR to meteor-1.5.jar, e.g. pycocoevalcap's copy)");
        return None;
    };
    if std::process::Command::new("java").arg("-version").output().is_err() {
        println!("SKIPPED: java is not installed");
        return None;
    }
    Some(jar)
}

#[test]
fn e2e_meteor_through_the_jar_equals_official() {
    let Some(jar) = meteor_jar() else { return };
    let f = fixture("e2e_metrics.json");
    let ours = meteor::meteor(&jar, &strings(&f["ptb_hypotheses"]), &nested(&f["ptb_references"])).unwrap();
    close("METEOR", ours, f["official"]["METEOR"].as_f64().unwrap());
    assert_eq!(ours, f["official"]["METEOR"].as_f64().unwrap());
}

#[test]
fn xsum_rouge_matches_rouge_score_with_stemmer() {
    let f = fixture("xsum_rouge.json");
    for (word, stem) in f["porter_stems"].as_object().unwrap() {
        assert_eq!(porter::stem(word), stem.as_str().unwrap(), "stem of {word}");
    }
    let r = rouge_score::corpus_rouge(&strings(&f["predictions"]), &strings(&f["references"]));
    close("rouge1", r.rouge1, f["official"]["rouge1"].as_f64().unwrap());
    close("rouge2", r.rouge2, f["official"]["rouge2"].as_f64().unwrap());
    close("rougeL", r.rouge_l, f["official"]["rougeL"].as_f64().unwrap());
}

#[test]
fn webnlg_and_dart_bleu_match_multi_bleu() {
    for name in ["webnlg_bleu.json", "dart_bleu.json"] {
        let f = fixture(name);
        let ours = multibleu::bleu(&strings(&f["hypotheses"]), &nested(&f["references"]), f["lowercase"].as_bool().unwrap());
        close(name, ours, f["official"]["BLEU"].as_f64().unwrap());
    }
}

/// Our TER against sacrebleu's on one fixture: every sentence's edit count and mean reference
/// length exactly, then the corpus score.
fn ter_matches_sacrebleu(name: &str) {
    let f = fixture(name);
    let (hyps, refs) = (strings(&f["hypotheses"]), nested(&f["references"]));
    let sentences = f["ter_sentences"].as_array().unwrap();
    let mut differing = 0;
    for ((hyp, r), official) in hyps.iter().zip(&refs).zip(sentences) {
        let (edits, len) = ter::sentence_stats(hyp, r);
        let (o_edits, o_len) = (official[0].as_u64().unwrap() as usize, official[1].as_f64().unwrap());
        if edits != o_edits || (len - o_len).abs() > 1e-9 {
            differing += 1;
            println!("TER differs: ours ({edits}, {len}) sacrebleu ({o_edits}, {o_len})\n  hyp  {hyp}\n  refs {r:?}");
        }
    }
    println!("{name}: TER sentence statistics identical for {}/{}", sentences.len() - differing, sentences.len());
    assert_eq!(differing, 0);
    let t = ter::corpus_ter(&hyps, &refs);
    assert_eq!(t.edits, f["official"]["TER_edits"].as_u64().unwrap() as usize);
    close(&format!("{name} TER ref length"), t.ref_length, f["official"]["TER_ref_length"].as_f64().unwrap());
    close(&format!("{name} TER"), t.score, f["official"]["TER"].as_f64().unwrap());
}

#[test]
fn webnlg_and_dart_ter_match_sacrebleu() {
    ter_matches_sacrebleu("webnlg_bleu.json");
    ter_matches_sacrebleu("dart_bleu.json");
}

#[test]
fn ter_shift_cases_match_sacrebleu() {
    ter_matches_sacrebleu("ter_cases.json");
}

#[test]
fn webnlg_and_dart_scores_report_ter() {
    let f = fixture("dart_bleu.json");
    let (hyps, refs) = (strings(&f["hypotheses"]), nested(&f["references"]));
    let groups: Vec<Group> = refs.iter().map(|r| Group { source: String::new(), references: r.clone(), meta: Default::default() }).collect();
    for task in [Task::Webnlg, Task::Dart] {
        let scores = score_groups(task, &groups, &hyps, None).unwrap();
        close("Scores.ter", scores.ter.unwrap(), f["official"]["TER"].as_f64().unwrap());
        assert!(!scores.skipped.iter().any(|s| s.starts_with("ter")), "{:?}", scores.skipped);
        assert!(serde_json::to_string(&scores).unwrap().contains("\"ter\""));
    }
}

#[test]
fn predictions_file_scoring_and_line_count_error() {
    let data = fixtures().join("data/e2e_devset_sample.csv");
    let dir = std::env::temp_dir().join(format!("prefix-tune-eval-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.txt");
    std::fs::write(&good, "Alimentum is not family - friendly .\nAlimentum is near Burger King .\nCocum is a coffee shop .\nCocum serves Chinese food .\n").unwrap();
    let scores = score_predictions(Task::E2e, &data, &good, TargetStyle::PaperSplit, None).unwrap();
    assert_eq!(scores.items, 4);
    assert!(scores.bleu.unwrap() > 0.0 && scores.nist.unwrap() > 0.0 && scores.cider.unwrap() > 0.0);
    let json = serde_json::to_string(&scores).unwrap();
    assert!(json.contains("\"bleu\"") && json.contains("\"rouge_l\""), "{json}");

    let bad = dir.join("bad.txt");
    std::fs::write(&bad, "one line\ntwo lines\n").unwrap();
    let err = score_predictions(Task::E2e, &data, &bad, TargetStyle::PaperSplit, None).unwrap_err();
    assert!(matches!(err, EvalError::LineCount { found: 2, expected: 4, .. }));
    let text = err.to_string();
    assert_eq!(text.lines().count(), 1);
    assert!(text.contains("bad.txt") && text.contains("2 prediction lines, expected 4"), "{text}");
    std::fs::remove_dir_all(&dir).ok();
}

/// The official E2E scorer reads the CSV's own reference text. `--references original` scores
/// against it and reproduces the official figures on an official-format CSV; the paper's
/// punctuation-split references give other (lower) numbers, as the issue found on the test set.
#[test]
fn e2e_csv_with_original_references_reproduces_the_official_scorer() {
    let f: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixtures().join("eval/e2e_metrics.json")).unwrap()).unwrap();
    let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let mut csv = String::from("mr,ref\r\n");
    for (mr, refs) in f["mrs"].as_array().unwrap().iter().zip(f["references"].as_array().unwrap()) {
        for reference in refs.as_array().unwrap() {
            csv += &format!("{},{}\r\n", quote(mr.as_str().unwrap()), quote(reference.as_str().unwrap()));
        }
    }
    let hyps: Vec<&str> = f["hypotheses"].as_array().unwrap().iter().map(|h| h.as_str().unwrap()).collect();
    let dir = std::env::temp_dir().join(format!("prefix-tune-eval-refs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (data, predictions) = (dir.join("devset.csv"), dir.join("predictions.txt"));
    std::fs::write(&data, csv).unwrap();
    std::fs::write(&predictions, hyps.join("\n") + "\n").unwrap();

    let original = score_predictions(Task::E2e, &data, &predictions, TargetStyle::Original, None).unwrap();
    assert_eq!(original.items, hyps.len());
    let official = &f["official"];
    close("BLEU", original.bleu.unwrap(), official["BLEU"].as_f64().unwrap());
    close("NIST", original.nist.unwrap(), official["NIST"].as_f64().unwrap());
    close("ROUGE_L", original.rouge_l.unwrap(), official["ROUGE_L"].as_f64().unwrap());
    close("CIDEr", original.cider.unwrap(), official["CIDEr"].as_f64().unwrap());
    assert_eq!(serde_json::to_value(&original).unwrap()["references"], "original");

    let paper = score_predictions(Task::E2e, &data, &predictions, TargetStyle::PaperSplit, None).unwrap();
    assert!((paper.bleu.unwrap() - original.bleu.unwrap()).abs() > 1e-3, "paper-split references score differently");
    assert_eq!(serde_json::to_value(&paper).unwrap()["references"], "paper");
    std::fs::remove_dir_all(&dir).ok();
}
