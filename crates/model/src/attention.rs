//! Attention with a prefix: the one function GPT-2's self-attention and BART's self- and
//! cross-attention all go through.
//!
//! A prefix (Li & Liang, 2021) is nothing but extra keys and values that every real token may
//! attend to. Whether they come from a trained prefix, a KV cache of earlier tokens, or an
//! encoder, the computation is the same: concatenate them in front of the current keys and
//! values, mask what a query must not see, softmax.

use burn::tensor::{activation::softmax, Distribution, Tensor};

/// Large negative added to the scores of keys a query must not see. Finite (unlike -inf) so a
/// row that sees nothing, such as a left-padding query, softmaxes to a uniform row instead of
/// NaN that would leak into later layers; HF uses `finfo.min` for the same reason.
pub const MASKED: f32 = -1.0e9;

/// The keys and values of one attention layer, `[batch, heads, seq, head_dim]`.
#[derive(Debug, Clone)]
pub struct KeyValue {
    pub keys: Tensor<4>,
    pub values: Tensor<4>,
}

impl KeyValue {
    /// Appends `newer` after `self` along the sequence axis: prefix, then cache, then current.
    pub fn append(self, newer: KeyValue) -> KeyValue {
        KeyValue {
            keys: Tensor::cat(vec![self.keys, newer.keys], 2),
            values: Tensor::cat(vec![self.values, newer.values], 2),
        }
    }

    /// Keeps the rows `indices` of the batch, in that order (beam search reordering).
    pub fn select_rows(self, indices: Tensor<1, burn::tensor::Int>) -> KeyValue {
        KeyValue { keys: self.keys.select(0, indices.clone()), values: self.values.select(0, indices) }
    }

    pub fn seq_len(&self) -> usize {
        self.keys.dims()[2]
    }
}

/// Softmax attention of `queries` over `keys`/`values`.
///
/// # Shapes
/// - queries: `[B, H, T, Dh]`
/// - keys, values: `[B, H, S, Dh]`, S ≥ T (prefix and cached keys come first)
/// - bias: `[B, 1, T, S]`, 0 where a query may look, [`MASKED`] where it may not
/// - returns `[B, H, T, Dh]`
pub fn attend(
    queries: Tensor<4>,
    keys: Tensor<4>,
    values: Tensor<4>,
    bias: Option<Tensor<4>>,
    scale: f32,
    dropout: f64,
) -> Tensor<4> {
    let scores = queries.matmul(keys.swap_dims(2, 3)) * scale; // [B, H, T, S]
    let scores = match bias {
        Some(bias) => scores + bias,
        None => scores,
    };
    let mut weights = softmax(scores, 3);
    if dropout > 0.0 {
        weights = apply_dropout(weights, dropout);
    }
    weights.matmul(values) // [B, H, T, Dh]
}

/// Inverted dropout as PyTorch does it: zero with probability `p`, scale the rest by 1/(1-p).
pub fn apply_dropout<const D: usize>(x: Tensor<D>, p: f64) -> Tensor<D> {
    if p <= 0.0 {
        return x;
    }
    let keep = Tensor::<D>::random(x.shape(), Distribution::Bernoulli(1.0 - p), &x.device());
    x * keep / (1.0 - p)
}

/// The additive attention bias for T new tokens that follow `past_len` earlier keys.
///
/// `key_mask[b][s]` is 1 for a key row `b` may attend to (prefix, real tokens) and 0 for
/// padding. A query at step t sees key s when s ≤ past_len + t (causal) and the key is real.
/// `causal = false` gives an encoder's or cross-attention's bias (padding only).
pub fn attention_bias(
    key_mask: &[Vec<f32>],
    new_len: usize,
    causal: bool,
    device: &burn::tensor::Device,
) -> Tensor<4> {
    let batch = key_mask.len();
    let total = key_mask.first().map_or(0, |row| row.len());
    let past_len = total.saturating_sub(new_len);
    let mut bias = Vec::with_capacity(batch * new_len * total);
    for row in key_mask {
        for t in 0..new_len {
            for (s, &visible) in row.iter().enumerate() {
                let allowed = visible > 0.5 && (!causal || s <= past_len + t);
                bias.push(if allowed { 0.0 } else { MASKED });
            }
        }
    }
    Tensor::<1>::from_floats(bias.as_slice(), device).reshape([batch, 1, new_len, total])
}
