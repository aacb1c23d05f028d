//! The prefix against PEFT 0.21.2 (transformers 5.23.0): injected keys/values, logits,
//! generation, adapter files; and what only we do: exports, mixed-prefix batches, text init.

use prefix_tune_model::burn::module::Param;
use prefix_tune_model::burn::nn::Linear;
use prefix_tune_model::burn::tensor::{Device, Tensor};
use prefix_tune_model::generate::GenerateConfig;
use prefix_tune_model::gpt2::{generate_gpt2, Dropout, Gpt2};
use prefix_tune_model::tensors::{floats, to_f32s};
use prefix_tune_model::testing::{peft_params, peft_reference, read_f32, device, fixtures, max_abs_diff, scratch};
use prefix_tune_model::weights::{to_i64, WeightFiles};
use prefix_tune_model::{load_gpt2, Past};
#[path = "prefix/bart.rs"]
mod bart;

use prefix_tune_prefix::{infix_forward, load_prefix, save_export, save_peft, save_state, text_activations, Layout, Placement, Prefix, PrefixConfig, PrefixMlp, Reparam};

fn model(device: &Device) -> Gpt2 {
    load_gpt2(&fixtures().join("gpt2-a"), device).unwrap()
}

fn matrix(files: &WeightFiles, name: &str, device: &Device) -> Tensor<2> {
    let (shape, values) = read_f32(files, name);
    floats(values, [shape[0], shape[1]], device)
}

/// PEFT's trainable prefix (embedding, and `transform.0`/`transform.2` when projected) as ours.
/// PyTorch's Linear weight is [out, in]; Burn's is [in, out].
fn peft_prefix(variant: &str, device: &Device) -> Prefix {
    let files = peft_params(variant);
    let layout = Layout::new(3, 4, 6);
    let embedding = matrix(&files, "prompt_encoder.default.embedding.weight", device);
    let mlp = files.contains("prompt_encoder.default.transform.0.weight").then(|| {
        let linear = |index: usize| {
            let weight = matrix(&files, &format!("prompt_encoder.default.transform.{index}.weight"), device).transpose();
            let (shape, bias) = read_f32(&files, &format!("prompt_encoder.default.transform.{index}.bias"));
            Linear { weight: Param::from_tensor(weight), bias: Some(Param::from_tensor(floats(bias, [shape[0]], device))) }
        };
        PrefixMlp { hidden: linear(0), output: linear(2) }
    });
    Prefix { embedding: Param::from_tensor(embedding), mlp, layout, dropout: 0.0, placement: Default::default() }
}

/// The fixture batch: ids, mask (right-padded) as host rows.
fn batch(files: &WeightFiles) -> (Vec<Vec<u32>>, Vec<Vec<f32>>) {
    let (shape, ids) = files.view("batch.input_ids", |_, v| (v.shape().to_vec(), to_i64(v).unwrap())).unwrap();
    let (_, mask) = files.view("batch.attention_mask", |_, v| (v.shape().to_vec(), to_i64(v).unwrap())).unwrap();
    let ids = ids.chunks(shape[1]).map(|r| r.iter().map(|&i| i as u32).collect()).collect();
    let mask = mask.chunks(shape[1]).map(|r| r.iter().map(|&m| m as f32).collect()).collect();
    (ids, mask)
}

fn logits(model: &Gpt2, ids: &[Vec<u32>], mask: &[Vec<f32>], past: Option<Past>) -> Vec<f32> {
    let (hidden, _) = model.forward_tokens(ids, mask, past, Dropout::default()).unwrap();
    to_f32s(model.logits(hidden))
}

/// Max |Δ| over real positions of `[B, T, V]` logits.
fn masked_diff(ours: &[f32], theirs: &[f32], mask: &[Vec<f32>], vocab: usize) -> f32 {
    let seq = mask[0].len();
    let mut worst = 0.0f32;
    for (b, row) in mask.iter().enumerate() {
        for (t, &m) in row.iter().enumerate() {
            if m > 0.5 {
                let at = (b * seq + t) * vocab;
                worst = worst.max(max_abs_diff(&ours[at..at + vocab], &theirs[at..at + vocab]));
            }
        }
    }
    worst
}

