//! GPT-2 against Hugging Face transformers 5.23.0: logits, generation, tokenizer, KV cache, and
//! the errors users see for bad input. References come from scripts/make_fixtures.py.

use std::path::{Path, PathBuf};

use prefix_tune_model::generate::GenerateConfig;
use prefix_tune_model::gpt2::{generate_gpt2, Dropout, Gpt2};
use prefix_tune_model::tensors::to_f32s;
use prefix_tune_model::testing::{device, fixtures, max_abs_diff, scratch};
use prefix_tune_model::weights::{to_f32, to_i64, WeightFiles};
use prefix_tune_model::{load_gpt2, ModelError, Past};

#[path = "model/attention.rs"]
mod attention;
#[path = "model/bart.rs"]
mod bart;
#[path = "model/bf16.rs"]
mod bf16;
#[path = "model/cross_entropy.rs"]
mod cross_entropy;
#[path = "model/dropout.rs"]
mod dropout;
#[path = "model/layer_norm.rs"]
mod layer_norm;
#[path = "model/few_rows.rs"]
mod few_rows;
#[path = "model/gelu.rs"]
mod gelu;
#[path = "model/paged.rs"]
mod paged;
#[path = "model/shaders.rs"]
mod shaders;



fn read_f32(files: &WeightFiles, name: &str) -> (Vec<usize>, Vec<f32>) {
    files.view(name, |_, v| (v.shape().to_vec(), to_f32(v).unwrap())).unwrap()
}

fn read_i64(files: &WeightFiles, name: &str) -> (Vec<usize>, Vec<i64>) {
    files.view(name, |_, v| (v.shape().to_vec(), to_i64(v).unwrap())).unwrap()
}

fn rows<T: Copy>(shape: &[usize], flat: &[T]) -> Vec<Vec<T>> {
    flat.chunks(shape[1]).map(<[T]>::to_vec).collect()
}


/// Logits `[B, T, V]` of a padded batch through `forward_tokens`.
fn logits(model: &Gpt2, ids: &[Vec<u32>], mask: &[Vec<f32>], past: Option<Past>) -> Vec<f32> {
    let (hidden, _) = model.forward_tokens(ids, mask, past, Dropout::default()).unwrap();
    to_f32s(model.logits(hidden))
}

/// Compares our logits with HF's at every real (mask = 1) position.
fn check_logits(model_name: &str, which: &str) {
    let device = device();
    let dir = fixtures().join(model_name);
    let model = load_gpt2(&dir, &device).unwrap();
    let reference = WeightFiles::open(vec![dir.join("reference.safetensors")]).unwrap();
    let (shape, ids) = read_i64(&reference, &format!("{which}.input_ids"));
    let (_, mask) = read_i64(&reference, &format!("{which}.attention_mask"));
    let (logit_shape, expected) = read_f32(&reference, &format!("{which}.logits"));
    let ids: Vec<Vec<u32>> = rows(&shape, &ids).into_iter().map(|r| r.iter().map(|&i| i as u32).collect()).collect();
    let mask: Vec<Vec<f32>> = rows(&shape, &mask).into_iter().map(|r| r.iter().map(|&m| m as f32).collect()).collect();
    let ours = logits(&model, &ids, &mask, None);
    let vocab = logit_shape[2];
    let mut worst = 0.0f32;
    for (b, row) in mask.iter().enumerate() {
        for (t, &m) in row.iter().enumerate() {
            if m > 0.5 {
                let at = (b * shape[1] + t) * vocab;
                worst = worst.max(max_abs_diff(&ours[at..at + vocab], &expected[at..at + vocab]));
            }
        }
    }
    println!("{model_name} {which}: max |Δlogit| = {worst:e}");
    assert!(worst < 1e-4, "{model_name} {which}: logits differ from HF by {worst}");
}

#[test]
fn logits_match_hf_right_padded() {
    check_logits("gpt2-a", "batch");
    check_logits("gpt2-b", "batch");
}

#[test]
fn logits_match_hf_left_padded() {
    check_logits("gpt2-a", "left");
    check_logits("gpt2-b", "left");
}

