//! The `prefix-tune` binary as a user runs it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use prefix_tune_model::testing::{fixtures, scratch, vulkan_env};


#[path = "cli/bart.rs"]
mod bart;
#[path = "cli/bench.rs"]
mod bench;

#[path = "cli/serve.rs"]
mod serve;

#[path = "../../../examples/recipe.rs"]
#[allow(dead_code)]
mod recipe;

/// The environment a wgpu child process needs (Vulkan's driver: lavapipe in CI), or `None`
/// after saying why the calling test skips.
fn wgpu_env() -> Option<Vec<(&'static str, String)>> {
    if !cfg!(feature = "wgpu") {
        println!("skipped: built without the wgpu feature");
        return None;
    }
    let vulkan = vulkan_env();
    if vulkan.is_none() {
        println!("skipped: no Vulkan driver (install mesa-vulkan-drivers for lavapipe)");
    }
    vulkan
}

fn prefix_tune(args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_prefix-tune"));
    command.args(args);
    if cfg!(feature = "flex") && !matches!(args.first(), Some(&"metrics" | &"devices")) && !args.contains(&"--backend") {
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

    // Search options no search can use (a NaN length penalty was a panic in beam search; a NaN
    // temperature drew token 0 every time).
    for (options, needle) in [
        (&["--num-beams", "2", "--length-penalty", "NaN"][..], "length_penalty"),
        (&["--num-beams", "2", "--length-penalty", "inf"][..], "length_penalty"),
        (&["--do-sample", "--temperature", "NaN"][..], "temperature"),
        (&["--do-sample", "--temperature", "0"][..], "temperature"),
        (&["--do-sample", "--top-p", "1.5"][..], "top_p"),
        (&["--num-beams", "0"][..], "num_beams"),
    ] {
        let mut args = vec!["generate", "--model", model.to_str().unwrap(), "--prompt-ids", "1,2"];
        args.extend(options);
        assert_one_line_error(&prefix_tune(&args), &[needle]);
    }
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
/// lavapipe — where each step's tokens are chosen on the device: beam search with and without
/// HF's logits processors (n-gram and bad-word bans, a minimum length, BART's forced BOS and
/// EOS) equals HF, and a seeded draw (temperature, top-k, top-p) equals the CPU's. Runs in
/// child processes so a driver crash fails this test only.
#[test]
fn wgpu_backend_generates_what_hf_generates() {
    let Some(vulkan) = wgpu_env() else { return };
    let generate_with = |model: &str, options: &[&str], prompts: &[String], backend: &str, env: &[(&str, &str)]| -> Vec<serde_json::Value> {
        let model = fixtures().join(model);
        let mut args = vec!["generate".to_string(), "--model".into(), model.display().to_string(), "--json".into(), "--backend".into(), backend.into()];
        args.extend(options.iter().map(|o| o.to_string()));
        for prompt in prompts {
            args.extend(["--prompt-ids".into(), prompt.clone()]);
        }
        stdout_lines(&Command::new(env!("CARGO_BIN_EXE_prefix-tune")).args(&args).envs(vulkan.clone()).envs(env.iter().copied()).output().unwrap())
    };
    let generate = |model: &str, options: &[&str], prompts: &[String], backend: &str| generate_with(model, options, prompts, backend, &[]);
    let gpt2 = reference("gpt2-a");
    let gpt2_prompts: Vec<String> = gpt2["prompts"].as_array().unwrap().iter().map(|p| p.as_array().unwrap().iter().map(|id| id.to_string()).collect::<Vec<_>>().join(",")).collect();
    let beam4 = ["--max-new-tokens", "12", "--num-beams", "4", "--early-stopping", "true"];
    let beam4_lp = ["--max-new-tokens", "10", "--num-beams", "4", "--length-penalty", "0.8", "--early-stopping", "false", "--no-repeat-ngram-size", "2", "--min-new-tokens", "3"];
    let bad_words = ["--max-new-tokens", "12", "--bad-words-ids", "30", "--bad-words-ids", "302,490"];
    let bart_prompts = bart::prompt_ids();
    let bart_beam4 = ["--max-new-tokens", "11", "--min-new-tokens", "3", "--num-beams", "4", "--length-penalty", "0.8", "--no-repeat-ngram-size", "3", "--early-stopping", "true"];
    // Again with the matmul kernel of shaders/ (64 × 64 blocks with scalar reads, 128 × 128 with
    // vectors of four) in every linear layer of the prompt's pass and in the LM head, and with
    // each product's kernel tuned (the default of a build with `autotune`: a decoding step's
    // layers then take the few-row kernel, GELU and the residual stream in its epilogue).
    let (kernel, kernel_128) = ([("PREFIX_TUNE_MATMUL", "shaders")], [("PREFIX_TUNE_MATMUL", "shaders:128x128_v4")]);
    let tuned = [("PREFIX_TUNE_MATMUL", "tune")];
    for (model, prompts, name, options, env) in [
        ("gpt2-a", &gpt2_prompts, "beam4", &beam4[..], &[][..]),
        ("gpt2-a", &gpt2_prompts, "beam4_lp", &beam4_lp[..], &[]),
        ("gpt2-a", &gpt2_prompts, "greedy_bad_words", &bad_words[..], &[]),
        ("bart-a", &bart_prompts, "beam4", &bart_beam4[..], &[]),
        ("gpt2-a", &gpt2_prompts, "beam4", &beam4[..], &kernel[..]),
        ("bart-a", &bart_prompts, "beam4", &bart_beam4[..], &kernel_128[..]),
        ("gpt2-a", &gpt2_prompts, "beam4_lp", &beam4_lp[..], &tuned[..]),
        ("bart-a", &bart_prompts, "beam4", &bart_beam4[..], &tuned[..]),
    ] {
        let expected = &reference(model)["generate"][name];
        let lines = generate_with(model, options, prompts, "wgpu", env);
        assert_eq!(lines.len(), prompts.len(), "{model} {name}");
        for (i, line) in lines.iter().enumerate() {
            assert_eq!(line["ids"], expected["new_tokens"][i], "wgpu {model} {name} {env:?} prompt {i}");
            if let Some(score) = expected["sequences_scores"].get(i) {
                assert!((line["score"].as_f64().unwrap() - score.as_f64().unwrap()).abs() < 1e-4, "wgpu {model} {name} score {i}");
            }
        }
    }
    let sampled = ["--max-new-tokens", "12", "--do-sample", "--temperature", "1.3", "--top-k", "200", "--top-p", "0.95", "--seed", "5", "--no-repeat-ngram-size", "3"];
    let (on_gpu, on_cpu) = (generate("gpt2-a", &sampled, &gpt2_prompts, "wgpu"), generate("gpt2-a", &sampled, &gpt2_prompts, "flex"));
    assert_eq!(on_gpu, on_cpu, "a seeded draw on the GPU equals the CPU's");
    assert_ne!(on_cpu, generate("gpt2-a", &bad_words, &gpt2_prompts, "flex"), "the draw is not the greedy answer");
    println!("wgpu ({}): beam-4 (with and without processors, with and without the matmul kernel) and greedy with bad words identical to HF, GPT-2 and BART, and tuned; seeded sampling identical to the CPU's", vulkan[0].1);
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
    // A number may be written as on the command line (`lr = "0.01"`).
    std::fs::write(&config, "prefix_length = 3\nmlp-hidden = 16\nlr = \"0.01\"\nbatch_size = 2\nmax_steps = 2\nreparam = \"mlp\"\n").unwrap();
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

    // eval without a run behind it scores against the paper's split references, and says so.
    assert_eq!(scores["references"], "paper");
    let predictions = out.join("predictions.txt");
    let rescore = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["metrics", "--task", "e2e", "--data", data.to_str().unwrap(), "--predictions", predictions.to_str().unwrap(), "--json"];
        args.extend(extra);
        serde_json::from_str(run_ok(&args).trim()).unwrap()
    };
    let rescored = rescore(&["--references", "paper"]);
    assert_eq!(rescored["bleu"], scores["bleu"]);
    // An outside predictions file is scored as the official scorer would: original references.
    assert_eq!(rescore(&[])["references"], "original");

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
        "--eval-metric", "bleu", "--eval-limit", "3", "--references", "original", "--max-length", "46", "--out", run.to_str().unwrap(),
    ]);
    let summary: serde_json::Value = serde_json::from_str(summary.trim()).unwrap();
    assert!(summary["best_dev_metric"].is_number(), "{summary}");
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let evaluations: Vec<serde_json::Value> = metrics.lines().map(|l| serde_json::from_str(l).unwrap()).filter(|r: &serde_json::Value| r.get("dev_bleu").is_some()).collect();
    assert_eq!(evaluations.len(), 2, "{metrics}");
    assert!(run.join("best/prefix.safetensors").is_file());

    // eval of the run scores against the references it was trained on.
    let scores = run_ok(&[
        "eval", "--model", model.to_str().unwrap(), "--prefix", run.to_str().unwrap(), "--task", "e2e", "--data", data.to_str().unwrap(),
        "--num-beams", "1", "--max-new-tokens", "3", "--limit", "2", "--out", dir.join("eval").to_str().unwrap(),
    ]);
    let scores: serde_json::Value = serde_json::from_str(scores.trim()).unwrap();
    assert_eq!(scores["references"], "original");

    let bad = prefix_tune(&["train", "--model", model.to_str().unwrap(), "--task", "e2e", "--data", data.to_str().unwrap(), "--dev", data.to_str().unwrap(),
        "--max-steps", "1", "--eval-every", "1", "--eval-metric", "nonsense", "--out", dir.join("bad").to_str().unwrap()]);
    assert_one_line_error(&bad, &["nonsense"]);
}