#[test]
fn injected_keys_and_values_equal_pefts() {
    let device = device();
    for variant in ["flat", "mlp"] {
        let prefix = peft_prefix(variant, &device);
        let files = peft_params(variant);
        let past = prefix.past(3, false);
        for (layer, kv) in past.layers.iter().enumerate() {
            let (shape, keys) = read_f32(&files, &format!("past_keys.{layer}"));
            let (_, values) = read_f32(&files, &format!("past_values.{layer}"));
            assert_eq!(kv.keys.dims().to_vec(), shape);
            let dk = max_abs_diff(&to_f32s(kv.keys.clone()), &keys);
            let dv = max_abs_diff(&to_f32s(kv.values.clone()), &values);
            assert!(dk < 1e-5 && dv < 1e-5, "{variant} layer {layer}: keys {dk}, values {dv}");
        }
        let (_, embeddings) = read_f32(&files, "prompt_embeddings");
        assert!(max_abs_diff(&to_f32s(prefix.activations()), &embeddings) < 1e-5);
    }
}

/// The parity tests against PEFT and the BART reference (keys and values, logits, generation,
/// mixed-prefix batches, the three BART sets and PEFT's seq2seq adapters) pass as written on
/// the wgpu backend too (lavapipe in CI), in a child process.
#[test]
fn parity_with_peft_holds_on_wgpu() {
    prefix_tune_model::testing::run_on_wgpu(&[
        "injected_keys_and_values_equal_pefts",
        "prefixed_logits_equal_pefts",
        "prefixed_generation_is_token_identical_to_peft",
        "a_mixed_batch_gives_each_row_its_own_prefixs_logits",
        "bart::three_bart_prefixes_give_the_reference_logits_and_generations",
        "bart::peft_bart_adapters_give_peft_logits_and_generations",
    ]);
}

#[test]
fn prefixed_logits_equal_pefts() {
    let device = device();
    let model = model(&device);
    for variant in ["flat", "mlp"] {
        let prefix = peft_prefix(variant, &device);
        let files = peft_params(variant);
        let (ids, mask) = batch(&files);
        let ours = logits(&model, &ids, &mask, Some(prefix.past(ids.len(), false)));
        let (_, theirs) = read_f32(&files, "batch.logits");
        let worst = masked_diff(&ours, &theirs, &mask, 1000);
        println!("{variant}: max |Δlogit| vs PEFT = {worst:e}");
        assert!(worst < 1e-4, "{variant}: {worst}");
    }
}

