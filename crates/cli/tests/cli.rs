//! The `prefix-tune` binary as a user runs it.

use std::path::Path;
use std::process::{Command, Output};

use prefix_tune_model::testing::{fixtures, scratch};


fn prefix_tune(args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_prefix-tune"));
    command.args(args);
    if cfg!(feature = "flex") && args.first() != Some(&"metrics") {
        command.args(["--backend", "flex"]);
    }
    command.output().unwrap()
}

fn stdout_lines(output: &Output) -> Vec<serde_json::Value> {
    assert!(output.status.success(), "failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout.clone()).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn reference(model: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join(model).join("reference.json")).unwrap()).unwrap()
}

#[test]
fn generate_text_prompts_as_json_matches_hf_beam_search() {
    let model = fixtures().join("gpt2-b");
    let reference = reference("gpt2-b");
    let texts: Vec<String> = reference["prompt_texts"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().into()).collect();
    let mut args = vec!["generate", "--model", model.to_str().unwrap(), "--json", "--num-beams", "4", "--max-new-tokens", "12", "--early-stopping", "true"];
    for text in &texts {
        args.extend(["--prompt", text.as_str()]);
    }
    let lines = stdout_lines(&prefix_tune(&args));
    assert_eq!(lines.len(), texts.len());
    let beam = &reference["generate"]["beam4"];
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["ids"], beam["new_tokens"][i], "prompt {i}");
        let score = line["score"].as_f64().unwrap();
        assert!((score - beam["sequences_scores"][i].as_f64().unwrap()).abs() < 1e-4);
        assert!(line["text"].is_string());
    }
}

#[test]
fn generate_prompt_ids_without_a_tokenizer_gives_null_text() {
    let model = fixtures().join("gpt2-a");
    let reference = reference("gpt2-a");
    let prompts: Vec<String> = reference["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_array().unwrap().iter().map(|id| id.to_string()).collect::<Vec<_>>().join(","))
        .collect();
    let mut args = vec!["generate", "--model", model.to_str().unwrap(), "--json", "--max-new-tokens", "12"];
    for ids in &prompts {
        args.extend(["--prompt-ids", ids.as_str()]);
    }
    let lines = stdout_lines(&prefix_tune(&args));
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["ids"], reference["generate"]["greedy"]["new_tokens"][i], "prompt {i}");
        assert!(line["text"].is_null());
        assert!(line["score"].is_null());
    }
}

fn assert_one_line_error(output: &Output, needles: &[&str]) {
    assert!(!output.status.success(), "should fail");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "`{needle}` not in: {stderr}");
    }
}

#[test]
fn bad_input_fails_with_one_line() {
    let missing = prefix_tune(&["generate", "--model", "./no/such/dir", "--prompt-ids", "1"]);
    assert_one_line_error(&missing, &["no/such/dir"]);

    let model = fixtures().join("gpt2-a");
    let text_without_tokenizer = prefix_tune(&["generate", "--model", model.to_str().unwrap(), "--prompt", "hi"]);
    assert_one_line_error(&text_without_tokenizer, &["tokenizer", "--prompt-ids"]);

    let bad_ids = prefix_tune(&["generate", "--model", model.to_str().unwrap(), "--prompt-ids", "1,x"]);
    assert_one_line_error(&bad_ids, &["--prompt-ids", "x"]);

    let too_long = vec!["7"; 70].join(",");
    let long = prefix_tune(&["generate", "--model", model.to_str().unwrap(), "--prompt-ids", &too_long]);
    assert_one_line_error(&long, &["n_positions"]);

    let out_of_vocab = prefix_tune(&["generate", "--model", model.to_str().unwrap(), "--prompt-ids", "5000"]);
    assert_one_line_error(&out_of_vocab, &["5000", "vocab"]);
}

#[test]
fn a_backend_not_compiled_in_names_its_feature() {
    if cfg!(feature = "cuda") {
        return;
    }
    let model = fixtures().join("gpt2-a");
    let output = Command::new(env!("CARGO_BIN_EXE_prefix-tune"))
        .args(["generate", "--model", model.to_str().unwrap(), "--prompt-ids", "1", "--backend", "cuda"])
        .output()
        .unwrap();
    assert_one_line_error(&output, &["cuda", "--features cuda"]);
}

