//! Training examples: token ids and labels, read from JSONL or built by the task loaders, and
//! batched with right padding.

use std::path::Path;

use rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};
use serde::Deserialize;

use crate::{loss::IGNORE, TrainError};

pub use prefix_tune_data::Example;

/// Reads `{"input_ids": [...], "labels": [...]}` per line; `labels` may be omitted (then every
/// token is a target).
pub fn read_jsonl(path: &Path) -> Result<Vec<Example>, TrainError> {
    Ok(read_jsonl_lines(path)?.into_iter().map(|(_, example)| example).collect())
}

/// Reads `{"input_ids": [...], "labels": [...]}` lines with their line numbers. Decoder-only
/// (`seq2seq` false): labels align with the ids and default to them. Encoder-decoder: `input_ids`
/// is the encoder input and `labels` the target, of its own length.
pub fn read_jsonl_lines(path: &Path) -> Result<Vec<(usize, Example)>, TrainError> {
    read_lines(path, false)
}

/// [`read_jsonl_lines`] for an encoder-decoder model: `labels` (the target) is required.
pub fn read_seq2seq_jsonl_lines(path: &Path) -> Result<Vec<(usize, Example)>, TrainError> {
    read_lines(path, true)
}

fn read_lines(path: &Path, seq2seq: bool) -> Result<Vec<(usize, Example)>, TrainError> {
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
        let least = if seq2seq { 1 } else { 2 };
        if raw.input_ids.len() < least {
            return Err(at(format!("input_ids needs at least {least} tokens")));
        }
        let labels = match (raw.labels, seq2seq) {
            (Some(labels), _) => labels,
            (None, false) => raw.input_ids.iter().map(|&i| i as i64).collect(),
            (None, true) => return Err(at("labels (the target) is missing".into())),
        };
        if !seq2seq && labels.len() != raw.input_ids.len() {
            return Err(at(format!("labels has {} entries but input_ids has {}", labels.len(), raw.input_ids.len())));
        }
        if let Some(bad) = labels.iter().find(|&&l| l < 0 && l != IGNORE) {
            return Err(at(format!("labels: {bad} is neither a token id nor -100")));
        }
        if seq2seq && labels.iter().all(|&l| l == IGNORE) {
            return Err(at("labels has no target token".into()));
        }
        examples.push((line_no, Example { input_ids: raw.input_ids, labels }));
    }
    if examples.is_empty() {
        return Err(TrainError::Data(format!("{}: no examples", path.display())));
    }
    Ok(examples)
}

/// What an example is checked against before training: the model's vocabulary and how many
/// positions are left once the prefix takes its share.
#[derive(Debug, Clone)]
pub struct Limits {
    pub vocab_size: usize,
    pub max_length: usize,
    /// Why `max_length` is what it is, for the message (e.g. "n_positions 1024 − prefix 10").
    pub why: String,
    /// Cut over-long sources instead of refusing them (`--max-length`).
    pub truncate: bool,
}

/// Checks every example before the first step, so bad data fails at once with the file and
/// line rather than mid-run. `origins[i]` names where example `i` came from ("data.csv line 7").
/// Returns how many sources were cut (with `limits.truncate`).
pub fn check_examples(examples: &mut [Example], origins: &[String], limits: &Limits) -> Result<usize, TrainError> {
    let mut cut = 0;
    let mut too_long: Vec<usize> = Vec::new();
    for (i, example) in examples.iter_mut().enumerate() {
        let origin = origins.get(i).map_or("an example", String::as_str);
        if let Some(&id) = example.input_ids.iter().find(|&&id| id as usize >= limits.vocab_size) {
            return Err(TrainError::Data(format!("{origin}: token id {id} is outside the model's vocabulary of {}", limits.vocab_size)));
        }
        if example.input_ids.len() <= limits.max_length {
            continue;
        }
        if !limits.truncate {
            too_long.push(i);
            continue;
        }
        match example.truncate_source(limits.max_length) {
            Ok(was_cut) => cut += usize::from(was_cut),
            Err(least) => {
                return Err(TrainError::Data(format!(
                    "{origin}: the target alone needs {least} tokens, more than the {} that fit ({})",
                    limits.max_length, limits.why
                )))
            }
        }
    }
    if let Some(&first) = too_long.first() {
        let origin = origins.get(first).map_or("an example", String::as_str);
        let more = match too_long.len() - 1 {
            0 => String::new(),
            n => format!(" (and {n} more examples)"),
        };
        return Err(TrainError::Data(format!(
            "{origin}: {} tokens, more than the {} that fit ({}){more}; --max-length N cuts sources to fit",
            examples[first].input_ids.len(),
            limits.max_length,
            limits.why
        )));
    }
    Ok(cut)
}