/// Train options for gpt2-a on `data`, written to `out`.
fn small_run<'a>(model: &'a str, data: &'a str, out: &'a str, seed: &'a str, steps: &'a str) -> Vec<&'a str> {
    vec![
        "train", "--model", model, "--data", data, "--prefix-length", "3", "--mlp-hidden", "16", "--lr", "0.01", "--batch-size", "2",
        "--max-steps", steps, "--checkpoint-every", "1", "--seed", seed, "--prefix-dropout", "0.1", "--lm-dropout", "0.1", "--out", out,
    ]
}

/// (step, loss) of every training record, losses as their exact bits.
fn step_losses(run: &Path) -> Vec<(u64, u64)> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|r| Some((r["step"].as_u64()?, r["loss"].as_f64()?.to_bits())))
        .collect()
}

/// A scratch directory holding `n` training examples for gpt2-a: (directory, model, data).
fn gpt2_a_with_examples(name: &str, n: usize) -> (PathBuf, String, String) {
    let dir = scratch(name);
    let data = dir.join("train.jsonl");
    write_jsonl(&data, n);
    let model = fixtures().join("gpt2-a").display().to_string();
    (dir, model, data.display().to_string())
}

#[test]
fn one_seed_gives_the_same_run_in_two_processes() {
    let (dir, model, data) = gpt2_a_with_examples("seed", 8);
    let (model, data) = (model.as_str(), data.as_str());
    let runs: Vec<_> = [("a", "7"), ("b", "7"), ("c", "8")].iter().map(|(name, seed)| (dir.join(name), *seed)).collect();
    for (out, seed) in &runs {
        let output = prefix_tune(&small_run(model, data, out.to_str().unwrap(), seed, "6"));
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        // A log file gets whole lines: no carriage returns from a progress bar.
        assert!(!String::from_utf8_lossy(&output.stderr).contains('\r'));
    }
    let (a, b, c) = (&runs[0].0, &runs[1].0, &runs[2].0);
    assert_eq!(step_losses(a).len(), 6);
    assert_eq!(step_losses(a), step_losses(b), "same seed, same losses bit for bit");
    for file in ["best/prefix.safetensors", "checkpoint/prefix.safetensors", "checkpoint/optimizer.safetensors"] {
        assert_eq!(std::fs::read(a.join(file)).unwrap(), std::fs::read(b.join(file)).unwrap(), "{file} differs between two runs with one seed");
    }
    assert_ne!(step_losses(a), step_losses(c), "another seed, another run");
}

