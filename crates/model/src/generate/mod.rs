//! Decoding with Hugging Face `generate` semantics: greedy, beam search and sampling, batched
//! over prompts of different lengths (left-padded, as HF requires for decoder-only models).
//!
//! The search's bookkeeping runs on the host; each step's choice of tokens ([`pick`]) runs on
//! the device on a GPU, so only ids and a few scores come back, not the logits. The model side
//! is the [`Decoder`] trait, so GPT-2 and an encoder-decoder share one implementation.

mod beam;
mod draw;
pub mod pick;

use rand::{rngs::StdRng, SeedableRng};

use crate::ModelError;
use burn::tensor::Tensor;
use beam::beam_search;
use pick::{Choice, Edits, RowStep};

/// When beam search may stop, as HF's `early_stopping`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum EarlyStopping {
    /// Stop a prompt as soon as `num_beams` hypotheses are finished (`True`).
    #[value(name = "true")]
    Eager,
    /// Stop when the best running beam, at its current length, cannot beat the worst finished
    /// one (`False`, HF's default).
    #[default]
    #[value(name = "false")]
    Heuristic,
    /// Stop only when no running beam can improve, judged at `max_length` (`"never"`).
    Never,
}

/// Every decoding knob, with HF's defaults.
#[derive(Debug, Clone)]
pub struct GenerateConfig {
    /// New tokens to produce at most (default 20).
    pub max_new_tokens: usize,
    /// EOS is forbidden until this many new tokens exist (default 0).
    pub min_new_tokens: usize,
    /// 1 = greedy or sampling; more = beam search (default 1).
    pub num_beams: usize,
    /// Beam scores are divided by length^length_penalty (default 1.0).
    pub length_penalty: f32,
    pub early_stopping: EarlyStopping,
    /// No n-gram of this size may occur twice (0 = off).
    pub no_repeat_ngram_size: usize,
    /// Token sequences that must never be generated.
    pub bad_words_ids: Vec<Vec<u32>>,
    /// Tokens that end a sequence (GPT-2: its `<|endoftext|>`).
    pub eos_token_ids: Vec<u32>,
    /// Token used to pad prompts and finished rows (GPT-2 has none: HF uses EOS).
    pub pad_token_id: u32,
    /// The first decoder token of an encoder-decoder model (BART: 2, `</s>`).
    pub decoder_start_token_id: Option<u32>,
    /// The token forced right after the decoder start (bart-large-*: 0, `<s>`).
    pub forced_bos_token_id: Option<u32>,
    /// The token forced as the last one when `max_new_tokens` is reached (BART: 2).
    pub forced_eos_token_id: Option<u32>,
    pub sampling: Option<Sampling>,
}

/// Sampling instead of argmax (greedy only; HF order: temperature, top-k, top-p).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    pub temperature: f32,
    /// Only the k most likely tokens (HF: 0 also turns it off).
    pub top_k: Option<usize>,
    /// Only the most likely tokens whose probability mass reaches p, in (0, 1].
    pub top_p: Option<f32>,
    pub seed: u64,
}

impl GenerateConfig {
    pub fn new(eos_token_id: u32) -> Self {
        Self {
            max_new_tokens: 20,
            min_new_tokens: 0,
            num_beams: 1,
            length_penalty: 1.0,
            early_stopping: EarlyStopping::Heuristic,
            no_repeat_ngram_size: 0,
            bad_words_ids: Vec::new(),
            eos_token_ids: vec![eos_token_id],
            pad_token_id: eos_token_id,
            decoder_start_token_id: None,
            forced_bos_token_id: None,
            forced_eos_token_id: None,
            sampling: None,
        }
    }