#[test]
fn kv_cache_decoding_equals_full_forward() {
    let device = device();
    let model = load_gpt2(&fixtures().join("gpt2-a"), &device).unwrap();
    let ids = vec![vec![5u32, 17, 3, 99, 42, 7, 250, 11], vec![900, 1, 2, 3, 4, 5, 6, 7]];
    let mask = vec![vec![1.0; 8]; 2];
    let full = logits(&model, &ids, &mask, None);
    let vocab = model.config.vocab_size;

    // Prefill three tokens, then one token at a time through the cache.
    let head: Vec<Vec<u32>> = ids.iter().map(|r| r[..3].to_vec()).collect();
    let (_, mut cache) = model.forward_tokens(&head, &vec![vec![1.0; 3]; 2], None, Dropout::default()).unwrap();
    for t in 3..8 {
        let step: Vec<Vec<u32>> = ids.iter().map(|r| vec![r[t]]).collect();
        let (hidden, next) = model.forward_tokens(&step, &vec![vec![1.0]; 2], Some(cache), Dropout::default()).unwrap();
        cache = next;
        let step_logits = to_f32s(model.logits(hidden));
        for b in 0..2 {
            let at = (b * 8 + t) * vocab;
            let diff = max_abs_diff(&step_logits[b * vocab..(b + 1) * vocab], &full[at..at + vocab]);
            assert!(diff < 1e-4, "row {b} step {t}: cached logits differ by {diff}");
        }
    }
    assert_eq!(cache.len(), 8);
}

/// The logits of one row's last token, fed alone behind its whole history (full forward).
fn alone(model: &Gpt2, history: &[u32]) -> Vec<f32> {
    let all = logits(model, &[history.to_vec()], &[vec![1.0; history.len()]], None);
    let vocab = model.config.vocab_size;
    all[all.len() - vocab..].to_vec()
}

#[test]
fn an_in_place_kv_cache_serves_rows_that_join_leave_and_share() {
    let device = device();
    let model = load_gpt2(&fixtures().join("gpt2-a"), &device).unwrap();
    let vocab = model.config.vocab_size;
    // Room for 2 tokens, at most 40: it grows (twice) before it is full.
    let mut cache = model.kv_cache(2, 40);
    let mut histories: Vec<Vec<u32>> = vec![vec![5, 17, 3], vec![900, 1]];
    // Each row joins alone, prefilled with its prompt, at its own length.
    for history in &histories {
        let (_, past) = model.forward_tokens(&[history.clone()], &[vec![1.0; history.len()]], None, Dropout::default()).unwrap();
        cache.push(past).unwrap();
    }
    assert_eq!(cache.used(), 5);
    let step = |cache: &mut prefix_tune_model::KvCache, histories: &mut Vec<Vec<u32>>, next: &[u32]| {
        let ids: Vec<Vec<u32>> = next.iter().map(|&id| vec![id]).collect();
        let hidden = model.forward_cached(&ids, &vec![vec![1.0]; ids.len()], cache, Dropout::default()).unwrap();
        let got = to_f32s(model.logits(hidden));
        for (row, (history, &id)) in histories.iter_mut().zip(next).enumerate() {
            history.push(id);
            let diff = max_abs_diff(&got[row * vocab..(row + 1) * vocab], &alone(&model, history));
            assert!(diff < 1e-4, "row {row} after {history:?}: cached logits differ from a full pass by {diff}");
        }
    };
    step(&mut cache, &mut histories, &[42, 7]);
    // A third row joins mid-way; nobody else's slots change.
    let (_, past) = model.forward_tokens(&[vec![250, 11, 12, 13]], &[vec![1.0; 4]], None, Dropout::default()).unwrap();
    cache.push(past).unwrap();
    histories.push(vec![250, 11, 12, 13]);
    step(&mut cache, &mut histories, &[8, 9, 10]);
    assert_eq!(cache.used(), 5 + 4 + 5);
    // Row 0 leaves; row 2 forks into two beams that share its history's slots.
    cache.keep(&[1, 2, 2]);
    histories = vec![histories[1].clone(), histories[2].clone(), histories[2].clone()];
    assert_eq!(cache.used(), 4 + 5, "a forked row shares its slots and a row that left frees its own");
    step(&mut cache, &mut histories, &[30, 31, 32]);
    assert_eq!(cache.used(), 4 + 5 + 3);
    // Room for 40 tokens: 28 are left, 30 do not fit, and a refused step changes nothing.
    assert_eq!(cache.available(), 28);
    let err = model.forward_cached(&vec![vec![1; 10]; 3], &vec![vec![1.0; 10]; 3], &mut cache, Dropout::default()).err().unwrap();
    assert!(err.to_string().contains("KV cache is full"), "{err}");
    assert_eq!(cache.available(), 28);
    step(&mut cache, &mut histories, &[33, 34, 35]);
}

