//! BART for summarization: a frozen encoder-decoder whose three kinds of attention each take
//! a prefix (encoder self-attention, decoder self-attention, decoder cross-attention).
//!
//! The paper's convention (and its code's): a prefix is final per-head keys/values in front of
//! the keys, always visible (never under the causal mask) and it takes **no positions** — real
//! tokens keep positions 0, 1, …. PEFT's adapters put theirs in the decoder's cache instead,
//! which shifts the decoder's positions by P: [`DecoderState::tokens`] starts at P for those.

mod config;
mod decode;
mod load;
mod model;

pub use config::{BartConfig, POSITION_OFFSET};
pub use decode::{generate_bart, generation_defaults, right_pad, BartSearch};
pub use load::{bart_from_weights, load_bart};
pub use model::{Attention, Bart, DecoderLayer, Embeddings, EncoderLayer, FeedForward};

use burn::tensor::{Device, Tensor};

use crate::attention::attention_bias;
use crate::kv::{Appended, Fronted, KvCache, KvMemory};
use crate::nn::Dropout;
use crate::past::Past;
use crate::tensors::ints;
use crate::ModelError;

/// The prefixes of one batch, one row per input row; a set left `None` is off. Rows of a set may
/// have different lengths (a mixed-task batch), masked as [`Past`] says.
#[derive(Debug, Clone, Default)]
pub struct BartPrefix {
    /// In front of every encoder layer's self-attention keys.
    pub encoder: Option<Past>,
    /// In front of every decoder layer's self-attention keys.
    pub decoder: Option<Past>,
    /// In front of every decoder layer's cross-attention keys (the encoder's).
    pub cross: Option<Past>,
}

/// What the decoder has seen: its self-attention past (decoder prefix, then every token fed so
/// far), the cross-attention memory (cross prefix, then the encoder's keys/values), and how
/// many real decoder tokens precede the next one, which is the next token's position.
#[derive(Debug, Clone)]
pub struct DecoderState {
    pub self_attn: Option<Past>,
    pub cross: Past,
    pub tokens: usize,
}

impl DecoderState {
    pub fn rows(&self) -> usize {
        self.cross.rows()
    }

}

/// What a decoder pass continues: its self-attention past, how many real tokens precede the
/// next one, and the cross-attention memory with its mask (`[B][S_cross]`).
struct Decoder<'a> {
    self_attn: Option<Past>,
    tokens: usize,
    cross: &'a dyn KvMemory,
    cross_mask: &'a [Vec<f32>],
}

/// `[batch][len]` position ids `from..from + len`.
fn position_ids(batch: usize, from: usize, len: usize, device: &Device) -> burn::tensor::Tensor<2, burn::tensor::Int> {
    ints((0..batch).flat_map(|_| (from..from + len).map(|p| p as i64)).collect(), [batch, len], device)
}

impl Bart {
    pub fn device(&self) -> Device {
        self.shared.val().device()
    }

    /// Checks a `[rows][len]` batch of ids: non-empty, rectangular, in the vocabulary.
    fn check_ids(&self, what: &str, ids: &[Vec<u32>]) -> Result<(usize, usize), ModelError> {
        let rows = ids.len();
        let len = ids.first().map_or(0, Vec::len);
        if rows == 0 || len == 0 {
            return Err(ModelError::Input(format!("empty {what}: at least one token is needed")));
        }
        if ids.iter().any(|row| row.len() != len) {
            return Err(ModelError::Input(format!("ragged {what}: every row must have the same length")));
        }
        if let Some(&bad) = ids.iter().flatten().find(|&&id| id as usize >= self.config.vocab_size) {
            return Err(ModelError::Input(format!("{what}: token id {bad} is out of the vocabulary (vocab_size = {})", self.config.vocab_size)));
        }
        Ok((rows, len))
    }

    fn check_prefix_rows(what: &str, prefix: &Option<Past>, rows: usize) -> Result<(), ModelError> {
        match prefix {
            Some(past) if past.rows() != rows => {
                Err(ModelError::Input(format!("{what} prefix has {} rows but the batch has {rows}", past.rows())))
            }
            _ => Ok(()),
        }
    }

    /// Runs the encoder over right-padded `ids` (`mask` 1 for real tokens) with the encoder
    /// prefix, and returns the decoder's cross-attention memory: the cross prefix, then every
    /// decoder layer's keys/values of the encoder output.
    pub fn encode_tokens(&self, ids: &[Vec<u32>], mask: &[Vec<f32>], prefix: &BartPrefix, dropout: Dropout) -> Result<Past, ModelError> {
        let (hidden, mask) = self.encoder_hidden(ids, mask, prefix.encoder.clone(), dropout)?;
        Self::check_prefix_rows("cross-attention", &prefix.cross, ids.len())?;
        let encoded = Past { layers: self.cross_keys_values(hidden), mask };
        Ok(match prefix.cross.clone() {
            Some(cross) => cross.then(encoded),
            None => encoded,
        })
    }