    /// The config HF's `generate` would use for these kwargs (or a `generation_config.json`).
    /// For an encoder-decoder model `max_length`/`min_length` count the decoder start token, so
    /// they become `max_new_tokens + 1`/`min_new_tokens + 1`; a decoder-only model needs
    /// `max_new_tokens` (its `max_length` would depend on the prompt). Unknown keys are ignored.
    pub fn from_hf(kwargs: &serde_json::Value, encoder_decoder: bool) -> Result<Self, crate::FieldError> {
        let uint = |key: &str| -> Result<Option<usize>, crate::FieldError> {
            match kwargs.get(key) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(v) => v.as_u64().map(|n| Some(n as usize)).ok_or_else(|| crate::FieldError::new(key, format!("must be a non-negative integer, got {v}"))),
            }
        };
        let token = |key: &str| -> Result<Option<u32>, crate::FieldError> { Ok(uint(key)?.map(|n| n as u32)) };
        let eos_ids: Vec<u32> = match kwargs.get("eos_token_id") {
            Some(serde_json::Value::Array(ids)) => ids.iter().filter_map(|v| v.as_u64()).map(|n| n as u32).collect(),
            _ => token("eos_token_id")?.into_iter().collect(),
        };
        let eos = *eos_ids.first().ok_or_else(|| crate::FieldError::new("eos_token_id", "missing"))?;
        let mut config = GenerateConfig::new(eos);
        config.eos_token_ids = eos_ids;
        config.pad_token_id = token("pad_token_id")?.unwrap_or(eos);
        config.decoder_start_token_id = token("decoder_start_token_id")?;
        config.forced_bos_token_id = token("forced_bos_token_id")?;
        config.forced_eos_token_id = token("forced_eos_token_id")?;
        let start = usize::from(encoder_decoder);
        config.max_new_tokens = match (uint("max_new_tokens")?, uint("max_length")?) {
            (Some(n), _) => n,
            (None, Some(max)) if encoder_decoder => max.saturating_sub(start),
            // HF's default max_length is 20, the start token included.
            (None, None) if encoder_decoder => 20 - start,
            _ => config.max_new_tokens,
        };
        config.min_new_tokens = match (uint("min_new_tokens")?, uint("min_length")?) {
            (Some(n), _) => n,
            (None, Some(min)) if encoder_decoder => min.saturating_sub(start),
            _ => 0,
        };
        config.num_beams = uint("num_beams")?.unwrap_or(1);
        config.no_repeat_ngram_size = uint("no_repeat_ngram_size")?.unwrap_or(0);
        if let Some(lp) = kwargs.get("length_penalty").and_then(|v| v.as_f64()) {
            config.length_penalty = lp as f32;
        }
        config.early_stopping = match kwargs.get("early_stopping") {
            Some(serde_json::Value::Bool(true)) => EarlyStopping::Eager,
            Some(serde_json::Value::String(s)) if s == "never" => EarlyStopping::Never,
            _ => EarlyStopping::Heuristic,
        };
        if let Some(serde_json::Value::Array(words)) = kwargs.get("bad_words_ids") {
            config.bad_words_ids = words
                .iter()
                .map(|w| w.as_array().map(|ids| ids.iter().filter_map(|v| v.as_u64()).map(|n| n as u32).collect()).unwrap_or_default())
                .collect();
        }
        Ok(config)
    }

    /// HF's logits processors this config asks for, in HF's order (each forbids or forces
    /// tokens; forcing ones come last so that they win).
    pub fn processors(&self) -> Vec<LogitsProcessor> {
        let mut list = Vec::new();
        if self.no_repeat_ngram_size > 0 {
            list.push(LogitsProcessor::NoRepeatNgram(self.no_repeat_ngram_size));
        }
        // HF drops a bad word that is exactly an EOS token.
        let bad: Vec<Vec<u32>> = self.bad_words_ids.iter().filter(|w| !(w.len() == 1 && self.eos_token_ids.contains(&w[0]))).cloned().collect();
        if !bad.is_empty() {
            list.push(LogitsProcessor::BadWords(bad));
        }
        if self.min_new_tokens > 0 {
            list.push(LogitsProcessor::MinNewTokens { min: self.min_new_tokens, eos: self.eos_token_ids.clone() });
        }
        if let Some(bos) = self.forced_bos_token_id {
            list.push(LogitsProcessor::ForcedBos(bos));
        }
        if let Some(eos) = self.forced_eos_token_id {
            list.push(LogitsProcessor::ForcedEos { last: self.max_new_tokens, eos });
        }
        list
    }

    fn validate(&self) -> Result<(), ModelError> {
        if self.num_beams == 0 {
            return Err(ModelError::Input("num_beams must be at least 1".into()));
        }
        if self.max_new_tokens == 0 {
            return Err(ModelError::Input("max_new_tokens must be at least 1".into()));
        }
        if !self.length_penalty.is_finite() {
            return Err(ModelError::Input(format!("length_penalty must be a finite number, got {}", self.length_penalty)));
        }
        if self.sampling.is_some() && self.num_beams > 1 {
            return Err(ModelError::Input("sampling with beam search is not supported: use --num-beams 1 with --do-sample".into()));
        }
        if let Some(sampling) = self.sampling {
            if sampling.temperature.is_nan() || sampling.temperature <= 0.0 {
                return Err(ModelError::Input(format!("temperature must be positive, got {}", sampling.temperature)));
            }
            if let Some(top_p) = sampling.top_p.filter(|p| !(*p > 0.0 && *p <= 1.0)) {
                return Err(ModelError::Input(format!("top_p must be in (0, 1], got {top_p}")));
            }
        }
        Ok(())
    }
}

/// One prompt's output: the new tokens (prompt excluded; EOS kept when generated) and, for
/// beam search, HF's `sequences_scores` (the length-normalised log-probability).
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    pub ids: Vec<u32>,
    pub score: Option<f32>,
}