#[test]
fn prefixed_generation_is_token_identical_to_peft() {
    let device = device();
    let model = model(&device);
    for variant in ["flat", "mlp"] {
        let prefix = peft_prefix(variant, &device);
        let reference = peft_reference(variant);
        let prompts: Vec<Vec<u32>> = reference["prompts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_array().unwrap().iter().map(|i| i.as_u64().unwrap() as u32).collect())
            .collect();
        for (name, run) in reference["generate"].as_object().unwrap() {
            let kwargs = &run["kwargs"];
            let mut config = GenerateConfig::new(kwargs["eos_token_id"].as_u64().unwrap() as u32);
            config.pad_token_id = kwargs["pad_token_id"].as_u64().unwrap() as u32;
            config.max_new_tokens = kwargs["max_new_tokens"].as_u64().unwrap() as usize;
            if let Some(beams) = kwargs.get("num_beams") {
                config.num_beams = beams.as_u64().unwrap() as usize;
                config.early_stopping = if kwargs["early_stopping"].as_bool().unwrap() {
                    prefix_tune_model::generate::EarlyStopping::Eager
                } else {
                    prefix_tune_model::generate::EarlyStopping::Heuristic
                };
                config.length_penalty = kwargs["length_penalty"].as_f64().unwrap() as f32;
            }
            let outputs = generate_gpt2(&model, &prompts, Some(prefix.past(prompts.len(), false)), &config).unwrap();
            for (i, output) in outputs.iter().enumerate() {
                let expected: Vec<u32> = run["new_tokens"][i].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
                assert_eq!(output.ids, expected, "{variant} {name} prompt {i}");
                if let Some(scores) = run.get("sequences_scores") {
                    let theirs = scores[i].as_f64().unwrap() as f32;
                    assert!((output.score.unwrap() - theirs).abs() < 1e-4, "{variant} {name} prompt {i} score");
                }
            }
        }
    }
}

#[test]
fn peft_adapters_load_and_round_trip_byte_identical() {
    let device = device();
    let layout = Layout::new(3, 4, 6);
    for variant in ["flat", "mlp"] {
        let adapter = fixtures().join("peft").join(variant).join("adapter");
        let loaded = load_prefix(&adapter, Some(layout), &device).unwrap();
        assert_eq!(loaded.base_model.as_deref(), Some("tests/fixtures/gpt2-a"));
        let (_, expected) = read_f32(&peft_params(variant), "prompt_embeddings");
        assert!(max_abs_diff(&to_f32s(loaded.prefix.activations()), &expected) < 1e-6);

        let out = scratch(&format!("peft-{variant}"));
        save_peft(&loaded.prefix, loaded.base_model.as_deref(), &out).unwrap();
        let original = WeightFiles::open(vec![adapter.join("adapter_model.safetensors")]).unwrap();
        let written = WeightFiles::open(vec![out.join("adapter_model.safetensors")]).unwrap();
        let bytes = |files: &WeightFiles| files.view("prompt_embeddings", |_, v| (v.shape().to_vec(), v.data().to_vec())).unwrap();
        assert_eq!(bytes(&original), bytes(&written), "{variant}: tensors byte-identical after a round trip");
        let reloaded = load_prefix(&out, Some(layout), &device).unwrap();
        assert!(to_f32s(reloaded.prefix.activations()) == to_f32s(loaded.prefix.activations()), "reloaded exactly");
    }
}

#[test]
fn an_export_gives_the_logits_of_the_mlp_it_came_from_and_a_state_keeps_the_mlp() {
    let device = device();
    let model = model(&device);
    let prefix = peft_prefix("mlp", &device);
    let (ids, mask) = batch(&peft_params("mlp"));
    let before = logits(&model, &ids, &mask, Some(prefix.past(3, false)));

    let dir = scratch("export");
    save_export(&prefix, Some("gpt2-a"), "gpt2", &dir).unwrap();
    let exported = load_prefix(&dir, Some(prefix.layout), &device).unwrap();
    assert!(exported.prefix.mlp.is_none(), "an export holds activations only");
    let after = logits(&model, &ids, &mask, Some(exported.prefix.past(3, false)));
    let diff = max_abs_diff(&before, &after);
    assert!(diff < 1e-6, "logits after export differ by {diff}");
    // Activations only: P × 2·L·D floats plus a small header.
    let size = std::fs::metadata(dir.join("prefix.safetensors")).unwrap().len();
    assert!(size < 7 * 144 * 4 + 256, "{size} bytes");

    let state_dir = scratch("state");
    let config = PrefixConfig { length: 7, reparam: Reparam::Mlp { hidden: 20 }, dropout: 0.0, init: prefix_tune_prefix::Init::Random, placement: Default::default() };
    save_state(&prefix, &config, Some("gpt2-a"), "gpt2", &state_dir).unwrap();
    let state = load_prefix(&state_dir, Some(prefix.layout), &device).unwrap();
    assert!(state.prefix.mlp.is_some(), "a training state keeps the MLP");
    assert!(to_f32s(state.prefix.embedding.val()) == to_f32s(prefix.embedding.val()), "state keeps the embedding exactly");
    // Same parameters; the reloaded weights are contiguous where the originals were
    // transposed views, so the matmuls round differently (≈1e-7 in the activations).
    let diff = max_abs_diff(&logits(&model, &ids, &mask, Some(state.prefix.past(3, false))), &before);
    assert!(diff < 1e-5, "logits from the state differ by {diff}");
}

#[test]
fn a_mixed_batch_gives_each_row_its_own_prefixs_logits() {
    let device = device();
    let model = model(&device);
    let flat = peft_prefix("flat", &device); // P = 5
    let mlp = peft_prefix("mlp", &device); // P = 7
    let (ids, mask) = batch(&peft_params("flat"));
    let layout = flat.layout;
    let mixed = layout.stack(&[flat.activations(), mlp.activations(), flat.activations()]);
    let together = logits(&model, &ids, &mask, Some(mixed));
    let seq = ids[0].len();
    for (row, prefix) in [(0usize, &flat), (1, &mlp), (2, &flat)] {
        let alone = logits(&model, &ids[row..=row], &mask[row..=row], Some(prefix.past(1, false)));
        let start = row * seq * 1000;
        let worst = masked_diff(&together[start..start + seq * 1000], &alone, &mask[row..=row], 1000);
        assert!(worst < 1e-5, "row {row}: {worst}");
    }
}

#[test]
fn text_init_reproduces_the_models_activations_for_the_text() {
    let device = device();
    let model = model(&device);
    let text = vec![11u32, 250, 42, 7];
    let rest = vec![vec![300u32, 12, 5]];
    let activations = text_activations(&model, &text).unwrap();
    let layout = Layout::gpt2(&model.config);
    assert_eq!(activations.dims(), [4, layout.width()]);
    let config = PrefixConfig { length: 4, reparam: Reparam::Flat, dropout: 0.0, init: prefix_tune_prefix::Init::Zero, placement: Default::default() };
    let (prefix, _) = config.init(layout, &device).unwrap().fit_to(activations.clone(), 0, 0.0);
    // The prefix stands in for the text: the rest's logits are those of text + rest.
    let full: Vec<u32> = text.iter().chain(&rest[0]).copied().collect();
    let expected = logits(&model, &[full], &[vec![1.0; 7]], None);
    let ours = logits(&model, &rest, &[vec![1.0; 3]], Some(prefix.past(1, false)));
    assert!(max_abs_diff(&ours, &expected[4 * 1000..]) < 1e-4);

    // An MLP fitted to the same activations by MSE gets close to them.
    let ad = device.clone().autodiff();
    let mlp_config = PrefixConfig { length: 4, reparam: Reparam::Mlp { hidden: 32 }, dropout: 0.0, init: prefix_tune_prefix::Init::Random, placement: Default::default() };
    let target = floats(to_f32s(activations), [4, layout.width()], &ad);
    let start = mlp_config.init(layout, &ad).unwrap();
    let start_mse = to_f32s((start.activations() - target.clone()).powf_scalar(2.0).mean().detach())[0];
    let (_, mse) = start.fit_to(target, 300, 1e-2);
    assert!(mse < 0.05 * start_mse, "MSE {mse} from {start_mse}");
}

#[test]
fn bad_prefixes_are_one_line_errors() {
    let device = device();
    let layout = Layout::new(3, 4, 6);
    let adapter = fixtures().join("peft/flat/adapter");
    // An adapter for another model.
    for (other, field) in [
        (Layout { n_layer: 4, ..layout }, "`num_layers`"),
        (Layout { n_head: 2, head_dim: 12, ..layout }, "`num_attention_heads`"),
        (Layout { head_dim: 8, ..layout }, "`token_dim`"),
    ] {
        let message = load_prefix(&adapter, Some(other), &device).err().unwrap().to_string();
        assert!(message.contains(field) && message.contains("adapter_config.json"), "{message}");
        assert!(!message.contains('\n'));
    }
    // Wrong tensor name, wrong shape, P = 0.
    let dir = scratch("bad-peft");
    std::fs::copy(adapter.join("adapter_config.json"), dir.join("adapter_config.json")).unwrap();
    prefix_tune_model::weights::save_f32(&dir.join("adapter_model.safetensors"), &[("embeddings".into(), vec![5, 144], vec![0.0; 720])]).unwrap();
    let message = load_prefix(&dir, Some(layout), &device).err().unwrap().to_string();
    assert!(message.contains("prompt_embeddings") && message.contains("adapter_model.safetensors"), "{message}");
    prefix_tune_model::weights::save_f32(&dir.join("adapter_model.safetensors"), &[("prompt_embeddings".into(), vec![5, 140], vec![0.0; 700])]).unwrap();
    let message = load_prefix(&dir, Some(layout), &device).err().unwrap().to_string();
    assert!(message.contains("prompt_embeddings") && message.contains("[5, 140]"), "{message}");
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(adapter.join("adapter_config.json")).unwrap()).unwrap();
    config["num_virtual_tokens"] = serde_json::json!(0);
    std::fs::write(dir.join("adapter_config.json"), config.to_string()).unwrap();
    let message = load_prefix(&dir, Some(layout), &device).err().unwrap().to_string();
    assert!(message.contains("num_virtual_tokens"), "{message}");
    assert!(PrefixConfig::new(0).init(layout, &device).is_err());
    // An MLP without a hidden unit: an error naming the option, not a panic in the random init.
    let no_hidden = PrefixConfig { reparam: Reparam::Mlp { hidden: 0 }, ..PrefixConfig::new(5) };
    let message = no_hidden.init(layout, &device).err().unwrap().to_string();
    assert!(message.contains("mlp_hidden"), "{message}");
    // A native file without a shape field: the field is named, whether or not a model checks it.
    let native = scratch("native-no-head");
    save_export(&peft_prefix("flat", &device), None, "gpt2", &native).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(native.join("prefix_config.json")).unwrap()).unwrap();
    config.as_object_mut().unwrap().remove("n_head");
    std::fs::write(native.join("prefix_config.json"), config.to_string()).unwrap();
    for expected in [None, Some(layout)] {
        let message = load_prefix(&native, expected, &device).err().unwrap().to_string();
        assert!(message.contains("prefix_config.json") && message.contains("`n_head`") && !message.contains('\n'), "{message}");
    }
    // Not a prefix at all.
    let message = load_prefix(&fixtures().join("gpt2-a"), Some(layout), &device).err().unwrap().to_string();
    assert!(message.contains("not a prefix"), "{message}");

    // P + prompt longer than the model's positions.
    let model = model(&device);
    let prefix = peft_prefix("flat", &device);
    let prompt = vec![vec![3u32; model.config.n_positions - 2]];
    let err = model.forward_tokens(&prompt, &[vec![1.0; prompt[0].len()]], Some(prefix.past(1, false)), Dropout::default()).err().unwrap();
    assert!(err.to_string().contains("n_positions"), "{err}");
}

