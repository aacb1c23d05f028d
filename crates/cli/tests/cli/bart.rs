//! BART from the command line: `generate` and `score` against the HF references of bart-a, and
//! `score` on GPT-2 against HF's logits.

use std::path::Path;

use prefix_tune_model::testing::{fixtures, read_f32, scratch};
use prefix_tune_model::weights::{save_f32, to_i64, WeightFiles};

use super::{prefix_tune, reference, stdout_lines};

fn bart_a() -> String {
    fixtures().join("bart-a").display().to_string()
}

/// The encoder inputs of bart-a's reference batch, as `--prompt-ids` values.
pub(super) fn prompt_ids() -> Vec<String> {
    let batch = &reference("bart-a")["batch"];
    let lengths = batch["enc_lengths"].as_array().unwrap();
    batch["enc_input_ids"]
        .as_array()
        .unwrap()
        .iter()
        .zip(lengths)
        .map(|(row, n)| row.as_array().unwrap()[..n.as_u64().unwrap() as usize].iter().map(|id| id.to_string()).collect::<Vec<_>>().join(","))
        .collect()
}

/// The three-prefix reference as a hand-written BART export.
pub(super) fn three_prefix_export(dir: &Path) {
    let reference = WeightFiles::open(vec![fixtures().join("bart-a/reference.safetensors")]).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("prefix_config.json"), r#"{"format": "prefix-tune", "kind": "export", "architecture": "bart"}"#).unwrap();
    let tensors: Vec<_> = ["encoder", "decoder", "cross"].iter().map(|s| (s.to_string(), read_f32(&reference, &format!("prefix.{s}")).0, read_f32(&reference, &format!("prefix.{s}")).1)).collect();
    save_f32(&dir.join("prefix.safetensors"), &tensors).unwrap();
}

#[test]
fn generate_with_bart_and_its_three_prefixes_matches_hf() {
    let json = reference("bart-a");
    let prefix = scratch("cli-bart-prefix");
    three_prefix_export(&prefix);
    let prefix = prefix.display().to_string();
    let model = bart_a();
    let ids = prompt_ids();
    // HF: max_length 12 and min_length 3 count the decoder start token.
    let greedy = ["--max-new-tokens", "11", "--min-new-tokens", "2"];
    let beam = ["--max-new-tokens", "11", "--min-new-tokens", "3", "--num-beams", "4", "--length-penalty", "0.8", "--no-repeat-ngram-size", "3", "--early-stopping", "true"];
    for (name, options, with_prefix) in [("greedy", &greedy[..], false), ("beam4", &beam[..], false), ("prefix_greedy", &greedy[..], true), ("prefix_beam4", &beam[..], true)] {
        let mut args = vec!["generate", "--model", model.as_str(), "--json"];
        args.extend(options);
        if with_prefix {
            args.extend(["--prefix", prefix.as_str()]);
        }
        for row in &ids {
            args.extend(["--prompt-ids", row.as_str()]);
        }
        let lines = stdout_lines(&prefix_tune(&args));
        for (i, line) in lines.iter().enumerate() {
            assert_eq!(line["ids"], json["generate"][name]["new_tokens"][i], "{name} input {i}");
        }
    }
    let two = prefix_tune(&["generate", "--model", &model, "--prompt-ids", "5,6", "--prefix", &prefix, "--prefix", &prefix]);
    let message = String::from_utf8_lossy(&two.stderr);
    assert!(!two.status.success() && message.contains("--prefix") && message.trim().lines().count() == 1, "{message}");
}

