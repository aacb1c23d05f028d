//! The `prefix-tune` binary as a user runs it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn prefix_tune(args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_prefix-tune"));
    command.args(args);
    if cfg!(feature = "flex") {
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