#[test]
fn embedding_only_prefix_acts_as_virtual_tokens() {
    // Virtual embeddings equal to real tokens' embeddings make the frozen model compute exactly
    // those tokens' keys and values: the rest then sees what it sees after the real tokens.
    let device = device();
    let model = model(&device);
    let virtual_tokens = [17u32, 401, 9];
    let rest = vec![vec![250u32, 3, 77, 12]];
    let wte = to_f32s(model.wte.val());
    let d = model.config.n_embd;
    let rows: Vec<f32> = virtual_tokens.iter().flat_map(|&t| wte[t as usize * d..(t as usize + 1) * d].to_vec()).collect();
    let mut prefix = Prefix::from_activations(floats(rows, [3, d], &device), Layout::gpt2(&model.config));
    prefix.placement = Placement::EmbeddingOnly;
    let past = prefix.past_through(&model, 1, false, Dropout::default());
    let ours = logits(&model, &rest, &[vec![1.0; 4]], Some(past));
    let full: Vec<u32> = virtual_tokens.iter().chain(&rest[0]).copied().collect();
    let expected = logits(&model, &[full], &[vec![1.0; 7]], None);
    assert!(max_abs_diff(&ours, &expected[3 * 1000..]) < 1e-4);

    // It trains, saves and loads like any prefix, with its own width (D, not 2·L·D).
    let dir = scratch("embedding-only");
    save_export(&prefix, None, "gpt2", &dir).unwrap();
    let loaded = load_prefix(&dir, Some(prefix.layout), &device).unwrap().prefix;
    assert_eq!(loaded.placement, Placement::EmbeddingOnly);
    assert_eq!(loaded.activations().dims(), [3, d]);
}