#[test]
fn a_run_killed_mid_way_resumes_from_its_directory_alone_bit_for_bit() {
    let (dir, model, data) = gpt2_a_with_examples("kill", 12);
    let (model, data) = (model.as_str(), data.as_str());
    let steps = 150;
    let whole = dir.join("whole");
    run_ok(&small_run(model, data, whole.to_str().unwrap(), "5", "150"));

    let killed = dir.join("killed");
    let first = small_run(model, data, killed.to_str().unwrap(), "5", "150");
    let resume = ["train", "--resume", killed.to_str().unwrap()];
    // Killed twice: early, and again after resuming; each time at whatever point the write
    // loop is at (often inside a checkpoint, which is written every step).
    for (args, kill_at) in [(&first[..], 5), (&resume[..], 60)] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_prefix-tune"));
        command.args(args).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
        if cfg!(feature = "flex") {
            command.args(["--backend", "flex"]);
        }
        let mut child = command.spawn().unwrap();
        while step_losses(&killed).len() < kill_at && child.try_wait().unwrap().is_none() {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // The kill may fall between moving the old checkpoint aside and the new one in.
        let state = ["checkpoint", "checkpoint.old"].iter().find_map(|d| std::fs::read_to_string(killed.join(d).join("trainer_state.json")).ok()).unwrap();
        let state: serde_json::Value = serde_json::from_str(&state).unwrap();
        assert!(state["optimizer_step"].as_u64().unwrap() < steps, "the run finished before it could be killed");
    }
    let summary: serde_json::Value = serde_json::from_str(run_ok(&resume).trim()).unwrap();
    assert_eq!(summary["steps"], steps);
    assert_eq!(step_losses(&killed), step_losses(&whole), "every step's loss equals the uninterrupted run's");
    assert_eq!(std::fs::read(killed.join("best/prefix.safetensors")).unwrap(), std::fs::read(whole.join("best/prefix.safetensors")).unwrap());
    for leftover in ["checkpoint.partial", "checkpoint.old"] {
        assert!(!killed.join(leftover).exists(), "{leftover} left behind");
    }

    // A flag that contradicts the run is refused; one that agrees is fine.
    let other_model = fixtures().join("gpt2-b");
    let refused = prefix_tune(&["train", "--resume", killed.to_str().unwrap(), "--model", other_model.to_str().unwrap()]);
    assert_one_line_error(&refused, &["--model", "gpt2-a", "resumed run keeps"]);
    let refused = prefix_tune(&["train", "--resume", killed.to_str().unwrap(), "--lr", "0.5"]);
    assert_one_line_error(&refused, &["--lr", "0.01"]);
    // The same model spelled another way is the same model.
    let respelled = fixtures().join("gpt2-b/../gpt2-a");
    run_ok(&["train", "--resume", killed.to_str().unwrap(), "--lr", "0.01", "--model", respelled.to_str().unwrap()]);
    let not_a_run = prefix_tune(&["train", "--resume", dir.join("nothing").to_str().unwrap()]);
    assert_one_line_error(&not_a_run, &["nothing", "config.json"]);
}