    /// The encoder's last hidden states `[B, S, D]` and the input mask.
    pub fn encoder_hidden(&self, ids: &[Vec<u32>], mask: &[Vec<f32>], prefix: Option<Past>, dropout: Dropout) -> Result<(Tensor<3>, Vec<Vec<f32>>), ModelError> {
        let (rows, len) = self.check_ids("encoder input", ids)?;
        if mask.len() != rows || mask.iter().any(|row| row.len() != len) {
            return Err(ModelError::Input("encoder attention mask must have the shape of the input ids".into()));
        }
        if len > self.config.max_position_embeddings {
            return Err(ModelError::Input(format!(
                "encoder input too long: {len} tokens but the model's max_position_embeddings is {}",
                self.config.max_position_embeddings
            )));
        }
        Self::check_prefix_rows("encoder", &prefix, rows)?;
        let device = self.device();
        let (prefix_layers, key_mask) = match prefix {
            Some(Past { layers, mask: prefix_mask }) => {
                let key_mask = prefix_mask.into_iter().zip(mask).map(|(mut row, real)| {
                    row.extend_from_slice(real);
                    row
                });
                (Some(layers), key_mask.collect())
            }
            None => (None, mask.to_vec()),
        };
        let bias = attention_bias(&key_mask, len, false, &device); // [B, 1, S, P + S]
        let input = ints(ids.iter().flatten().map(|&id| id as i64).collect(), [rows, len], &device);
        let hidden = self.encode(input, position_ids(rows, 0, len, &device), prefix_layers, bias, dropout);
        Ok((hidden, mask.to_vec()))
    }

    /// The decoder's state before its first token: the decoder prefix (if any) and the cross
    /// memory from [`Bart::encode_tokens`]; positions start at 0.
    pub fn start_decoding(&self, cross: Past, decoder_prefix: Option<Past>) -> Result<DecoderState, ModelError> {
        Self::check_prefix_rows("decoder", &decoder_prefix, cross.rows())?;
        Ok(DecoderState { self_attn: decoder_prefix, cross, tokens: 0 })
    }

    /// Feeds `ids` `[B, T]` to the decoder after `state`; every fed token is real (BART's
    /// decoder rows are right-padded, and padding after the last label is never attended by a
    /// real query under the causal mask). Returns hidden states `[B, T, D]` and the next state.
    pub fn decode_tokens(&self, ids: &[Vec<u32>], state: DecoderState, dropout: Dropout) -> Result<(Tensor<3>, DecoderState), ModelError> {
        let decoder = Decoder { self_attn: state.self_attn, tokens: state.tokens, cross: &state.cross.layers, cross_mask: &state.cross.mask };
        let (hidden, self_attn) = self.decode_after(ids, decoder, dropout, true)?;
        Ok((hidden, DecoderState { self_attn: Some(self_attn), cross: state.cross, tokens: state.tokens + ids[0].len() }))
    }

    /// [`Bart::decode_tokens`] after `decoder`; returns the hidden states and the next
    /// self-attention past, which without `keep` holds no keys (teacher forcing, which no later
    /// pass continues: a GPU then never concatenates the decoder prefix with the tokens' keys).
    fn decode_after(&self, ids: &[Vec<u32>], decoder: Decoder<'_>, dropout: Dropout, keep: bool) -> Result<(Tensor<3>, Past), ModelError> {
        let (rows, len) = self.check_ids("decoder input", ids)?;
        if rows != decoder.cross_mask.len() {
            return Err(ModelError::Input(format!("decoder input has {rows} rows but the encoder output has {}", decoder.cross_mask.len())));
        }
        if decoder.tokens + len > self.config.max_position_embeddings {
            return Err(ModelError::Input(format!(
                "decoder sequence too long: {} positions but the model's max_position_embeddings is {}",
                decoder.tokens + len,
                self.config.max_position_embeddings
            )));
        }
        let device = self.device();
        let (past_layers, mut key_mask) = match decoder.self_attn {
            Some(Past { layers, mask }) => (Some(layers), mask),
            None => (None, vec![Vec::new(); rows]),
        };
        for row in &mut key_mask {
            row.extend(std::iter::repeat_n(1.0, len));
        }
        let self_bias = attention_bias(&key_mask, len, true, &device); // [B, 1, T, S]
        let cross_bias = attention_bias(decoder.cross_mask, len, false, &device); // [B, 1, T, S_cross]
        let input = ints(ids.iter().flatten().map(|&id| id as i64).collect(), [rows, len], &device);
        let positions = position_ids(rows, decoder.tokens, len, &device);
        let mut store = if keep { Appended::new(past_layers, self.decoder_layers.len()) } else { Appended::transient(past_layers, self.decoder_layers.len()) };
        let hidden = self.decode(input, positions, &mut store, decoder.cross, self_bias, cross_bias, dropout);
        Ok((hidden, Past { layers: store.presents, mask: key_mask }))
    }