#[test]
fn an_infix_sits_between_source_and_target() {
    // Build infix activations from real tokens m placed after x: then [x; INFIX; sep y] must
    // give the logits of the real sequence [x; m; sep y] on the target side — positions after
    // the infix shift by its length, and x never sees it.
    let device = device();
    let model = model(&device);
    let layout = Layout::gpt2(&model.config);
    let (x, m, sep, y) = (vec![5u32, 60, 700], vec![81u32, 9], 514u32, vec![33u32, 2]);
    let xm: Vec<u32> = x.iter().chain(&m).copied().collect();
    let (_, past) = model.forward_tokens(&[xm.clone()], &[vec![1.0; 5]], None, Dropout::default()).unwrap();
    let m_layers: Vec<prefix_tune_model::KeyValue> = past
        .layers
        .iter()
        .map(|kv| prefix_tune_model::KeyValue { keys: kv.keys.clone().narrow(2, 3, 2), values: kv.values.clone().narrow(2, 3, 2) })
        .collect();
    let mut infix = Prefix::from_activations(layout.from_layers(&m_layers), layout);
    infix.placement = Placement::Infix;

    let row: Vec<u32> = x.iter().copied().chain([sep]).chain(y.iter().copied()).collect();
    let (hidden, splits) = infix_forward(&model, &infix, &[row.clone()], &[vec![1.0; row.len()]], sep, false, Dropout::default()).unwrap();
    assert_eq!(splits, vec![3]);
    let ours = to_f32s(model.logits(hidden));
    let real: Vec<u32> = xm.iter().copied().chain([sep]).chain(y.iter().copied()).collect();
    let expected = logits(&model, &[real], &[vec![1.0; 8]], None);
    let diff = max_abs_diff(&ours, &expected[5 * 1000..]);
    assert!(diff < 1e-4, "target-side logits differ by {diff}");

    // Decoding with the infix continues [x; sep] as greedy decoding continues [x; m; sep].
    let mut config = GenerateConfig::new(514);
    config.max_new_tokens = 4;
    let prompt: Vec<u32> = x.iter().copied().chain([sep]).collect();
    let with_infix = prefix_tune_prefix::generate_prefixed(&model, &[prompt], &[&infix], &config).unwrap();
    let real_prompt: Vec<u32> = xm.iter().copied().chain([sep]).collect();
    let reference = generate_gpt2(&model, &[real_prompt], None, &config).unwrap();
    assert_eq!(with_infix[0].ids, reference[0].ids);
}