/// `--dtype bf16` trains (the same run in two processes, near but not equal to the f32 run),
/// is recorded with the run (a resume cannot switch it), and is refused in one line where it
/// cannot apply: fine-tuning, or a CPU without AMX.
#[test]
fn bf16_training_is_reproducible_recorded_and_refused_where_it_cannot_run() {
    let (dir, model, data) = gpt2_a_with_examples("bf16", 8);
    let (model, data) = (model.as_str(), data.as_str());
    let run = |name: &str, extra: &[&str]| {
        let out = dir.join(name);
        let mut args = small_run(model, data, out.to_str().unwrap(), "7", "4");
        args.extend_from_slice(extra);
        (prefix_tune(&args), out)
    };
    // f16 is for GPUs: the CPU backend refuses it in one line that says where it runs.
    let (f16_on_cpu, _) = run("g", &["--dtype", "f16", "--backend", "flex"]);
    assert_one_line_error(&f16_on_cpu, &["--dtype f16", "GPU backend", "--dtype bf16"]);
    let amx = prefix_tune_model::bf16::unavailable(&prefix_tune_model::testing::device(), prefix_tune_model::bf16::Dtype::Bf16).is_none();
    let (first, a) = run("a", &["--dtype", "bf16"]);
    if !amx {
        assert_one_line_error(&first, &["--dtype bf16"]);
        return;
    }
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let (second, b) = run("b", &["--dtype", "bf16"]);
    assert!(second.status.success());
    let (f32_run, c) = run("c", &[]);
    assert!(f32_run.status.success());
    assert_eq!(step_losses(&a), step_losses(&b), "same seed, same bf16 run bit for bit");
    assert_eq!(step_losses(&a).len(), 4);
    let (bf16_loss, f32_loss) = (f64::from_bits(step_losses(&a)[0].1), f64::from_bits(step_losses(&c)[0].1));
    assert_ne!(bf16_loss, f32_loss, "the bf16 run computed in f32");
    assert!((bf16_loss - f32_loss).abs() < 1e-2 * f32_loss.abs(), "bf16 {bf16_loss} against f32 {f32_loss}");
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(a.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["command"]["dtype"], "bf16");
    let switched = prefix_tune(&["train", "--resume", a.to_str().unwrap(), "--dtype", "f32", "--max-steps", "5"]);
    assert_one_line_error(&switched, &["--dtype", "bf16"]);
    let (finetune, _) = run("d", &["--dtype", "bf16", "--method", "finetune"]);
    assert_one_line_error(&finetune, &["--dtype bf16", "--method prefix"]);
    // A forced path: one this CPU runs trains near the default path; another is refused by name.
    let forced = |name: &str, path: &str| {
        let out = dir.join(name);
        let mut args = small_run(model, data, out.to_str().unwrap(), "7", "2");
        args.extend_from_slice(&["--dtype", "bf16", "--backend", "flex"]);
        let output = Command::new(env!("CARGO_BIN_EXE_prefix-tune")).args(&args).env("PREFIX_TUNE_BF16_PATH", path).output().unwrap();
        (output, out)
    };
    let (portable, e) = forced("e", "portable");
    assert!(portable.status.success(), "{}", String::from_utf8_lossy(&portable.stderr));
    let portable_loss = f64::from_bits(step_losses(&e)[0].1);
    assert!((portable_loss - bf16_loss).abs() < 1e-4 * bf16_loss.abs(), "portable {portable_loss} against {bf16_loss}");
    let (unknown, _) = forced("f", "tiles");
    assert_one_line_error(&unknown, &["PREFIX_TUNE_BF16_PATH", "tiles", "avx2"]);
    if !prefix_tune_kernels::bf16::Path::Amx.runs_here() {
        let (amx, _) = forced("g", "amx");
        assert_one_line_error(&amx, &["PREFIX_TUNE_BF16_PATH=amx", "AMX-BF16"]);
    }
}

