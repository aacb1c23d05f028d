//! BART against Hugging Face transformers 5.23.0 (tests/fixtures/bart-a, from
//! scripts/make_bart_fixtures.py): logits, encoder states, KV-cache decoding, generate.

use prefix_tune_model::bart::{generate_bart, load_bart, BartPrefix};
use prefix_tune_model::generate::GenerateConfig;
use prefix_tune_model::nn::Dropout;
use prefix_tune_model::tensors::to_f32s;
use prefix_tune_model::testing::bart::{bart_a, bart_logits, batch, check_bart_generation, token_mean_nll, unpadded_inputs};
use prefix_tune_model::testing::{device, fixtures, max_abs_diff, read_f32, scratch};

#[test]
fn bart_logits_encoder_states_and_loss_match_hf() {
    let (model, reference, _) = bart_a();
    let batch = batch(&reference);
    let ours = bart_logits(&model, &batch, &BartPrefix::default(), 0);
    let (_, theirs) = read_f32(&reference, "logits");
    let worst = max_abs_diff(&ours, &theirs);
    println!("bart-a: max |Δlogit| = {worst:e}");
    assert!(worst < 1e-4, "logits differ from HF by {worst}");

    let (hidden, _) = model.encoder_hidden(&batch.input_ids, &batch.attention_mask, None, Dropout::default()).unwrap();
    let (_, expected) = read_f32(&reference, "encoder_hidden");
    assert!(max_abs_diff(&to_f32s(hidden), &expected) < 1e-4);

    let (_, loss) = read_f32(&reference, "loss");
    let ours = token_mean_nll(&ours, &batch.labels, model.config.vocab_size);
    assert!((ours - loss[0] as f64).abs() < 1e-5, "loss {ours} vs HF {}", loss[0]);
}

/// `--dtype bf16` on BART: every projection and the head (with `final_logits_bias`, 3.0 at
/// eos here) in bf16, within bf16's error of HF's f32 logits.
#[test]
fn bart_in_bf16_stays_within_bf16_error_of_hf() {
    if let Some(why) = prefix_tune_model::bf16::unavailable(&device(), prefix_tune_model::bf16::Dtype::Bf16) {
        eprintln!("skipped: {why}");
        return;
    }
    let (mut model, reference, _) = bart_a();
    model.use_half(prefix_tune_model::bf16::Dtype::Bf16).unwrap();
    let batch = batch(&reference);
    let ours = bart_logits(&model, &batch, &BartPrefix::default(), 0);
    let (_, theirs) = read_f32(&reference, "logits");
    let scale = theirs.iter().fold(0.0f32, |a, b| a.max(b.abs()));
    let worst = max_abs_diff(&ours, &theirs);
    println!("bart-a bf16: max |Δlogit| = {worst:e} of {scale}");
    assert!(worst > 1e-4, "the bf16 model computed in f32");
    // 1.3% of the largest logit here: bf16 keeps 8 bits, and seven layers of random weights
    // compound it. A head without the bias would be 3.0 off at eos.
    assert!(worst < 3e-2 * scale, "bf16 logits differ from HF by {worst} (largest {scale})");
}

#[test]
fn bart_cached_decoding_equals_teacher_forcing() {
    let (model, reference, _) = bart_a();
    let batch = batch(&reference);
    let full = bart_logits(&model, &batch, &BartPrefix::default(), 0);
    let cross = model.encode_tokens(&batch.input_ids, &batch.attention_mask, &BartPrefix::default(), Dropout::default()).unwrap();
    let mut state = model.start_decoding(cross, None).unwrap();
    let vocab = model.config.vocab_size;
    let steps = batch.decoder_ids[0].len();
    for t in 0..steps {
        let column: Vec<Vec<u32>> = batch.decoder_ids.iter().map(|row| vec![row[t]]).collect();
        let (hidden, next) = model.decode_tokens(&column, state, Dropout::default()).unwrap();
        state = next;
        let step = to_f32s(model.logits(hidden));
        for (b, row) in step.chunks(vocab).enumerate() {
            let at = (b * steps + t) * vocab;
            assert!(max_abs_diff(row, &full[at..at + vocab]) < 1e-4, "row {b} step {t}");
        }
    }
}

