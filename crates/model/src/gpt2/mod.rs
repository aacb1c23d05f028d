//! GPT-2 (Radford et al., 2019) exactly as Hugging Face computes it.

mod config;
mod decode;
mod load;
mod model;
mod save;

pub use config::{Activation, Gpt2Config, END_OF_TEXT};
pub use decode::{generate_gpt2, Gpt2Decoder};
pub use crate::past::{select_rows, Past};
pub use load::{gpt2_from_weights, load_gpt2, random_gpt2};
pub use save::save_gpt2;
pub use model::{Block, Conv1D, Dropout, Gpt2, Gpt2Input, LayerNorm, Mlp, SelfAttention};

use burn::tensor::Tensor;

use crate::attention::{attention_bias, KeyValue};
use crate::kv::KvCache;
use crate::tensors::ints;
use crate::ModelError;

/// Position ids as HF `generate` derives them: the number of real keys before a token (prefix
/// included, so a prefix of P shifts real tokens to start at P), 1 for padding.
pub fn positions_from_mask(full_mask: &[Vec<f32>], new_len: usize) -> Vec<Vec<i64>> {
    full_mask
        .iter()
        .map(|row| {
            let start = row.len() - new_len;
            let mut seen = row[..start].iter().filter(|&&m| m > 0.5).count() as i64;
            row[start..]
                .iter()
                .map(|&m| {
                    if m > 0.5 {
                        seen += 1;
                        seen - 1
                    } else {
                        1
                    }
                })
                .collect()
        })
        .collect()
}

impl Gpt2 {
    /// One forward pass over a padded batch of token ids.
    ///
    /// `mask[b][t]` is 1 for real tokens and 0 for padding (left or right); `past` holds
    /// the prefix and/or cache that precede them. Returns hidden states `[B, T, D]` and the
    /// past for the next step (keys/values and the mask grown by these tokens).
    pub fn forward_tokens(
        &self,
        ids: &[Vec<u32>],
        mask: &[Vec<f32>],
        past: Option<Past>,
        dropout: Dropout,
    ) -> Result<(Tensor<3>, Past), ModelError> {
        let (input, past_layers, full_mask) = self.after_past(ids, mask, past)?;
        let (hidden, layers) = self.forward(input, past_layers, dropout);
        Ok((hidden, Past { layers, mask: full_mask }))
    }

    /// [`Gpt2::forward_tokens`]'s hidden states `[B, T, D]` alone, for a pass no later one
    /// continues (a loss): no next past is kept, so a GPU never concatenates the prefix with the
    /// tokens' keys.
    pub fn hidden_states(&self, ids: &[Vec<u32>], mask: &[Vec<f32>], past: Option<Past>, dropout: Dropout) -> Result<Tensor<3>, ModelError> {
        let (input, past_layers, _) = self.after_past(ids, mask, past)?;
        let mut store = crate::kv::Appended::transient(past_layers, self.h.len());
        Ok(self.forward_stored(input, &mut store, dropout))
    }

    /// The pass's inputs for `ids` after `past`, `past`'s layers, and the mask of every key the
    /// pass sees (each row's past, then its new tokens).
    fn after_past(&self, ids: &[Vec<u32>], mask: &[Vec<f32>], past: Option<Past>) -> Result<(Gpt2Input, Option<Vec<KeyValue>>, Vec<Vec<f32>>), ModelError> {
        let batch = self.check_batch(ids, mask)?;
        let (past_layers, mut full_mask) = match past {
            Some(Past { layers, mask: past_mask }) => (Some(layers), past_mask),
            None => (None, vec![Vec::new(); batch]),
        };
        if full_mask.len() != batch {
            return Err(ModelError::Input(format!("past has {} rows but the batch has {batch}", full_mask.len())));
        }
        for (row, new) in full_mask.iter_mut().zip(mask) {
            row.extend_from_slice(new);
        }
        Ok((self.input(ids, &full_mask)?, past_layers, full_mask))
    }

    /// [`Gpt2::forward_tokens`] after the rows of `cache` (one per batch row), whose new keys
    /// and values are written into it in place. Returns hidden states `[B, T, D]`.
    pub fn forward_cached(&self, ids: &[Vec<u32>], mask: &[Vec<f32>], cache: &mut KvCache, dropout: Dropout) -> Result<Tensor<3>, ModelError> {
        Ok(self.ln_f.forward(self.stream_cached(ids, mask, cache, dropout)?))
    }