/// Dev evaluation builds no autodiff graph: the peak memory of a run does not grow with the
/// size of its dev set (gpt2-b has GPT-2's 50,257-token vocabulary, so a kept graph would hold
/// ~16 MB of logits per dev example).
#[test]
fn dev_evaluation_memory_does_not_grow_with_the_dev_set() {
    let dir = scratch("dev-memory");
    let model = fixtures().join("gpt2-b");
    let write = |path: &Path, n: usize| {
        let lines: Vec<String> = (0..n)
            .map(|i| {
                let ids: Vec<u32> = (0..40).map(|t| ((i * 7919 + t * 104_729) % 50_000) as u32).collect();
                serde_json::json!({ "input_ids": ids }).to_string()
            })
            .collect();
        std::fs::write(path, lines.join("\n")).unwrap();
    };
    let train = dir.join("train.jsonl");
    write(&train, 4);
    let mut peaks = Vec::new();
    for n in [20, 240] {
        let dev = dir.join(format!("dev{n}.jsonl"));
        write(&dev, n);
        let out = dir.join(format!("run{n}"));
        let summary = run_ok(&[
            "train", "--model", model.to_str().unwrap(), "--data", train.to_str().unwrap(), "--dev", dev.to_str().unwrap(),
            "--prefix-length", "2", "--mlp-hidden", "8", "--batch-size", "10", "--max-steps", "2", "--eval-every", "1", "--out", out.to_str().unwrap(),
        ]);
        let summary: serde_json::Value = serde_json::from_str(summary.trim()).unwrap();
        let Some(peak) = summary["peak_rss_mib"].as_f64() else {
            println!("skipped: no peak RSS on this platform");
            return;
        };
        let evaluations = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap().lines().filter(|l| l.contains("dev_loss")).count();
        assert_eq!(evaluations, 2);
        peaks.push(peak);
    }
    println!("peak RSS: {:.0} MiB with 20 dev examples, {:.0} MiB with 240", peaks[0], peaks[1]);
    assert!(peaks[1] < peaks[0] * 1.15 + 20.0, "peak RSS grew with the dev set: {peaks:?} MiB");
}