    /// [`Bart::decode_tokens`] for rows whose decoder keys (prefix, tokens so far) are in
    /// `cache`, written in place, and whose cross-attention memory is `cross`'s rows; row b's
    /// tokens start at position `positions[b]`. Returns hidden states `[B, T, D]`.
    pub fn decode_cached(&self, ids: &[Vec<u32>], positions: &[usize], cache: &mut KvCache, cross: &KvCache, dropout: Dropout) -> Result<Tensor<3>, ModelError> {
        let (rows, len) = self.check_ids("decoder input", ids)?;
        if cache.rows() != rows || cross.rows() != rows || positions.len() != rows {
            return Err(ModelError::Input(format!(
                "decoder input has {rows} rows but the decoder cache has {}, the cross memory {} and the positions {}",
                cache.rows(),
                cross.rows(),
                positions.len()
            )));
        }
        if let Some(&last) = positions.iter().max().filter(|&&p| p + len > self.config.max_position_embeddings) {
            return Err(ModelError::Input(format!(
                "decoder sequence too long: {} positions but the model's max_position_embeddings is {}",
                last + len,
                self.config.max_position_embeddings
            )));
        }
        let device = self.device();
        let new = vec![vec![1.0; len]; rows];
        let self_bias = attention_bias(&cache.masks_with(&new)?, len, true, &device); // [B, 1, T, S]
        let cross_bias = attention_bias(&cross.masks(), len, false, &device); // [B, 1, T, S_cross]
        let input = ints(ids.iter().flatten().map(|&id| id as i64).collect(), [rows, len], &device);
        let positions = ints(positions.iter().flat_map(|&from| (from..from + len).map(|p| p as i64)).collect(), [rows, len], &device);
        let mut store = cache.step(&new)?;
        Ok(self.decode(input, positions, &mut store, &cross.read(), self_bias, cross_bias, dropout))
    }

    /// A KV cache shaped for the decoder's layers (its self-attention keys, or its
    /// cross-attention memory), room for `capacity` tokens before it grows, never more than
    /// `limit`.
    pub fn kv_cache(&self, capacity: usize, limit: usize) -> KvCache {
        let attention = &self.decoder_layers[0].self_attn;
        KvCache::new(self.decoder_layers.len(), attention.n_head, attention.head_dim, capacity, limit, &self.device())
    }

    /// Teacher forcing: the decoder's hidden states `[B, T, D]` for `decoder_ids` given the
    /// encoder input, with `prefix`; `decoder_offset` is the decoder's first position (0, or P
    /// for a PEFT adapter's prefix).
    pub fn forward_tokens(
        &self,
        input_ids: &[Vec<u32>],
        attention_mask: &[Vec<f32>],
        decoder_ids: &[Vec<u32>],
        prefix: &BartPrefix,
        decoder_offset: usize,
        dropout: Dropout,
    ) -> Result<Tensor<3>, ModelError> {
        let (hidden, mask) = self.encoder_hidden(input_ids, attention_mask, prefix.encoder.clone(), dropout)?;
        for (what, set) in [("cross-attention", &prefix.cross), ("decoder", &prefix.decoder)] {
            Self::check_prefix_rows(what, set, input_ids.len())?;
        }
        // The cross prefix stays apart from the encoder's keys (see `Fronted`).
        let (front, cross_mask) = match prefix.cross.clone() {
            Some(Past { layers, mask: front_mask }) => (Some(layers), crate::past::joined_masks(front_mask, &mask)),
            None => (None, mask),
        };
        let cross = Fronted { front, rest: self.cross_keys_values(hidden) };
        let decoder = Decoder { self_attn: prefix.decoder.clone(), tokens: decoder_offset, cross: &cross, cross_mask: &cross_mask };
        Ok(self.decode_after(decoder_ids, decoder, dropout, false)?.0)
    }
}