#[test]
fn score_gives_the_summed_target_nll_of_gpt2_and_bart() {
    // BART: the fixture batch, one line per example; the token mean over the batch is HF's loss.
    let json = reference("bart-a");
    let data = scratch("cli-score").join("bart.jsonl");
    let batch = &json["batch"];
    let mut lines = String::new();
    for (ids, labels) in prompt_ids().iter().zip(batch["labels"].as_array().unwrap()) {
        let input_ids: Vec<u32> = ids.split(',').map(|i| i.parse().unwrap()).collect();
        let labels: Vec<i64> = labels.as_array().unwrap().iter().map(|l| l.as_i64().unwrap()).filter(|&l| l >= 0).collect();
        lines += &format!("{}\n", serde_json::json!({ "input_ids": input_ids, "labels": labels }));
    }
    std::fs::write(&data, lines).unwrap();
    let prefix = scratch("cli-score-prefix");
    three_prefix_export(&prefix);
    let model = bart_a();
    for (prefix, expected) in [(None, json["loss"].as_f64().unwrap()), (Some(prefix.display().to_string()), json["prefix"]["loss"].as_f64().unwrap())] {
        let mut args = vec!["score", "--model", model.as_str(), "--data", data.to_str().unwrap(), "--json"];
        if let Some(prefix) = &prefix {
            args.extend(["--prefix", prefix.as_str()]);
        }
        let scores = stdout_lines(&prefix_tune(&args));
        let tokens: u64 = scores.iter().map(|s| s["tokens"].as_u64().unwrap()).sum();
        let nll: f64 = scores.iter().map(|s| s["nll"].as_f64().unwrap()).sum();
        assert_eq!(tokens, 16);
        assert!((nll / tokens as f64 - expected).abs() < 1e-4, "mean NLL {} vs HF {expected}", nll / tokens as f64);
    }

    // GPT-2: every real token after the first is a target; HF's logits give the reference NLL.
    let files = WeightFiles::open(vec![fixtures().join("gpt2-a/reference.safetensors")]).unwrap();
    let (shape, ids) = files.view("batch.input_ids", |_, v| (v.shape().to_vec(), to_i64(v).unwrap())).unwrap();
    let (_, mask) = files.view("batch.attention_mask", |_, v| (v.shape().to_vec(), to_i64(v).unwrap())).unwrap();
    let (_, logits) = read_f32(&files, "batch.logits");
    let (seq, vocab) = (shape[1], 1000);
    let gpt2_data = scratch("cli-score-gpt2").join("gpt2.jsonl");
    let mut lines = String::new();
    let mut expected = Vec::new();
    for row in 0..shape[0] {
        let len = mask[row * seq..(row + 1) * seq].iter().filter(|&&m| m == 1).count();
        let input: Vec<i64> = ids[row * seq..row * seq + len].to_vec();
        lines += &format!("{}\n", serde_json::json!({ "input_ids": input, "labels": input }));
        let nll: f64 = (1..len)
            .map(|t| {
                let at = &logits[(row * seq + t - 1) * vocab..(row * seq + t) * vocab];
                let max = at.iter().copied().fold(f32::MIN, f32::max) as f64;
                let log_sum = max + at.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
                log_sum - at[input[t] as usize] as f64
            })
            .sum();
        expected.push((nll, len - 1));
    }
    std::fs::write(&gpt2_data, lines).unwrap();
    let gpt2 = fixtures().join("gpt2-a");
    let scores = stdout_lines(&prefix_tune(&["score", "--model", gpt2.to_str().unwrap(), "--data", gpt2_data.to_str().unwrap(), "--json"]));
    for (score, (nll, tokens)) in scores.iter().zip(expected) {
        assert_eq!(score["tokens"].as_u64().unwrap() as usize, tokens);
        assert!((score["nll"].as_f64().unwrap() - nll).abs() < 1e-3, "{score} vs HF {nll}");
    }

    // A label outside the vocabulary names the line and the field.
    std::fs::write(&data, "{\"input_ids\": [5, 6], \"labels\": [7]}\n{\"input_ids\": [5], \"labels\": [5000]}\n").unwrap();
    let bad = prefix_tune(&["score", "--model", model.as_str(), "--data", data.to_str().unwrap()]);
    let message = String::from_utf8_lossy(&bad.stderr);
    assert!(message.contains("bart.jsonl line 2: field `labels`") && message.trim().lines().count() == 1, "{message}");
}

/// `a b c` → `a b c </s>` over a small alphabet, as JSONL for bart-a.
fn copy_data(path: &Path, n: usize) {
    let lines: String = (0..n)
        .map(|i| {
            let source: Vec<u32> = (0..3).map(|k| 10 + ((i * 7 + k * 3) % 12) as u32).collect();
            let labels: Vec<u32> = source.iter().copied().chain([2]).collect();
            format!("{}\n", serde_json::json!({ "input_ids": source, "labels": labels }))
        })
        .collect();
    std::fs::write(path, lines).unwrap();
}