/// A right-padded batch.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The input (an encoder-decoder's encoder input), right-padded.
    pub ids: Vec<Vec<u32>>,
    pub mask: Vec<Vec<f32>>,
    /// Decoder-only: aligned with `ids` (the model shifts). Encoder-decoder: the target,
    /// aligned with `decoder_ids`. −100 where nothing is predicted.
    pub labels: Vec<Vec<i64>>,
    /// Encoder-decoder only: the labels shifted right behind the start token (HF's
    /// `shift_tokens_right`), padding for −100.
    pub decoder_ids: Vec<Vec<u32>>,
}

impl Batch {
    pub fn new(examples: &[&Example], pad: u32) -> Self {
        let width = examples.iter().map(|e| e.input_ids.len()).max().unwrap_or(0);
        let mut batch = Batch { ids: Vec::new(), mask: Vec::new(), labels: Vec::new(), decoder_ids: Vec::new() };
        for example in examples {
            let padding = width - example.input_ids.len();
            batch.ids.push(example.input_ids.iter().copied().chain(std::iter::repeat_n(pad, padding)).collect());
            batch.mask.push(std::iter::repeat_n(1.0, example.input_ids.len()).chain(std::iter::repeat_n(0.0, padding)).collect());
            batch.labels.push(example.labels.iter().copied().chain(std::iter::repeat_n(IGNORE, padding)).collect());
        }
        batch
    }

    /// An encoder-decoder batch: `input_ids` is the encoder input, `labels` the target (its own
    /// length); both right-padded.
    pub fn seq2seq(examples: &[&Example], pad: u32, decoder_start: u32) -> Self {
        let width = examples.iter().map(|e| e.input_ids.len()).max().unwrap_or(0);
        let target_width = examples.iter().map(|e| e.labels.len()).max().unwrap_or(0);
        let mut batch = Batch { ids: Vec::new(), mask: Vec::new(), labels: Vec::new(), decoder_ids: Vec::new() };
        for example in examples {
            let padding = width - example.input_ids.len();
            batch.ids.push(example.input_ids.iter().copied().chain(std::iter::repeat_n(pad, padding)).collect());
            batch.mask.push(std::iter::repeat_n(1.0, example.input_ids.len()).chain(std::iter::repeat_n(0.0, padding)).collect());
            let labels: Vec<i64> = example.labels.iter().copied().chain(std::iter::repeat_n(IGNORE, target_width - example.labels.len())).collect();
            let shifted = std::iter::once(decoder_start).chain(labels[..target_width - 1].iter().map(|&l| if l == IGNORE { pad } else { l as u32 }));
            batch.decoder_ids.push(shifted.collect());
            batch.labels.push(labels);
        }
        batch
    }

    pub fn tokens(&self) -> usize {
        self.mask.iter().flatten().filter(|&&m| m > 0.5).count()
    }

    /// Every width rounded up to a multiple of `multiple` with more padding (masked, ignored by
    /// the loss): fewer distinct shapes, for a backend that compiles, autotunes or records
    /// fusion streams per shape (see [`length_bucket`]). `pad` fills the ids;
    /// a width never grows past `most` (the input's) or `most_target` (an encoder-decoder's
    /// target), the positions the model has left.
    pub fn bucketed(mut self, multiple: usize, pad: u32, most: usize, most_target: usize) -> Self {
        let round = |width: usize, most: usize| width.next_multiple_of(multiple.max(1)).min(most).max(width);
        let input = round(self.ids.first().map_or(0, Vec::len), most);
        let target = round(self.labels.first().map_or(0, Vec::len), if self.decoder_ids.is_empty() { most } else { most_target });
        for row in &mut self.ids {
            row.resize(input, pad);
        }
        for row in &mut self.mask {
            row.resize(input, 0.0);
        }
        for row in &mut self.decoder_ids {
            row.resize(target, pad);
        }
        for row in &mut self.labels {
            row.resize(target, IGNORE);
        }
        self
    }
}

/// The environment variable that sets the multiple of [`length_bucket`] (1: none).
pub const LENGTH_BUCKET_VAR: &str = "PREFIX_TUNE_LENGTH_BUCKET";

/// The multiple training batches' lengths are rounded up to: `PREFIX_TUNE_LENGTH_BUCKET`, else 1
/// (none). Not on by default anywhere: on lavapipe, 20 steps of real E2E batches took the same
/// time with and without a multiple of 16 (cold 93–99 s against 95–96 s, warm 20.5 s against
/// 20.9 s): CubeCL's kernels apparently do not depend on the sequence length, and its autotune keys
/// already round lengths to powers of two; the extra padding would cost compute on a real GPU.
/// The knob stays for a GPU to measure.
pub fn length_bucket() -> usize {
    std::env::var(LENGTH_BUCKET_VAR).ok().and_then(|v| v.trim().parse::<usize>().ok()).unwrap_or(1).max(1)
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