/// The model side of decoding: feed tokens, get the last position's logits.
pub trait Decoder {
    /// Runs `ids` (`[rows][T]`, left-padded, `mask` 1 for real tokens) after whatever the
    /// decoder has seen so far; returns each row's logits at the last position, `[rows, V]`,
    /// on the model's device.
    fn step(&mut self, ids: &[Vec<u32>], mask: &[Vec<f32>]) -> Result<Tensor<2>, ModelError>;

    /// Keeps rows `rows` of the state in that order (beam reordering; rows may repeat).
    fn reorder(&mut self, rows: &[usize]) -> Result<(), ModelError>;
}

/// Generates for every prompt. `decoder` holds one row per prompt (any prefix, an encoder's
/// output); for beam search its rows are expanded here to one per beam, each prompt's beams
/// adjacent.
pub fn generate(decoder: &mut dyn Decoder, prompts: &[Vec<u32>], config: &GenerateConfig) -> Result<Vec<Generated>, ModelError> {
    config.validate()?;
    if prompts.is_empty() {
        return Ok(Vec::new());
    }
    if let Some(index) = prompts.iter().position(Vec::is_empty) {
        return Err(ModelError::Input(format!("prompt {index} is empty: give at least one token")));
    }
    if config.num_beams > 1 {
        decoder.reorder(&crate::past::repeat_rows(prompts.len(), config.num_beams))?;
        beam_search(decoder, prompts, config)
    } else {
        greedy_or_sample(decoder, prompts, config)
    }
}

/// Left-pads prompts to one length, each repeated `copies` times.
fn left_pad(prompts: &[Vec<u32>], copies: usize, pad: u32) -> (Vec<Vec<u32>>, Vec<Vec<f32>>) {
    let width = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let mut ids = Vec::new();
    let mut mask = Vec::new();
    for prompt in prompts {
        let padding = width - prompt.len();
        let row: Vec<u32> = std::iter::repeat_n(pad, padding).chain(prompt.iter().copied()).collect();
        let row_mask: Vec<f32> = std::iter::repeat_n(0.0, padding).chain(std::iter::repeat_n(1.0, prompt.len())).collect();
        for _ in 0..copies {
            ids.push(row.clone());
            mask.push(row_mask.clone());
        }
    }
    (ids, mask)
}

fn greedy_or_sample(decoder: &mut dyn Decoder, prompts: &[Vec<u32>], config: &GenerateConfig) -> Result<Vec<Generated>, ModelError> {
    let (mut sequences, mask) = left_pad(prompts, 1, config.pad_token_id);
    let prompt_len = sequences[0].len();
    let mut rng = config.sampling.map(|s| StdRng::seed_from_u64(s.seed));
    let mut finished = vec![false; prompts.len()];
    let processors = config.processors();
    let mut logits = decoder.step(&sequences, &mask)?;
    for step in 0..config.max_new_tokens {
        // A finished row is neither processed nor sampled: it draws nothing from the
        // generator, so the other rows' draws do not depend on when it finished.
        let rows: Vec<RowStep> = sequences
            .iter()
            .zip(&finished)
            .map(|(row, &done)| match done {
                true => RowStep { edits: Edits::default(), choice: Choice::Argmax, logprobs: None },
                false => RowStep { edits: edits_for(row, prompt_len, &processors), choice: Choice::next(config.sampling.zip(rng.as_mut())), logprobs: None },
            })
            .collect();
        let next = pick::pick(logits, &rows).into_iter().zip(&finished).map(|(picked, &done)| if done { Ok(config.pad_token_id) } else { picked.map(|p| p.token) });
        let next: Vec<u32> = next.collect::<Result<_, _>>()?;
        for (row, &token) in next.iter().enumerate() {
            sequences[row].push(token);
            if config.eos_token_ids.contains(&token) {
                finished[row] = true;
            }
        }
        if finished.iter().all(|&f| f) || step + 1 == config.max_new_tokens {
            break;
        }
        let step_ids: Vec<Vec<u32>> = next.iter().map(|&t| vec![t]).collect();
        let ones = vec![vec![1.0]; step_ids.len()];
        logits = decoder.step(&step_ids, &ones)?;
    }
    Ok(sequences
        .into_iter()
        .map(|row| Generated { ids: trim_after_eos(&row[prompt_len..], &config.eos_token_ids), score: None })
        .collect())
}

/// New tokens up to and including the first EOS.
fn trim_after_eos(ids: &[u32], eos: &[u32]) -> Vec<u32> {
    match ids.iter().position(|t| eos.contains(t)) {
        Some(end) => ids[..=end].to_vec(),
        None => ids.to_vec(),
    }
}