#[test]
fn a_bart_run_trains_its_sets_from_the_command_line() {
    let dir = scratch("cli-bart-train");
    let data = dir.join("copy.jsonl");
    copy_data(&data, 12);
    let model = bart_a();
    let run = |out: &Path, steps: &str, extra: &[&str]| {
        let mut args = vec![
            "train", "--model", model.as_str(), "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap(), "--lr", "1e-2",
            "--batch-size", "4", "--max-steps", steps, "--prefix-length", "4", "--cross-prefix-length", "0", "--decoder-prefix-length", "3",
            "--mlp-hidden", "16", "--checkpoint-every", "1", "--prefix-dropout", "0.1",
        ];
        args.extend(extra);
        let output = prefix_tune(&args);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    };
    let whole = dir.join("whole");
    run(&whole, "12", &[]);
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(whole.join("best/prefix_config.json")).unwrap()).unwrap();
    assert_eq!(config["lengths"], serde_json::json!({"encoder": 4, "decoder": 3}), "cross-attention set off, its own P per set");
    let run_config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(whole.join("config.json")).unwrap()).unwrap();
    assert_eq!(run_config["objective"], "mean", "BART's default loss is the token mean");
    // `--resume` alone finds the run complete; a contradicting flag is refused.
    let again = prefix_tune(&["train", "--resume", whole.to_str().unwrap()]);
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    let refused = prefix_tune(&["train", "--resume", whole.to_str().unwrap(), "--cross-prefix-length", "2"]);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--cross-prefix-length"));
    let off = prefix_tune(&["train", "--model", model.as_str(), "--data", data.to_str().unwrap(), "--out", dir.join("off").to_str().unwrap(), "--prefix-length", "0"]);
    assert!(String::from_utf8_lossy(&off.stderr).contains("every set is off"));
}

#[test]
fn bart_with_a_real_tokenizer_summarises_and_scores_text_as_hf() {
    let json = reference("bart-b");
    let model = fixtures().join("bart-b").display().to_string();
    for row in json["test"].as_array().unwrap() {
        let document = row["document"].as_str().unwrap();
        // The checkpoint's generation_config.json: beam 3, length penalty 0.8, max/min length.
        let beam = stdout_lines(&prefix_tune(&["generate", "--model", &model, "--prompt", document, "--json"]));
        assert_eq!(beam[0]["ids"], row["beam_new_tokens"], "beam search with the checkpoint's settings");
        assert_eq!(beam[0]["text"], row["beam_text"], "decoded without <s> and </s>");
        assert!((beam[0]["score"].as_f64().unwrap() - row["beam_sequences_score"].as_f64().unwrap()).abs() < 1e-4);
        let greedy = stdout_lines(&prefix_tune(&["generate", "--model", &model, "--prompt", document, "--json", "--num-beams", "1"]));
        assert_eq!(greedy[0]["ids"], row["greedy_new_tokens"]);
        assert_eq!(greedy[0]["text"], row["greedy_text"]);
    }
    let data = scratch("cli-bart-b-score").join("score.jsonl");
    let lines: String = json["test"].as_array().unwrap().iter().map(|r| format!("{}\n", serde_json::json!({ "input_ids": r["encoder_ids"], "labels": r["target_ids"] }))).collect();
    std::fs::write(&data, lines).unwrap();
    let scores = stdout_lines(&prefix_tune(&["score", "--model", &model, "--data", data.to_str().unwrap(), "--json"]));
    for (score, row) in scores.iter().zip(json["test"].as_array().unwrap()) {
        assert_eq!(score["tokens"], row["tokens"]);
        let (ours, theirs) = (score["nll"].as_f64().unwrap(), row["nll_sum"].as_f64().unwrap());
        assert!((ours - theirs).abs() < 1e-3 * theirs, "NLL {ours} vs HF {theirs}");
    }
}