#[test]
fn bart_greedy_and_beam_search_match_hf_generate() {
    let (model, reference, json) = bart_a();
    let inputs = unpadded_inputs(&batch(&reference));
    for name in ["greedy", "beam4"] {
        check_bart_generation(&model, &json, name, &BartPrefix::default(), 0, &inputs);
    }
}

#[test]
fn bart_config_errors_name_the_file_and_field() {
    let dir = scratch("bart-config");
    for file in ["model.safetensors", "generation_config.json"] {
        std::fs::copy(fixtures().join("bart-a").join(file), dir.join(file)).unwrap();
    }
    let original = std::fs::read_to_string(fixtures().join("bart-a/config.json")).unwrap();
    let cases = [
        (original.replace("\"model_type\": \"bart\"", "\"model_type\": \"gpt2\""), "model_type"),
        (original.replace("\"decoder_layers\": 4", "\"decoder_layers\": 3"), "decoder_layers"),
        (original.replace("\"decoder_attention_heads\": 3", "\"decoder_attention_heads\": 5"), "decoder_attention_heads"),
        (original.replace("\"d_model\": 24", "\"d_model\": \"24\""), "d_model"),
        (original.replace("\"encoder_ffn_dim\": 40", "\"encoder_ffn_dim\": 41"), "fc1.weight"),
        (original.replace("\"dropout\": 0.0", "\"dropout\": 1.0"), "field `dropout`"),
        (original.replace("\"attention_dropout\": 0.0", "\"attention_dropout\": 2.0"), "attention_dropout"),
    ];
    for (text, named) in cases {
        std::fs::write(dir.join("config.json"), text).unwrap();
        let error = load_bart(&dir, &device()).unwrap_err().to_string();
        assert!(error.contains(named) && !error.contains('\n'), "expected one line naming `{named}`, got: {error}");
    }
}

#[test]
fn bart_inputs_beyond_the_positions_are_refused() {
    let (model, _, _) = bart_a();
    let long = vec![vec![5u32; 65]];
    let error = model.encoder_hidden(&long, &[vec![1.0; 65]], None, Dropout::default()).unwrap_err().to_string();
    assert!(error.contains("max_position_embeddings is 64"), "{error}");
    let mut config = GenerateConfig::new(2);
    config.decoder_start_token_id = Some(2);
    config.max_new_tokens = 64;
    let error = generate_bart(&model, &[vec![5, 6]], &BartPrefix::default(), 0, &config).unwrap_err().to_string();
    assert!(error.contains("max_position_embeddings"), "{error}");
}

#[test]
fn bart_sampling_is_seeded_and_top_k_one_is_greedy() {
    let (model, reference, json) = bart_a();
    let inputs = unpadded_inputs(&batch(&reference));
    let mut config = GenerateConfig::from_hf(&json["generate"]["greedy"]["kwargs"], true).unwrap();
    let greedy = generate_bart(&model, &inputs, &BartPrefix::default(), 0, &config).unwrap();
    config.sampling = Some(prefix_tune_model::generate::Sampling { temperature: 0.7, top_k: Some(1), top_p: None, seed: 3 });
    assert_eq!(generate_bart(&model, &inputs, &BartPrefix::default(), 0, &config).unwrap(), greedy, "top_k = 1 is greedy");
    config.sampling = Some(prefix_tune_model::generate::Sampling { temperature: 1.5, top_k: None, top_p: Some(0.95), seed: 11 });
    let first = generate_bart(&model, &inputs, &BartPrefix::default(), 0, &config).unwrap();
    assert_eq!(generate_bart(&model, &inputs, &BartPrefix::default(), 0, &config).unwrap(), first, "same seed, same samples");
    assert_ne!(first, greedy, "sampling at temperature 1.5 departs from greedy");
    for output in &first {
        assert_eq!(output.ids[0], 0, "forced BOS holds when sampling");
    }
}