/// One of HF's logits processors: it changes one row's scores given the row so far.
#[derive(Debug, Clone, PartialEq)]
pub enum LogitsProcessor {
    /// No n-gram of this size may occur twice.
    NoRepeatNgram(usize),
    /// These token sequences must never be completed.
    BadWords(Vec<Vec<u32>>),
    /// EOS is forbidden until `min` new tokens exist.
    MinNewTokens { min: usize, eos: Vec<u32> },
    /// The first token after a one-token decoder prompt is this one (HF: at `cur_len == 1`).
    ForcedBos(u32),
    /// The `last`-th new token is this one (HF: at `cur_len == max_length - 1`).
    ForcedEos { last: usize, eos: u32 },
}

impl LogitsProcessor {
    /// What this processor does to the scores of a row: `sequence` is the whole row so far, left
    /// padding included, as in HF; `generated` how many of its tokens are new.
    pub fn edit(&self, edits: &mut Edits, sequence: &[u32], generated: usize) {
        match self {
            LogitsProcessor::NoRepeatNgram(n) => {
                let n = *n;
                if sequence.len() >= n {
                    let suffix = &sequence[sequence.len() + 1 - n..];
                    for window in sequence.windows(n) {
                        if &window[..n - 1] == suffix {
                            edits.ban(window[n - 1]);
                        }
                    }
                }
            }
            LogitsProcessor::BadWords(words) => {
                for word in words {
                    if let Some((&last, head)) = word.split_last() {
                        if sequence.ends_with(head) {
                            edits.ban(last);
                        }
                    }
                }
            }
            LogitsProcessor::MinNewTokens { min, eos } => {
                if generated < *min {
                    for &token in eos {
                        edits.ban(token);
                    }
                }
            }
            LogitsProcessor::ForcedBos(bos) => {
                if sequence.len() == 1 {
                    edits.force(*bos);
                }
            }
            LogitsProcessor::ForcedEos { last, eos } => {
                if generated + 1 == *last {
                    edits.force(*eos);
                }
            }
        }
    }

}

/// What every processor does to one row (`sequence`, of which `prompt_len` tokens are prompt):
/// `generate`'s loop and the server's continuous batch both ask it.
pub fn edits_for(sequence: &[u32], prompt_len: usize, processors: &[LogitsProcessor]) -> Edits {
    let mut edits = Edits::default();
    for processor in processors {
        processor.edit(&mut edits, sequence, sequence.len() - prompt_len);
    }
    edits
}

/// Applies every processor of `config` to one row's scores.
fn process(scores: &mut [f32], sequence: &[u32], prompt_len: usize, processors: &[LogitsProcessor]) {
    edits_for(sequence, prompt_len, processors).apply(scores);
}

fn log_softmax(scores: &mut [f32]) {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = scores.iter().map(|&s| (s - max).exp()).sum();
    let log_sum = max + sum.ln();
    for s in scores.iter_mut() {
        *s -= log_sum;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same logits every step: row 0 can only say EOS (7), row 1 any of 0..7 alike.
    struct Fixed;

    fn row_logits(row: usize) -> Vec<f32> {
        (0..8).map(|token| match (row, token) {
            (0, 7) => 50.0,
            (0, _) | (_, 7) => -50.0,
            _ => 0.0,
        }).collect()
    }

    impl Decoder for Fixed {
        fn step(&mut self, ids: &[Vec<u32>], _mask: &[Vec<f32>]) -> Result<Tensor<2>, ModelError> {
            let values: Vec<f32> = (0..ids.len()).flat_map(row_logits).collect();
            Ok(crate::tensors::floats(values, [ids.len(), 8], &crate::testing::device()))
        }

        fn reorder(&mut self, _rows: &[usize]) -> Result<(), ModelError> {
            Ok(())
        }
    }

    /// A row that has finished draws nothing from the seeded generator: after row 0 stops at
    /// its first token, row 1 takes every later draw, as sampling it by hand gives.
    #[test]
    fn a_finished_row_draws_nothing_from_the_sampler() {
        let sampling = Sampling { temperature: 1.0, top_k: None, top_p: None, seed: 11 };
        let mut config = GenerateConfig::new(7);
        config.max_new_tokens = 6;
        config.sampling = Some(sampling);
        let out = generate(&mut Fixed, &[vec![1], vec![2]], &config).unwrap();
        assert_eq!(out[0].ids, vec![7]);
        let mut rng = StdRng::seed_from_u64(11);
        let mut by_hand = |row: usize| pick::choose_row(&row_logits(row), Choice::next(Some((sampling, &mut rng)))).unwrap();
        by_hand(0);
        let by_hand: Vec<u32> = (0..6).map(|_| by_hand(1)).collect();
        assert_eq!(out[1].ids, by_hand);
    }
}
