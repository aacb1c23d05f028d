//! BART's three prefix sets against a hand-built HF reference (HF's BART modules with prefix
//! keys/values in front in each attention; scripts/make_bart_fixtures.py), and PEFT 0.21.2's
//! seq2seq adapters: logits, generation, files, errors.

use std::path::Path;

use prefix_tune_model::bart::BartPrefix;
use prefix_tune_model::testing::bart::{bart_a, bart_logits, batch, check_bart_generation, unpadded_inputs};
use prefix_tune_model::testing::{device, fixtures, max_abs_diff, read_f32, scratch};
use prefix_tune_model::weights::{save_f32, WeightFiles};
use prefix_tune_prefix::{load_bart_prefix, load_prefix, save_bart_export, save_bart_peft, BartLayout, BlockOrder, PrefixFileConfig, Stack};

/// Writes a hand-made export: the minimal config and the named fixture matrices.
fn hand_written_export(dir: &Path, reference: &WeightFiles, sets: &[&str]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("prefix_config.json"), r#"{"format": "prefix-tune", "kind": "export", "architecture": "bart"}"#).unwrap();
    let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = sets
        .iter()
        .map(|set| {
            let (shape, values) = read_f32(reference, &format!("prefix.{set}"));
            (set.to_string(), shape, values)
        })
        .collect();
    save_f32(&dir.join("prefix.safetensors"), &tensors).unwrap();
}

fn check(name: &str, ours: &[f32], reference: &WeightFiles, tensor: &str) {
    let (_, theirs) = read_f32(reference, tensor);
    let worst = max_abs_diff(ours, &theirs);
    println!("{name}: max |Δlogit| = {worst:e}");
    assert!(worst < 1e-4, "{name}: logits differ from the reference by {worst}");
}

#[test]
fn three_bart_prefixes_give_the_reference_logits_and_generations() {
    let (model, reference, json) = bart_a();
    let batch = batch(&reference);
    let layout = BartLayout::of(&model.config);
    let dir = scratch("bart-three");
    hand_written_export(&dir, &reference, &["encoder", "decoder", "cross"]);
    let sets = load_bart_prefix(&dir, layout, &device()).unwrap().prefix;
    assert_eq!(sets.lengths(), [3, 5, 2], "lengths come from the matrices");
    let logits = bart_logits(&model, &batch, &sets.past(3, false), sets.decoder_offset());
    check("three prefixes", &logits, &reference, "prefix.logits");
    // Without a prefix the logits are far from these: the comparison above can fail.
    let plain = bart_logits(&model, &batch, &BartPrefix::default(), 0);
    assert!(max_abs_diff(&plain, &logits) > 0.1);

    let inputs = unpadded_inputs(&batch);
    let one_row = sets.past(inputs.len(), false);
    for name in ["prefix_greedy", "prefix_beam4"] {
        check_bart_generation(&model, &json, name, &one_row, 0, &inputs);
    }
}

#[test]
fn a_bart_set_left_out_is_off() {
    let (model, reference, _) = bart_a();
    let batch = batch(&reference);
    let dir = scratch("bart-decoder-only");
    hand_written_export(&dir, &reference, &["decoder"]);
    let sets = load_bart_prefix(&dir, BartLayout::of(&model.config), &device()).unwrap().prefix;
    assert_eq!(sets.lengths(), [0, 5, 0]);
    check("decoder prefix only", &bart_logits(&model, &batch, &sets.past(3, false), 0), &reference, "prefix_dec_only.logits");
}

#[test]
fn bart_export_round_trips_with_its_lengths() {
    let (model, reference, _) = bart_a();
    let layout = BartLayout::of(&model.config);
    let hand = scratch("bart-hand");
    hand_written_export(&hand, &reference, &["encoder", "cross"]);
    let sets = load_bart_prefix(&hand, layout, &device()).unwrap().prefix;
    let out = scratch("bart-export");
    save_bart_export(&sets, Some("bart-a"), &out).unwrap();
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("prefix_config.json")).unwrap()).unwrap();
    assert_eq!(config["lengths"], serde_json::json!({"encoder": 3, "cross": 2}));
    assert_eq!(config["architecture"], "bart");
    let files = WeightFiles::open(vec![out.join("prefix.safetensors")]).unwrap();
    for set in ["encoder", "cross"] {
        assert_eq!(read_f32(&files, set), read_f32(&reference, &format!("prefix.{set}")), "{set} written as read");
    }
    assert!(!files.contains("decoder"), "an off set is not written");
    let again = load_bart_prefix(&out, layout, &device()).unwrap();
    assert_eq!(again.prefix.lengths(), [3, 0, 2]);
    assert_eq!(again.base_model.as_deref(), Some("bart-a"));
    // One typed schema for GPT-2's and BART's files: the BART export reads as it, GPT-2's
    // per-prefix shape fields absent.
    let typed: PrefixFileConfig = serde_json::from_value(config).unwrap();
    let lengths: Vec<(String, usize)> = typed.lengths.clone().unwrap().into_iter().collect();
    assert_eq!(lengths, [("cross".to_string(), 2), ("encoder".to_string(), 3)]);
    assert_eq!((typed.kind.as_str(), typed.prefix_length, typed.n_layer), ("export", 0, 0));
}

