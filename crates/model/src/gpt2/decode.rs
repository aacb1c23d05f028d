//! GPT-2 as a [`Decoder`] for the shared search code: the KV cache lives here, outside the
//! model, so one frozen model serves many caches (beams, rows, prefixes).


use super::{Dropout, Gpt2, Past};
use crate::generate::{generate, Decoder, GenerateConfig, Generated};
use crate::past::select_rows;
use crate::ModelError;
use burn::tensor::Tensor;

pub struct Gpt2Decoder<'a> {
    model: &'a Gpt2,
    /// Prefix and every token fed so far, per row.
    cache: Option<Past>,
}

impl<'a> Gpt2Decoder<'a> {
    pub fn new(model: &'a Gpt2, prefix: Option<Past>) -> Self {
        Self { model, cache: prefix }
    }
}

impl Decoder for Gpt2Decoder<'_> {
    fn step(&mut self, ids: &[Vec<u32>], mask: &[Vec<f32>]) -> Result<Tensor<2>, ModelError> {
        let (hidden, cache) = self.model.forward_tokens(ids, mask, self.cache.take(), Dropout::default())?;
        self.cache = Some(cache);
        // Only the last position feeds the next token: the LM head runs there alone.
        let seq = hidden.dims()[1];
        Ok(self.model.logits(hidden.narrow(1, seq - 1, 1)).squeeze_dim::<2>(1))
    }

    fn reorder(&mut self, rows: &[usize]) -> Result<(), ModelError> {
        if let Some(cache) = self.cache.take() {
            self.cache = Some(select_rows(cache, rows, &self.model.wte.val().device()));
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
    let mut decoder = Gpt2Decoder::new(model, prefix);
    generate(&mut decoder, prompts, config)
}
