//! GPT-2 as a [`Decoder`] for the shared search code: the KV cache lives here, outside the
//! model, so one frozen model serves many caches (beams, rows, prefixes).

use super::{Gpt2, Past};
use crate::generate::{generate, Decoder, GenerateConfig, Generated};
use crate::kv::KvCache;
use crate::past::select_rows;
use crate::ModelError;
use burn::tensor::Tensor;

pub struct Gpt2Decoder<'a> {
    model: &'a Gpt2,
    /// The prefix, one row per prompt, until the first step writes it into the cache.
    prefix: Option<Past>,
    /// The prefix and every token fed so far, per row, written in place.
    cache: Option<KvCache>,
    /// Tokens a row may come to hold: the cache's room at the start, so it never grows.
    row_tokens: usize,
}

impl<'a> Gpt2Decoder<'a> {
    pub fn new(model: &'a Gpt2, prefix: Option<Past>) -> Self {
        Self { model, prefix, cache: None, row_tokens: 0 }
    }

    /// Room for `tokens` per row (prefix, prompt and continuation) from the start.
    pub fn with_room(mut self, tokens: usize) -> Self {
        self.row_tokens = tokens;
        self
    }

    /// The cache, made at the first step: the prefix written into its slots.
    fn cache(&mut self, rows: usize, width: usize) -> Result<&mut KvCache, ModelError> {
        if self.cache.is_none() {
            let prefix_len = self.prefix.as_ref().map_or(0, Past::len);
            let room = self.row_tokens.max(prefix_len + width);
            let mut cache = self.model.kv_cache(rows * room, crate::kv::NO_LIMIT);
            cache.push_prefix(self.prefix.take(), rows)?;
            self.cache = Some(cache);
        }
        Ok(self.cache.as_mut().expect("made above"))
    }
}

impl Decoder for Gpt2Decoder<'_> {
    fn step(&mut self, ids: &[Vec<u32>], mask: &[Vec<f32>]) -> Result<Tensor<2>, ModelError> {
        let model = self.model;
        let cache = self.cache(ids.len(), ids.first().map_or(0, Vec::len))?;
        model.next_logits(ids, mask, cache)
    }

    fn reorder(&mut self, rows: &[usize]) -> Result<(), ModelError> {
        match (&mut self.cache, self.prefix.take()) {
            (Some(cache), _) => cache.keep(rows),
            // Before the first step (prompts expanded to their beams): the prefix's rows.
            (None, Some(prefix)) => self.prefix = Some(select_rows(prefix, rows, &self.model.wte.val().device())),
            (None, None) => {}
        }
        Ok(())
    }
}

/// Generates a continuation of every prompt; `prefix` (one row per prompt, or `None`) is what
/// every row attends to before its prompt. HF `generate` semantics (see [`crate::generate`]).
pub fn generate_gpt2(
    model: &Gpt2,
    prompts: &[Vec<u32>],
    prefix: Option<Past>,
    config: &GenerateConfig,
) -> Result<Vec<Generated>, ModelError> {
    // Fail before any work when the longest row cannot fit its continuation.
    let prefix_len = prefix.as_ref().map_or(0, |p| p.mask.iter().map(|row| row.iter().filter(|&&m| m > 0.5).count()).max().unwrap_or(0));
    let longest_prompt = prompts.iter().map(Vec::len).max().unwrap_or(0);
    if prefix_len + longest_prompt + config.max_new_tokens > model.config.n_positions {
        return Err(ModelError::Input(format!(
            "prefix ({prefix_len}) + prompt ({longest_prompt}) + max_new_tokens ({}) tokens exceed the model's n_positions = {}",
            config.max_new_tokens, model.config.n_positions
        )));
    }
    if let Some(rows) = prefix.as_ref().map(Past::rows).filter(|&rows| rows != prompts.len()) {
        return Err(ModelError::Input(format!("{rows} prefix rows for {} prompts: give one prefix per prompt", prompts.len())));
    }
    let mut decoder = Gpt2Decoder::new(model, prefix).with_room(prefix_len + longest_prompt + config.max_new_tokens);
    generate(&mut decoder, prompts, config)
}