/// The wgpu backend (WGSL) on whatever Vulkan driver the machine has — in CI, Mesa's
/// lavapipe. Runs in a child process so a driver crash fails this test only.
#[test]
fn wgpu_backend_generates_what_hf_generates() {
    if !cfg!(feature = "wgpu") {
        println!("skipped: built without the wgpu feature");
        return;
    }
    let lavapipe = Path::new("/usr/share/vulkan/icd.d/lvp_icd.json");
    let icd = std::env::var("VK_ICD_FILENAMES").ok().or_else(|| lavapipe.exists().then(|| lavapipe.display().to_string()));
    let Some(icd) = icd else {
        println!("skipped: no Vulkan driver (install mesa-vulkan-drivers for lavapipe)");
        return;
    };
    let runtime = std::env::temp_dir().join("prefix-tune-xdg");
    std::fs::create_dir_all(&runtime).unwrap();
    let model = fixtures().join("gpt2-a");
    let reference = reference("gpt2-a");
    let mut args = vec!["generate".to_string(), "--model".into(), model.display().to_string(), "--json".into(), "--backend".into(), "wgpu".into()];
    args.extend(["--max-new-tokens".into(), "12".into(), "--num-beams".into(), "4".into(), "--early-stopping".into(), "true".into()]);
    for prompt in reference["prompts"].as_array().unwrap() {
        let ids: Vec<String> = prompt.as_array().unwrap().iter().map(|id| id.to_string()).collect();
        args.extend(["--prompt-ids".into(), ids.join(",")]);
    }
    let output = Command::new(env!("CARGO_BIN_EXE_prefix-tune"))
        .args(&args)
        .env("VK_ICD_FILENAMES", &icd)
        .env("XDG_RUNTIME_DIR", &runtime)
        .output()
        .unwrap();
    let lines = stdout_lines(&output);
    let beam = &reference["generate"]["beam4"];
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["ids"], beam["new_tokens"][i], "wgpu prompt {i}");
        let score = line["score"].as_f64().unwrap();
        assert!((score - beam["sequences_scores"][i].as_f64().unwrap()).abs() < 1e-4, "wgpu score {i}");
    }
    println!("wgpu ({icd}): beam-4 tokens identical to HF");
}