#[test]
fn data_is_checked_against_the_model_before_the_first_step() {
    let dir = scratch("data-check");
    let model = fixtures().join("gpt2-a");
    let model = model.to_str().unwrap();
    let line = |ids: Vec<u32>| serde_json::json!({ "input_ids": ids }).to_string();
    let ok = line(vec![10, 20, 30, 514, 42]);
    let train = |name: &str, lines: &[String], extra: &[&str]| {
        let path = dir.join(name);
        std::fs::write(&path, lines.join("\n")).unwrap();
        let out = dir.join(format!("run-{name}"));
        let mut args = vec!["train", "--model", model, "--data", path.to_str().unwrap(), "--prefix-length", "4", "--mlp-hidden", "8", "--max-steps", "1", "--out", out.to_str().unwrap()];
        args.extend(extra);
        prefix_tune(&args)
    };
    let out_of_vocab = train("oov.jsonl", &[ok.clone(), String::new(), line(vec![1, 99_999_999, 514, 3])], &[]);
    assert_one_line_error(&out_of_vocab, &["oov.jsonl line 3", "99999999", "vocabulary"]);

    // n_positions is 64 and the prefix takes 4: 70 tokens cannot fit.
    let long = serde_json::json!({ "input_ids": (0..70).map(|i| 100 + i).collect::<Vec<u32>>(), "labels": (0..70).map(|i| if i < 62 { -100 } else { 100 + i }).collect::<Vec<i64>>() }).to_string();
    let too_long = train("long.jsonl", &[ok.clone(), long.clone()], &[]);
    assert_one_line_error(&too_long, &["long.jsonl line 2", "70 tokens", "60", "--max-length"]);
    let cut = train("long.jsonl", &[ok.clone(), long], &["--max-length", "50"]);
    assert!(cut.status.success(), "{}", String::from_utf8_lossy(&cut.stderr));
    assert!(String::from_utf8_lossy(&cut.stderr).contains("cut the source of 1 of 2 examples"));
    let too_much = train("long.jsonl", &[ok], &["--max-length", "61"]);
    assert_one_line_error(&too_much, &["--max-length 61", "at most 60"]);
}

