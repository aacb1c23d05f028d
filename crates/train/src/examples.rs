//! Training examples: token ids and labels, read from JSONL or built by the task loaders, and
//! batched with right padding.

use std::path::Path;

use rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::{loss::IGNORE, TrainError};

/// One sequence: `labels` aligned with `input_ids` (HF convention), -100 where no loss is taken.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Example {
    pub input_ids: Vec<u32>,
    pub labels: Vec<i64>,
}

/// Reads `{"input_ids": [...], "labels": [...]}` per line; `labels` may be omitted (then every
/// token is a target).
pub fn read_jsonl(path: &Path) -> Result<Vec<Example>, TrainError> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::Data(format!("{}: {e}", path.display())))?;
    let mut examples = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line_no = number + 1;
        if line.trim().is_empty() {
            continue;
        }
        let at = |reason: String| TrainError::Data(format!("{} line {line_no}: {reason}", path.display()));
        #[derive(Deserialize)]
        struct Raw {
            input_ids: Vec<u32>,
            labels: Option<Vec<i64>>,
        }
        let raw: Raw = serde_json::from_str(line).map_err(|e| at(format!("not a JSON example with input_ids ({e})")))?;
        if raw.input_ids.len() < 2 {
            return Err(at("input_ids needs at least 2 tokens".into()));
        }
        let labels = raw.labels.unwrap_or_else(|| raw.input_ids.iter().map(|&i| i as i64).collect());
        if labels.len() != raw.input_ids.len() {
            return Err(at(format!("labels has {} entries but input_ids has {}", labels.len(), raw.input_ids.len())));
        }
        examples.push(Example { input_ids: raw.input_ids, labels });
    }
    if examples.is_empty() {
        return Err(TrainError::Data(format!("{}: no examples", path.display())));
    }
    Ok(examples)
}

/// A right-padded batch.
#[derive(Debug, Clone)]
pub struct Batch {
    pub ids: Vec<Vec<u32>>,
    pub mask: Vec<Vec<f32>>,
    pub labels: Vec<Vec<i64>>,
}

impl Batch {
    pub fn new(examples: &[&Example], pad: u32) -> Self {
        let width = examples.iter().map(|e| e.input_ids.len()).max().unwrap_or(0);
        let mut batch = Batch { ids: Vec::new(), mask: Vec::new(), labels: Vec::new() };
        for example in examples {
            let padding = width - example.input_ids.len();
            batch.ids.push(example.input_ids.iter().copied().chain(std::iter::repeat_n(pad, padding)).collect());
            batch.mask.push(std::iter::repeat_n(1.0, example.input_ids.len()).chain(std::iter::repeat_n(0.0, padding)).collect());
            batch.labels.push(example.labels.iter().copied().chain(std::iter::repeat_n(IGNORE, padding)).collect());
        }
        batch
    }

    pub fn tokens(&self) -> usize {
        self.mask.iter().flatten().filter(|&&m| m > 0.5).count()
    }
}

/// The order of examples in `epoch`: a seeded shuffle, the same on every run and on resume.
pub fn epoch_order(len: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    order.shuffle(&mut StdRng::seed_from_u64(seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64)));
    order
}

/// The paper's low-data setting: `n` examples drawn with `seed`, then 30% of them held out as
/// the dev split. Returns (train, dev).
pub fn low_data_split(examples: &[Example], n: usize, seed: u64) -> (Vec<Example>, Vec<Example>) {
    let mut order: Vec<usize> = (0..examples.len()).collect();
    order.shuffle(&mut StdRng::seed_from_u64(seed));
    let chosen: Vec<Example> = order.into_iter().take(n).map(|i| examples[i].clone()).collect();
    let dev_len = (chosen.len() as f64 * 0.3).round() as usize;
    let (dev, train) = chosen.split_at(dev_len);
    (train.to_vec(), dev.to_vec())
}