#[test]
fn past_keys_shift_positions_like_a_prefix() {
    // A past of P keys: tokens after it sit at positions P.. — the same logits as feeding the
    // P tokens that produced that past, then the rest.
    let device = device();
    let model = load_gpt2(&fixtures().join("gpt2-b"), &device).unwrap();
    let ids = vec![vec![464u32, 2068, 7586, 21831, 18045, 625]];
    let full = logits(&model, &ids, &[vec![1.0; 6]], None);
    let (_, past) = model.forward_tokens(&[ids[0][..2].to_vec()], &[vec![1.0; 2]], None, Dropout::default()).unwrap();
    let rest = logits(&model, &[ids[0][2..].to_vec()], &[vec![1.0; 4]], Some(past));
    let vocab = model.config.vocab_size;
    assert!(max_abs_diff(&rest, &full[2 * vocab..]) < 1e-4);
}

fn reference_json(model_name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(fixtures().join(model_name).join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn id_lists(value: &serde_json::Value) -> Vec<Vec<u32>> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row.as_array().unwrap().iter().map(|id| id.as_u64().unwrap() as u32).collect())
        .collect()
}

/// Replays every `generate` call recorded for `model_name` and compares tokens and scores.
fn check_generation(model_name: &str) {
    let device = device();
    let model = load_gpt2(&fixtures().join(model_name), &device).unwrap();
    let reference = reference_json(model_name);
    let prompts = id_lists(&reference["prompts"]);
    for (name, run) in reference["generate"].as_object().unwrap() {
        let config = GenerateConfig::from_hf(&run["kwargs"], false).unwrap();
        let outputs = generate_gpt2(&model, &prompts, None, &config).unwrap();
        let expected = id_lists(&run["new_tokens"]);
        for (i, (ours, theirs)) in outputs.iter().zip(&expected).enumerate() {
            assert_eq!(&ours.ids, theirs, "{model_name} {name} prompt {i}: tokens differ from HF");
        }
        if let Some(scores) = run.get("sequences_scores") {
            for (i, (ours, theirs)) in outputs.iter().zip(scores.as_array().unwrap()).enumerate() {
                let theirs = theirs.as_f64().unwrap() as f32;
                let ours = ours.score.expect("beam search returns a score");
                assert!((ours - theirs).abs() < 1e-4, "{model_name} {name} prompt {i}: score {ours} vs HF {theirs}");
            }
        }
        println!("{model_name} {name}: {} prompts identical to HF", outputs.len());
    }
}

#[test]
fn generation_matches_hf_gpt2_a() {
    check_generation("gpt2-a");
}

#[test]
fn generation_matches_hf_gpt2_b() {
    check_generation("gpt2-b");
}

/// The parity tests against HF above (GPT-2's logits right- and left-padded, KV-cache decoding,
/// generate with every recorded setting) and BART's (logits, encoder states and loss, cached
/// decoding, greedy and beam search), and exact GELU's gradient against its formula, pass as
/// written on the wgpu backend too (lavapipe in CI), in a child process.
#[test]
fn parity_with_hf_holds_on_wgpu() {
    prefix_tune_model::testing::run_on_wgpu(&[
        "logits_match_hf_right_padded",
        "logits_match_hf_left_padded",
        "kv_cache_decoding_equals_full_forward",
        "an_in_place_kv_cache_serves_rows_that_join_leave_and_share",
        "generation_matches_hf_gpt2_a",
        "generation_matches_hf_gpt2_b",
        "bart::bart_logits_encoder_states_and_loss_match_hf",
        "bart::bart_cached_decoding_equals_teacher_forcing",
        "bart::bart_greedy_and_beam_search_match_hf_generate",
        "gelu::exact_gelu_and_its_gradient_equal_the_formula",
    ]);
}

#[test]
fn sampling_is_seeded_and_respects_top_k() {
    let device = device();
    let model = load_gpt2(&fixtures().join("gpt2-a"), &device).unwrap();
    let prompts = vec![vec![1u32, 2, 3], vec![4, 5]];
    let mut config = GenerateConfig::new(514);
    config.max_new_tokens = 6;
    config.sampling = Some(prefix_tune_model::generate::Sampling { temperature: 0.7, top_k: Some(1), top_p: None, seed: 3 });
    // top_k = 1 is greedy whatever the seed.
    let greedy = {
        let mut greedy = config.clone();
        greedy.sampling = None;
        generate_gpt2(&model, &prompts, None, &greedy).unwrap()
    };
    assert_eq!(generate_gpt2(&model, &prompts, None, &config).unwrap(), greedy);
    config.sampling = Some(prefix_tune_model::generate::Sampling { temperature: 1.5, top_k: None, top_p: Some(0.9), seed: 7 });
    let first = generate_gpt2(&model, &prompts, None, &config).unwrap();
    let again = generate_gpt2(&model, &prompts, None, &config).unwrap();
    assert_eq!(first, again, "same seed, same samples");
}