#[test]
fn the_xsum_recipe_runs_end_to_end_on_a_tiny_bart() {
    let out = scratch("cli-xsum-recipe").join("run");
    let model = fixtures().join("bart-b").display().to_string();
    let data = fixtures().join("bart-b/xsum").display().to_string();
    let mut args: Vec<String> = ["--model", &model, "--data", &data, "--out", out.to_str().unwrap(), "--eval-metric", "rouge_l"].map(String::from).to_vec();
    if cfg!(feature = "flex") {
        args.extend(["--backend".into(), "flex".into()]);
    }
    super::recipe::run(&super::recipe::XSUM, args).unwrap();
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!((config["objective"].as_str(), config["lr"].as_f64(), config["batch_size"].as_u64()), (Some("mean"), Some(5e-5), Some(14)));
    let best: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("best/prefix_config.json")).unwrap()).unwrap();
    assert_eq!(best["lengths"], serde_json::json!({"encoder": 100, "decoder": 100, "cross": 100}));
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert!(metrics.contains("\"dev_rouge_l\""), "the dev ROUGE-L picks the best prefix");
    let predictions = std::fs::read_to_string(out.join("test/predictions.txt")).unwrap();
    assert_eq!(predictions.lines().count(), 2);
    let scores: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("test/scores.json")).unwrap()).unwrap();
    for key in ["rouge1", "rouge2", "rouge_l"] {
        let value = scores[key].as_f64().unwrap_or_else(|| panic!("{key} in {scores}"));
        assert!((0.0..=100.0).contains(&value), "{key} = {value}");
    }
}

#[test]
fn a_bart_prefix_trained_in_peft_layout_exports_to_a_peft_adapter() {
    let dir = scratch("cli-bart-peft");
    let data = dir.join("copy.jsonl");
    copy_data(&data, 8);
    let model = bart_a();
    let run = dir.join("run");
    let train = prefix_tune(&[
        "train", "--model", &model, "--data", data.to_str().unwrap(), "--out", run.to_str().unwrap(), "--lr", "1e-2", "--batch-size", "4",
        "--max-steps", "3", "--prefix-length", "5", "--prefix-layout", "peft", "--mlp-hidden", "16",
    ]);
    assert!(train.status.success(), "{}", String::from_utf8_lossy(&train.stderr));
    // Without the model, a BART prefix cannot be laid out: the flag is named.
    let adapter = dir.join("adapter");
    let no_model = prefix_tune(&["export", "--prefix", run.to_str().unwrap(), "--out", adapter.to_str().unwrap(), "--format", "peft"]);
    assert!(String::from_utf8_lossy(&no_model.stderr).contains("--model"), "{}", String::from_utf8_lossy(&no_model.stderr));
    let export = prefix_tune(&["export", "--prefix", run.to_str().unwrap(), "--model", &model, "--out", adapter.to_str().unwrap(), "--format", "peft"]);
    assert!(export.status.success(), "{}", String::from_utf8_lossy(&export.stderr));
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(adapter.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!((config["task_type"].as_str(), config["num_virtual_tokens"].as_u64(), config["num_layers"].as_u64()), (Some("SEQ_2_SEQ_LM"), Some(5), Some(4)));
    // The adapter scores exactly as the run's prefix (same blocks, same position shift).
    let nll = |prefix: &Path| {
        let lines = stdout_lines(&prefix_tune(&["score", "--model", &model, "--data", data.to_str().unwrap(), "--json", "--prefix", prefix.to_str().unwrap()]));
        lines.iter().map(|l| l["nll"].as_f64().unwrap()).collect::<Vec<_>>()
    };
    assert_eq!(nll(&run), nll(&adapter));
    // PEFT's layout has no native BART export (it shifts decoder positions): refused in one line.
    let native = prefix_tune(&["export", "--prefix", run.to_str().unwrap(), "--model", &model, "--out", dir.join("native").to_str().unwrap()]);
    let message = String::from_utf8_lossy(&native.stderr);
    assert!(!native.status.success() && message.contains("--format peft") && message.trim().lines().count() == 1, "{message}");
    // And a paper-layout run refuses PEFT's format, which cannot hold its sets.
    let flags = ["--encoder-prefix-length", "2", "--prefix-layout", "peft"];
    let both = prefix_tune(&[&["train", "--model", &model, "--data", data.to_str().unwrap(), "--out", dir.join("bad").to_str().unwrap()][..], &flags[..]].concat());
    assert!(String::from_utf8_lossy(&both.stderr).contains("PEFT has no encoder"));
}