    /// Each row's next-token logits `[B, V]`: the pass of [`Gpt2::forward_cached`], then
    /// [`Gpt2::head`] at each row's last position alone (a decoding step).
    pub fn next_logits(&self, ids: &[Vec<u32>], mask: &[Vec<f32>], cache: &mut KvCache) -> Result<Tensor<2>, ModelError> {
        let stream = self.stream_cached(ids, mask, cache, Dropout::default())?; // [B, T, D]
        let seq = stream.dims()[1];
        Ok(self.head(stream.narrow(1, seq - 1, 1)).squeeze_dim::<2>(1))
    }

    /// [`Gpt2::forward_cached`] before the final LayerNorm.
    fn stream_cached(&self, ids: &[Vec<u32>], mask: &[Vec<f32>], cache: &mut KvCache, dropout: Dropout) -> Result<Tensor<3>, ModelError> {
        self.check_batch(ids, mask)?;
        let input = self.input(ids, &cache.masks_with(mask)?)?;
        let mut store = cache.step(mask)?;
        Ok(self.stream_stored(input, &mut store, dropout))
    }

    /// Checks a batch of ids and its mask: non-empty, rectangular, in the vocabulary. Returns
    /// its row count.
    fn check_batch(&self, ids: &[Vec<u32>], mask: &[Vec<f32>]) -> Result<usize, ModelError> {
        let batch = ids.len();
        let seq = ids.first().map_or(0, Vec::len);
        if batch == 0 || seq == 0 {
            return Err(ModelError::Input("empty batch: at least one token is needed".into()));
        }
        if ids.iter().any(|row| row.len() != seq) || mask.len() != batch || mask.iter().any(|row| row.len() != seq) {
            return Err(ModelError::Input("ragged batch: every row of ids and mask must have the same length".into()));
        }
        if let Some(&bad) = ids.iter().flatten().find(|&&id| id as usize >= self.config.vocab_size) {
            return Err(ModelError::Input(format!("token id {bad} is out of the vocabulary (vocab_size = {})", self.config.vocab_size)));
        }
        Ok(batch)
    }

    /// The pass's tensors for `ids` `[B, T]` after which `full_mask` (each row's earlier keys,
    /// then its T new ones) is what every row sees: positions count the real keys before each
    /// token, the bias hides padding and the future.
    fn input(&self, ids: &[Vec<u32>], full_mask: &[Vec<f32>]) -> Result<Gpt2Input, ModelError> {
        let device = self.wte.val().device();
        let (batch, seq) = (ids.len(), ids[0].len());
        let positions = positions_from_mask(full_mask, seq);
        let longest = positions.iter().flatten().copied().max().unwrap_or(0) as usize;
        if longest >= self.config.n_positions {
            return Err(ModelError::Input(format!(
                "sequence too long: {} positions (prefix + prompt + generated) but the model's n_positions is {}",
                longest + 1,
                self.config.n_positions
            )));
        }
        Ok(Gpt2Input {
            input_ids: ints(ids.iter().flatten().map(|&id| id as i64).collect(), [batch, seq], &device),
            position_ids: ints(positions.into_iter().flatten().collect(), [batch, seq], &device),
            bias: Some(attention_bias(full_mask, seq, true, &device)),
        })
    }

    /// A KV cache for this model, with room for `capacity` tokens before it grows and never
    /// more than `limit`.
    pub fn kv_cache(&self, capacity: usize, limit: usize) -> KvCache {
        let heads = self.config.n_head;
        KvCache::new(self.h.len(), heads, self.config.n_embd / heads, capacity, limit, &self.wte.val().device())
    }

    /// The past (keys/values in every layer) of virtual input embeddings `[B, P, D]` at
    /// positions 0..P: what the embedding-only ablation trains, fed to later tokens as a prefix.
    pub fn past_of_embeddings(&self, embeddings: Tensor<3>, dropout: Dropout) -> Past {
        let [batch, length, _] = embeddings.dims();
        let device = embeddings.device();
        let mask = vec![vec![1.0; length]; batch];
        let positions = ints((0..batch).flat_map(|_| 0..length as i64).collect(), [batch, length], &device);
        let bias = attention_bias(&mask, length, true, &device);
        let mut store = crate::kv::Appended::new(None, self.h.len());
        self.forward_embedded(embeddings, positions, Some(bias), &mut store, dropout);
        Past { layers: store.presents, mask }
    }
}
