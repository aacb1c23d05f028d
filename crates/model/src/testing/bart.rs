//! The bart-a fixture (scripts/make_bart_fixtures.py) and what tests do with it.

use crate::bart::{generate_bart, load_bart, Bart, BartPrefix};
use crate::generate::GenerateConfig;
use crate::nn::Dropout;
use crate::tensors::to_f32s;
use crate::weights::{to_i64, WeightFiles};

use super::{device, fixtures};

/// The fixture's teacher-forced batch.
pub struct Batch {
    pub input_ids: Vec<Vec<u32>>,
    pub attention_mask: Vec<Vec<f32>>,
    pub decoder_ids: Vec<Vec<u32>>,
    pub labels: Vec<Vec<i64>>,
}

fn int_rows(files: &WeightFiles, name: &str) -> Vec<Vec<i64>> {
    let (shape, values) = files.view(name, |_, v| (v.shape().to_vec(), to_i64(v).unwrap())).unwrap();
    values.chunks(shape[1]).map(<[i64]>::to_vec).collect()
}

/// The model, `reference.safetensors` and `reference.json` of bart-a.
pub fn bart_a() -> (Bart, WeightFiles, serde_json::Value) {
    let dir = fixtures().join("bart-a");
    let model = load_bart(&dir, &device()).unwrap();
    let reference = WeightFiles::open(vec![dir.join("reference.safetensors")]).unwrap();
    let json = serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap()).unwrap();
    (model, reference, json)
}

pub fn batch(reference: &WeightFiles) -> Batch {
    let ids = |name: &str| int_rows(reference, name).into_iter().map(|r| r.into_iter().map(|i| i as u32).collect()).collect();
    Batch {
        input_ids: ids("enc.input_ids"),
        attention_mask: int_rows(reference, "enc.attention_mask").into_iter().map(|r| r.into_iter().map(|m| m as f32).collect()).collect(),
        decoder_ids: ids("dec.input_ids"),
        labels: int_rows(reference, "labels"),
    }
}

/// Teacher-forced logits `[B·T·V]` of the fixture batch with `prefix`.
pub fn bart_logits(model: &Bart, batch: &Batch, prefix: &BartPrefix, decoder_offset: usize) -> Vec<f32> {
    let hidden = model.forward_tokens(&batch.input_ids, &batch.attention_mask, &batch.decoder_ids, prefix, decoder_offset, Dropout::default()).unwrap();
    to_f32s(model.logits(hidden))
}

/// HF's loss: the mean over labelled tokens of −log softmax(logits)[label].
pub fn token_mean_nll(logits: &[f32], labels: &[Vec<i64>], vocab: usize) -> f64 {
    let (mut total, mut count) = (0.0f64, 0usize);
    for (t, &label) in labels.iter().flatten().enumerate() {
        if label < 0 {
            continue;
        }
        let row = &logits[t * vocab..(t + 1) * vocab];
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let log_sum = max + row.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
        total += log_sum - row[label as usize] as f64;
        count += 1;
    }
    total / count as f64
}

/// Replays one recorded `generate` call on bart-a with `prefix`.
pub fn check_bart_generation(model: &Bart, json: &serde_json::Value, name: &str, prefix: &BartPrefix, decoder_offset: usize, inputs: &[Vec<u32>]) {
    let run = &json["generate"][name];
    let config = GenerateConfig::from_hf(&run["kwargs"], true).unwrap();
    let outputs = generate_bart(model, inputs, prefix, decoder_offset, &config).unwrap();
    let expected: Vec<Vec<u32>> = serde_json::from_value(run["new_tokens"].clone()).unwrap();
    for (i, (ours, theirs)) in outputs.iter().zip(&expected).enumerate() {
        assert_eq!(&ours.ids, theirs, "{name} input {i}: tokens differ from HF");
    }
    if let Some(scores) = run.get("sequences_scores") {
        let scores: Vec<f32> = serde_json::from_value(scores.clone()).unwrap();
        for (i, (ours, theirs)) in outputs.iter().zip(scores).enumerate() {
            let ours = ours.score.expect("beam search returns a score");
            assert!((ours - theirs).abs() < 1e-4, "{name} input {i}: score {ours} vs HF {theirs}");
        }
    }
    println!("bart-a {name}: {} inputs identical to HF", outputs.len());
}

/// The fixture's encoder inputs without their padding.
pub fn unpadded_inputs(batch: &Batch) -> Vec<Vec<u32>> {
    batch.input_ids.iter().zip(&batch.attention_mask).map(|(ids, mask)| ids.iter().zip(mask).filter(|(_, &m)| m > 0.5).map(|(&i, _)| i).collect()).collect()
}