fn run_ok(args: &[&str]) -> String {
    let output = prefix_tune(args);
    assert!(output.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

/// Pre-tokenized examples for gpt2-a: three source tokens, the separator, a fixed answer.
fn write_jsonl(path: &Path, n: usize) {
    let lines: Vec<String> = (0..n)
        .map(|i| {
            let ids = [10 + i as u32, 20 + i as u32, 30, 514, 42, 43, 514];
            let labels: Vec<i64> = ids.iter().enumerate().map(|(t, &id)| if t < 4 { -100 } else { id as i64 }).collect();
            serde_json::json!({ "input_ids": ids, "labels": labels }).to_string()
        })
        .collect();
    std::fs::write(path, lines.join("\n")).unwrap();
}

#[test]
fn train_then_generate_export_and_resume() {
    let dir = scratch("train");
    let data = dir.join("train.jsonl");
    write_jsonl(&data, 6);
    let model = fixtures().join("gpt2-a");
    let run = dir.join("run");
    // Options from a TOML file, one overridden on the command line.
    let config = dir.join("run.toml");
    std::fs::write(&config, "prefix_length = 3\nmlp_hidden = 16\nlr = 0.01\nbatch_size = 2\nmax_steps = 2\n").unwrap();
    let summary = run_ok(&[
        "train", "--config", config.to_str().unwrap(), "--model", model.to_str().unwrap(), "--data", data.to_str().unwrap(),
        "--max-steps", "4", "--checkpoint-every", "2", "--seed", "3", "--out", run.to_str().unwrap(),
    ]);
    let summary: serde_json::Value = serde_json::from_str(summary.trim()).unwrap();
    assert_eq!(summary["steps"], 4, "the command line wins over the file");
    assert_eq!(summary["trainable_params"], 3 * 24 + 24 * 16 + 16 + 16 * 144 + 144);
    for file in ["config.json", "metrics.jsonl", "loss.png", "checkpoint/prefix.safetensors", "checkpoint/optimizer.safetensors", "best/prefix.safetensors"] {
        assert!(run.join(file).is_file(), "{file} missing from the run directory");
    }
    // The checkpoint holds the prefix and optimizer only: never the frozen model.
    let checkpoint_bytes: u64 = std::fs::read_dir(run.join("checkpoint")).unwrap().flatten().map(|f| f.metadata().unwrap().len()).sum();
    let model_bytes = std::fs::metadata(model.join("model.safetensors")).unwrap().len();
    assert!(checkpoint_bytes < model_bytes / 2, "{checkpoint_bytes} bytes of checkpoint");

    let prompt = ["--prompt-ids", "11,21,30,514", "--max-new-tokens", "4", "--json"];
    let mut with_run = vec!["generate", "--model", model.to_str().unwrap(), "--prefix", run.to_str().unwrap()];
    with_run.extend(prompt);
    let from_run = run_ok(&with_run);

    let peft = dir.join("peft");
    run_ok(&["export", "--prefix", run.to_str().unwrap(), "--out", peft.to_str().unwrap(), "--format", "peft"]);
    assert!(peft.join("adapter_config.json").is_file() && peft.join("adapter_model.safetensors").is_file());
    let mut with_peft = vec!["generate", "--model", model.to_str().unwrap(), "--prefix", peft.to_str().unwrap()];
    with_peft.extend(prompt);
    assert_eq!(run_ok(&with_peft), from_run, "the PEFT export generates what the run's prefix does");

    // A finished run resumed has nothing left to do and keeps its step count.
    let resumed = run_ok(&["train", "--model", model.to_str().unwrap(), "--data", data.to_str().unwrap(), "--resume", run.to_str().unwrap()]);
    let resumed: serde_json::Value = serde_json::from_str(resumed.trim()).unwrap();
    assert_eq!(resumed["steps"], 4);

    // Bad data: the file and the line.
    let bad = dir.join("bad.jsonl");
    std::fs::write(&bad, "{\"input_ids\": [1, 2, 3]}\nnot json\n").unwrap();
    let output = prefix_tune(&["train", "--model", model.to_str().unwrap(), "--data", bad.to_str().unwrap(), "--out", dir.join("bad-run").to_str().unwrap()]);
    assert_one_line_error(&output, &["bad.jsonl", "line 2"]);
}

#[test]
fn eval_decodes_and_scores_and_metrics_rescore_the_predictions() {
    let dir = scratch("eval");
    let model = fixtures().join("gpt2-b");
    let data = fixtures().join("data/e2e_devset_sample.csv");
    let out = dir.join("out");
    let scores = run_ok(&[
        "eval", "--model", model.to_str().unwrap(), "--task", "e2e", "--data", data.to_str().unwrap(),
        "--num-beams", "2", "--max-new-tokens", "4", "--out", out.to_str().unwrap(),
    ]);
    let scores: serde_json::Value = serde_json::from_str(scores.trim()).unwrap();
    assert!(scores["bleu"].is_number() && scores["rouge_l"].is_number() && scores["cider"].is_number(), "{scores}");
    let predictions = std::fs::read_to_string(out.join("predictions.txt")).unwrap();
    assert_eq!(predictions.lines().count(), scores["items"].as_u64().unwrap() as usize);

    let rescored = run_ok(&[
        "metrics", "--task", "e2e", "--data", data.to_str().unwrap(), "--predictions", out.join("predictions.txt").to_str().unwrap(), "--json",
    ]);
    let rescored: serde_json::Value = serde_json::from_str(rescored.trim()).unwrap();
    assert_eq!(rescored["bleu"], scores["bleu"]);

    let short = dir.join("short.txt");
    std::fs::write(&short, "only one line\n").unwrap();
    let output = prefix_tune(&["metrics", "--task", "e2e", "--data", data.to_str().unwrap(), "--predictions", short.to_str().unwrap()]);
    assert_one_line_error(&output, &["short.txt", "1 prediction"]);
}

#[test]
fn training_on_a_task_keeps_the_prefix_with_the_best_dev_bleu() {
    let dir = scratch("task-train");
    let model = fixtures().join("gpt2-b");
    let data = fixtures().join("data/e2e_devset_sample.csv");
    let run = dir.join("run");
    let summary = run_ok(&[
        "train", "--model", model.to_str().unwrap(), "--task", "e2e", "--data", data.to_str().unwrap(), "--dev", data.to_str().unwrap(),
        "--prefix-length", "2", "--mlp-hidden", "8", "--lr", "0.01", "--batch-size", "8", "--max-steps", "2", "--eval-every", "1",
        "--eval-metric", "bleu", "--eval-limit", "3", "--out", run.to_str().unwrap(),
    ]);
    let summary: serde_json::Value = serde_json::from_str(summary.trim()).unwrap();
    assert!(summary["best_dev_metric"].is_number(), "{summary}");
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let evaluations: Vec<serde_json::Value> = metrics.lines().map(|l| serde_json::from_str(l).unwrap()).filter(|r: &serde_json::Value| r.get("dev_bleu").is_some()).collect();
    assert_eq!(evaluations.len(), 2, "{metrics}");
    assert!(run.join("best/prefix.safetensors").is_file());

    let bad = prefix_tune(&["train", "--model", model.to_str().unwrap(), "--task", "e2e", "--data", data.to_str().unwrap(), "--dev", data.to_str().unwrap(),
        "--max-steps", "1", "--eval-every", "1", "--eval-metric", "nonsense", "--out", dir.join("bad").to_str().unwrap()]);
    assert_one_line_error(&bad, &["nonsense"]);
}