// ---- bad input: one-line errors naming the file and the tensor or field ----


/// A copy of gpt2-a whose files the test may break.
fn broken_copy(name: &str) -> PathBuf {
    let dir = scratch(name);
    for file in ["config.json", "model.safetensors"] {
        std::fs::copy(fixtures().join("gpt2-a").join(file), dir.join(file)).unwrap();
    }
    dir
}

fn load_error(dir: &Path) -> String {
    let message = load_gpt2(dir, &device()).err().expect("loading must fail").to_string();
    assert!(!message.contains('\n'), "error is one line: {message}");
    message
}

#[test]
fn missing_files_are_named() {
    let dir = scratch("missing");
    assert!(load_error(&dir.join("nope")).contains("nope"));
    assert!(load_error(&dir).contains("config.json"));
    std::fs::copy(fixtures().join("gpt2-a/config.json"), dir.join("config.json")).unwrap();
    let message = load_error(&dir);
    assert!(message.contains("model.safetensors"), "{message}");
    std::fs::write(dir.join("pytorch_model.bin"), b"pickle").unwrap();
    let message = load_error(&dir);
    assert!(message.contains("pytorch_model.bin") && message.contains("safetensors"), "{message}");
}

#[test]
fn truncated_and_corrupt_safetensors_are_refused() {
    let dir = broken_copy("truncated");
    let weights = dir.join("model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let message = load_error(&dir);
    assert!(message.contains("model.safetensors"), "{message}");

    std::fs::write(&weights, b"\xff\xff\xff\xff\xff\xff\xff\x7fgarbage").unwrap();
    let message = load_error(&dir);
    assert!(message.contains("model.safetensors") && message.contains("safetensors"), "{message}");
}

/// Values the model would fail on later (a dropout probability of 1 is a NaN loss in training,
/// past 1 a panic in the mask) are refused at load, naming the file and the field.
#[test]
fn config_values_the_model_would_fail_on_are_refused_at_load() {
    let dir = broken_copy("bad-values");
    let config_path = dir.join("config.json");
    let original: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    let cases = [
        ("attn_pdrop", serde_json::json!(1.0), "dropout probability"),
        ("resid_pdrop", serde_json::json!(1.5), "dropout probability"),
        ("embd_pdrop", serde_json::json!(-0.1), "dropout probability"),
        ("layer_norm_epsilon", serde_json::json!(0.0), "epsilon"),
        ("n_inner", serde_json::json!(0), "positive"),
        ("n_head", serde_json::json!(-3), "n_head"),
    ];
    for (field, value, why) in cases {
        let mut config = original.clone();
        config[field] = value;
        std::fs::write(&config_path, config.to_string()).unwrap();
        let message = load_error(&dir);
        assert!(message.contains("config.json") && message.contains(field) && message.contains(why), "{field}: {message}");
    }
    let mut config = original.clone();
    config["attn_pdrop"] = serde_json::json!(0.0);
    std::fs::write(&config_path, config.to_string()).unwrap();
    assert!(load_gpt2(&dir, &device()).is_ok(), "0 is a dropout probability");
}

#[test]
fn config_that_does_not_match_the_weights_names_the_tensor_and_field() {
    let dir = broken_copy("mismatch");
    let config_path = dir.join("config.json");
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config["n_embd"] = serde_json::json!(28);
    std::fs::write(&config_path, config.to_string()).unwrap();
    let message = load_error(&dir);
    assert!(message.contains("wte.weight") && message.contains("n_embd"), "{message}");

    config["n_embd"] = serde_json::json!(24);
    config["n_layer"] = serde_json::json!(2);
    std::fs::write(&config_path, config.to_string()).unwrap();
    let message = load_error(&dir);
    assert!(message.contains("n_layer"), "{message}");

    config["n_layer"] = serde_json::json!(4);
    std::fs::write(&config_path, config.to_string()).unwrap();
    let message = load_error(&dir);
    assert!(message.contains("h.3.ln_1.weight") && message.contains("missing"), "{message}");

    config["n_layer"] = serde_json::json!(3);
    config["n_head"] = serde_json::json!(5);
    std::fs::write(&config_path, config.to_string()).unwrap();
    let message = load_error(&dir);
    assert!(message.contains("n_head") && message.contains("config.json"), "{message}");

    std::fs::write(&config_path, "{\"n_embd\": \"wide\"}").unwrap();
    let message = load_error(&dir);
    assert!(message.contains("config.json") && message.contains("n_embd"), "{message}");
}

#[test]
fn a_tensor_with_the_wrong_shape_or_missing_is_named() {
    use safetensors::{tensor::TensorView, Dtype};
    let dir = broken_copy("shape");
    let weights = dir.join("model.safetensors");
    let files = WeightFiles::open(vec![weights.clone()]).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for name in files.names().map(String::from).collect::<Vec<_>>() {
        let (shape, values) = read_f32(&files, &name);
        tensors.push((name, shape, values.iter().flat_map(|v| v.to_le_bytes()).collect()));
    }
    let write = |tensors: &[(String, Vec<usize>, Vec<u8>)]| {
        let views: Vec<(String, TensorView)> = tensors
            .iter()
            .map(|(n, s, b)| (n.clone(), TensorView::new(Dtype::F32, s.clone(), b).unwrap()))
            .collect();
        std::fs::write(&weights, safetensors::serialize(views, None).unwrap()).unwrap();
    };
    // c_fc of layer 1 transposed: [4D, D] instead of [D, 4D].
    let mut wrong = tensors.clone();
    let entry = wrong.iter_mut().find(|(n, _, _)| n.ends_with("h.1.mlp.c_fc.weight")).unwrap();
    entry.1.reverse();
    write(&wrong);
    let message = load_error(&dir);
    assert!(message.contains("h.1.mlp.c_fc.weight") && message.contains("[96, 24]"), "{message}");

    let without: Vec<_> = tensors.iter().filter(|(n, _, _)| !n.ends_with("h.2.attn.c_proj.bias")).cloned().collect();
    write(&without);
    let message = load_error(&dir);
    assert!(message.contains("h.2.attn.c_proj.bias") && message.contains("missing"), "{message}");
}

#[test]
fn a_prompt_longer_than_the_positions_is_an_error() {
    let model = load_gpt2(&fixtures().join("gpt2-a"), &device()).unwrap();
    let long = vec![vec![7u32; model.config.n_positions + 1]];
    let err = model.forward_tokens(&long, &[vec![1.0; long[0].len()]], None, Dropout::default()).err().unwrap();
    assert!(matches!(err, ModelError::Input(_)));
    assert!(err.to_string().contains("n_positions"), "{err}");

    // Generation that would run past the positions fails up front, not mid-way.
    let mut config = GenerateConfig::new(514);
    config.max_new_tokens = 10;
    let prompt = vec![vec![7u32; model.config.n_positions - 3]];
    let err = generate_gpt2(&model, &prompt, None, &config).err().unwrap();
    assert!(err.to_string().contains("n_positions"), "{err}");
}

/// A model whose log-probabilities are NaN (a NaN weight here; an overflow in half precision
/// elsewhere) ends beam search with an error naming why, not a panic: no hypothesis with a NaN
/// score is ever ranked finished. A draw refuses it too.
#[test]
fn beam_search_and_sampling_over_nan_scores_are_errors() {
    let device = device();
    let mut model = load_gpt2(&fixtures().join("gpt2-a"), &device).unwrap();
    let [positions, width] = model.wpe.val().dims();
    model.wpe = prefix_tune_model::burn::module::Param::from_tensor(prefix_tune_model::burn::tensor::Tensor::full([positions, width], f32::NAN, &device));
    let mut config = GenerateConfig::new(514);
    (config.max_new_tokens, config.num_beams) = (3, 2);
    let err = generate_gpt2(&model, &[vec![7u32, 8, 9]], None, &config).err().unwrap();
    assert!(matches!(err, ModelError::NonFiniteScores { prompt: 0 }), "{err}");
    assert!(err.to_string().contains("NaN") && err.to_string().lines().count() == 1, "{err}");
    // A draw has nothing to draw from either (HF's torch.multinomial refuses such a row); the
    // argmax takes token 0, as HF's does.
    config.num_beams = 1;
    config.sampling = Some(prefix_tune_model::generate::Sampling { temperature: 1.0, top_k: None, top_p: None, seed: 3 });
    let err = generate_gpt2(&model, &[vec![7u32, 8, 9]], None, &config).err().unwrap();
    assert!(matches!(err, ModelError::NothingToDraw), "{err}");
    config.sampling = None;
    assert_eq!(generate_gpt2(&model, &[vec![7u32, 8, 9]], None, &config).unwrap()[0].ids, vec![0, 0, 0]);
}