#[test]
fn choices_are_listed_in_help_and_in_the_error_for_a_typo() {
    let help = Command::new(env!("CARGO_BIN_EXE_prefix-tune")).args(["train", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    // Undocumented choices are listed in one line, documented ones one per line.
    for choices in ["mlp, flat", "adamw, sgd", "e2e, webnlg, dart, xsum, jsonl", "- embedding-only:", "- constant:", "- mean:", "- finetune:", "- original:"] {
        assert!(help.contains(choices), "`{choices}` not listed in train --help");
    }
    let typo = prefix_tune(&["train", "--model", "m", "--data", "d", "--reparam", "mlpp"]);
    assert_one_line_error(&typo, &["mlpp", "--reparam", "mlp, flat"]);
    let typo = prefix_tune(&["generate", "--model", "m", "--early-stopping", "sometimes"]);
    assert_one_line_error(&typo, &["sometimes", "true, false, never"]);
    // A dropout of 1 or more would drop everything: refused before any work.
    let all_dropped = prefix_tune(&["train", "--model", "m", "--data", "d", "--lm-dropout", "1"]);
    assert_one_line_error(&all_dropped, &["--lm-dropout", "[0, 1)"]);
    let too_much = prefix_tune(&["train", "--model", "m", "--data", "d", "--prefix-dropout", "1.5"]);
    assert_one_line_error(&too_much, &["--prefix-dropout", "[0, 1)"]);
}

/// A command line that cannot work exits 2 (as clap's own errors do); a failure while running
/// it exits 1. Options with a fixed set of values are checked by the parser, whichever command.
/// `--backend auto`, every command's default, takes a real GPU adapter and never a software
/// one (CI has only lavapipe: auto is the CPU); `devices` lists what it weighed; a backend this
/// build lacks is a one-line error naming the ones it has.
#[test]
fn auto_backend_never_picks_a_software_adapter() {
    let report = &stdout_lines(&prefix_tune(&["devices", "--json"]))[0];
    let compiled: Vec<&str> = report["compiled"].as_array().unwrap().iter().map(|b| b.as_str().unwrap()).collect();
    assert_eq!(compiled.contains(&"flex"), cfg!(feature = "flex"), "{report}");
    let adapters = report["adapters"].as_array().unwrap();
    let auto = report["auto"].as_str().unwrap_or_else(|| panic!("auto failed: {report}"));
    let gpu = adapters.iter().find(|a| ["discrete", "integrated", "virtual"].contains(&a["kind"].as_str().unwrap()));
    match gpu {
        Some(gpu) => assert!(auto.starts_with("wgpu on ") && auto.contains(gpu["name"].as_str().unwrap()), "{report}"),
        None => assert_eq!(auto, "flex", "{report}"),
    }
    for software in adapters.iter().filter(|a| a["kind"] == "software") {
        assert!(!auto.contains(software["name"].as_str().unwrap()), "auto took a software adapter: {report}");
    }
    println!("{report}");

    let model = fixtures().join("gpt2-a");
    let missing = prefix_tune(&["generate", "--model", model.to_str().unwrap(), "--prompt-ids", "1", "--backend", "cuda"]);
    assert_one_line_error(&missing, &["`cuda` is not compiled", "available: ", "flex", "--features cuda"]);
}

#[test]
fn usage_errors_exit_2_and_runtime_errors_exit_1() {
    let model = fixtures().join("gpt2-a");
    let model = model.to_str().unwrap();
    let usage = [
        vec!["train", "--model", "m", "--data", "d", "--init", "texts:hello"],
        vec!["train", "--model", "m", "--data", "d", "--eval-metric", "meteor"],
        vec!["generate", "--model", model, "--prompt-ids", "1", "--backend", "opengl"],
        vec!["score", "--model", model, "--data", "d", "--backend", "tpu"],
        vec!["generate", "--model", model],
        // A sampling option without sampling would be ignored: refused instead.
        vec!["generate", "--model", model, "--prompt-ids", "1", "--top-k", "5"],
        // Counts of nothing: an eval of no inputs, batches of none, a server batching nobody.
        vec!["eval", "--model", model, "--task", "e2e", "--data", "d", "--limit", "0"],
        vec!["eval", "--model", model, "--task", "e2e", "--data", "d", "--batch-size", "0"],
        vec!["serve", "--model", model, "--max-batch", "0"],
    ];
    for args in usage {
        let output = prefix_tune(&args);
        assert_one_line_error(&output, &[]);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
    }
    let typo = prefix_tune(&["train", "--model", "m", "--data", "d", "--eval-metric", "meteor"]);
    assert_one_line_error(&typo, &["meteor", "bleu, nist, rouge_l, cider, rouge1, rouge2"]);
    let init = prefix_tune(&["train", "--model", "m", "--data", "d", "--init", "texts:hello"]);
    assert_one_line_error(&init, &["--init", "texts:hello", "random, zero or text:"]);

    // An options file is read into the same options: its key and file named when wrong.
    let dir = scratch("config-files");
    for (text, needles) in [
        ("prefix_lenght = 3\n", vec!["run.toml", "prefix_lenght", "not an option"]),
        ("reparam = \"mpl\"\n", vec!["run.toml", "reparam", "mpl"]),
        ("lr = \"fast\"\n", vec!["run.toml", "lr"]),
        ("lm_dropout = 1.0\n", vec!["run.toml", "lm_dropout", "[0, 1)"]),
        ("init = \"texts:hi\"\n", vec!["run.toml", "init", "random, zero or text:"]),
    ] {
        let file = dir.join("run.toml");
        std::fs::write(&file, text).unwrap();
        let output = prefix_tune(&["train", "--config", file.to_str().unwrap(), "--model", model, "--data", "d"]);
        assert_one_line_error(&output, &needles);
        assert_eq!(output.status.code(), Some(2), "{text}");
    }

    let missing = prefix_tune(&["generate", "--model", "./no/such/dir", "--prompt-ids", "1"]);
    assert_one_line_error(&missing, &["no/such/dir"]);
    assert_eq!(missing.status.code(), Some(1));
    let no_data = prefix_tune(&["score", "--model", model, "--data", "./no/such.jsonl"]);
    assert_one_line_error(&no_data, &["no/such.jsonl"]);
    assert_eq!(no_data.status.code(), Some(1));
}

/// `bench train --breakdown`: one JSON line with the timed steps, the tokens they held, and the
/// forward and backward phases; tiny shape, so it is a check of the report, not a timing.
#[test]
fn bench_train_reports_its_steps_and_the_phase_breakdown() {
    let line = run_ok(&["bench", "--backend", "flex", "--shape", "tiny", "train", "--steps", "2", "--batch-size", "3", "--seq-len", "12", "--target-fraction", "0.5", "--breakdown"]);
    let report: serde_json::Value = serde_json::from_str(line.lines().last().unwrap()).unwrap();
    assert_eq!(report["bench"], "train");
    assert_eq!(report["steps"], 2);
    let seconds = report["seconds"].as_f64().unwrap();
    let expected = 2.0 * 3.0 * 12.0 / seconds;
    assert!((report["tokens_per_second"].as_f64().unwrap() - expected).abs() < 1e-6 * expected, "{report}");
    // The phases are timed in passes of their own, so they are not bounded by `seconds` (a
    // loaded machine made one pass slower than the timed steps): only reported.
    for phase in ["forward_ms", "backward_ms"] {
        let ms = report[phase].as_f64().unwrap();
        assert!(ms > 0.0 && ms.is_finite(), "{phase}: {report}");
    }
}

/// Out of GPU memory is one line naming the batch size, not Burn's panic: a batch whose logits
/// need 154 GB on the wgpu backend (lavapipe in CI).
#[test]
fn gpu_out_of_memory_is_one_line_naming_the_batch_size() {
    let Some(adapter_kind) = wgpu_adapter_kind() else {
        println!("skipped: no wgpu adapter");
        return;
    };
    let output = prefix_tune(&["bench", "--backend", "wgpu", "--shape", "tiny", "train", "--batch-size", "3000", "--seq-len", "256", "--steps", "1"]);
    assert_one_line_error(&output, &["out of GPU memory at batch size 3000", "can't allocate buffer", "lower --batch-size"]);
    assert_eq!(output.status.code(), Some(1));
    // Work without a batch size: GPT-2-small's 154 MB embedding is over a software adapter's
    // 128 MiB storage-buffer limit (lavapipe's), so its `bench generate` fails at its first use.
    // It used to exit 101 printing nothing: the panic hook hid the panic and no guard reported it.
    if adapter_kind == "software" {
        let output = prefix_tune(&["bench", "--backend", "wgpu", "generate", "--new-tokens", "1"]);
        assert_one_line_error(&output, &["out of GPU memory (", "can't allocate buffer", "--backend flex"]);
        assert_eq!(output.status.code(), Some(1));
    }
}

/// The kind (`discrete`, `software`, …) of the first adapter wgpu sees, where wgpu is built in.
fn wgpu_adapter_kind() -> Option<String> {
    let report = &stdout_lines(&prefix_tune(&["devices", "--json"]))[0];
    let kind = report["adapters"][0]["kind"].as_str().map(str::to_string);
    kind.filter(|_| cfg!(feature = "wgpu"))
}