#[test]
fn peft_bart_adapters_give_peft_logits_and_generations() {
    let (model, reference, json) = bart_a();
    let batch = batch(&reference);
    let adapter = fixtures().join("bart-a/peft/adapter");
    let sets = load_bart_prefix(&adapter, BartLayout::of(&model.config), &device()).unwrap().prefix;
    let decoder = sets.decoder.as_ref().expect("PEFT prefixes the decoder");
    assert_eq!(decoder.layout.blocks, BlockOrder::PeftSeq2Seq);
    assert_eq!((sets.lengths(), sets.decoder_offset()), ([0, 4, 0], 4), "PEFT's prefix shifts decoder positions by P");
    check("PEFT adapter", &bart_logits(&model, &batch, &sets.past(3, false), sets.decoder_offset()), &reference, "peft.logits");
    let inputs = unpadded_inputs(&batch);
    for name in ["peft_greedy", "peft_beam4"] {
        check_bart_generation(&model, &json, name, &sets.past(inputs.len(), false), sets.decoder_offset(), &inputs);
    }
    // Written back, PEFT's tensor is unchanged and reads the same.
    let out = scratch("bart-peft");
    save_bart_peft(&sets, Some("bart-a"), &out).unwrap();
    let written = WeightFiles::open(vec![out.join("adapter_model.safetensors")]).unwrap();
    assert_eq!(read_f32(&written, "prompt_embeddings"), read_f32(&reference, "peft.prompt_embeddings"));
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!((config["task_type"].as_str(), config["num_layers"].as_u64(), config["num_attention_heads"].as_u64()), (Some("SEQ_2_SEQ_LM"), Some(4), Some(3)));
    // PEFT cannot hold the paper's three sets.
    let three = scratch("bart-three-to-peft");
    hand_written_export(&three, &reference, &["encoder", "decoder", "cross"]);
    let paper = load_bart_prefix(&three, BartLayout::of(&model.config), &device()).unwrap().prefix;
    assert!(save_bart_peft(&paper, None, &scratch("bart-refused")).unwrap_err().to_string().contains("only a decoder"));
}

#[test]
fn bad_bart_prefix_files_name_the_file_and_the_field() {
    let (model, reference, _) = bart_a();
    let layout = BartLayout::of(&model.config);
    let error = |dir: &Path| load_bart_prefix(dir, layout, &device()).err().expect("refused").to_string();

    // A matrix of the encoder's width given as the decoder's.
    let dir = scratch("bart-bad-width");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("prefix_config.json"), r#"{"format": "prefix-tune", "kind": "export", "architecture": "bart"}"#).unwrap();
    let (shape, values) = read_f32(&reference, "prefix.encoder");
    save_f32(&dir.join("prefix.safetensors"), &[("decoder".into(), shape.clone(), values.clone())]).unwrap();
    let message = error(&dir);
    assert!(message.contains("prefix.safetensors") && message.contains("`decoder`") && message.contains("192"), "{message}");

    save_f32(&dir.join("prefix.safetensors"), &[("activations".into(), shape.clone(), values.clone())]).unwrap();
    assert!(error(&dir).contains("`activations`: unknown tensor"), "{}", error(&dir));

    save_f32(&dir.join("prefix.safetensors"), &[("encoder".into(), shape, values)]).unwrap();
    std::fs::write(dir.join("prefix_config.json"), r#"{"format": "prefix-tune", "kind": "export", "architecture": "bart", "lengths": {"encoder": 4}}"#).unwrap();
    assert!(error(&dir).contains("lengths.encoder"), "{}", error(&dir));
    std::fs::write(dir.join("prefix_config.json"), r#"{"format": "prefix-tune", "kind": "export", "architecture": "gpt2"}"#).unwrap();
    assert!(error(&dir).contains("`architecture`"), "{}", error(&dir));
    // A BART file given to a GPT-2 model.
    std::fs::write(dir.join("prefix_config.json"), r#"{"format": "prefix-tune", "kind": "export", "architecture": "bart"}"#).unwrap();
    let gpt2 = load_prefix(&dir, None, &device()).err().expect("refused").to_string();
    assert!(gpt2.contains("for a BART model"), "{gpt2}");

    // PEFT's defaults for BART name the encoder's layers and heads.
    let peft = scratch("bart-peft-defaults");
    let adapter = fixtures().join("bart-a/peft/adapter");
    std::fs::copy(adapter.join("adapter_model.safetensors"), peft.join("adapter_model.safetensors")).unwrap();
    let config = std::fs::read_to_string(adapter.join("adapter_config.json")).unwrap().replace("\"num_layers\": 4", "\"num_layers\": 3");
    std::fs::write(peft.join("adapter_config.json"), config).unwrap();
    let message = error(&peft);
    assert!(message.contains("`num_layers`") && message.contains("decoder") && !message.contains('\n'), "{message}");
    assert_eq!(Stack::ALL.map(Stack::name), ["encoder", "decoder", "cross"]);
}
