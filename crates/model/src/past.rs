//! Decoding state shared by every model: keys and values that come before the current tokens
//! (a prefix, a KV cache, an encoder's output) and which of them each row may see.

use burn::tensor::Device;

use crate::attention::KeyValue;
use crate::tensors::ints;

/// Keys and values that come before the tokens of a forward pass — a prefix, a KV cache, or
/// both — and which of their positions are real, per row.
#[derive(Debug, Clone)]
pub struct Past {
    /// One per layer, `[B, H, S_past, Dh]`.
    pub layers: Vec<KeyValue>,
    /// `[B][S_past]`: 1 for a key every later token may attend to, 0 for padding (a shorter
    /// prefix in a mixed batch, or a finished row's pad).
    pub mask: Vec<Vec<f32>>,
}

impl Past {
    pub fn len(&self) -> usize {
        self.mask.first().map_or(0, Vec::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn rows(&self) -> usize {
        self.mask.len()
    }

    /// `self` in front of `newer` in every layer, row by row (a prefix before a cache or an
    /// encoder's keys).
    pub fn then(self, newer: Past) -> Past {
        let layers = self.layers.into_iter().zip(newer.layers).map(|(front, back)| front.append(back)).collect();
        Past { layers, mask: joined_masks(self.mask, &newer.mask) }
    }

    /// Keeps rows `rows`, in that order (beam reordering, or expanding a row per beam).
    pub fn select_rows(self, rows: &[usize], device: &Device) -> Past {
        let indices = ints(rows.iter().map(|&r| r as i64).collect(), [rows.len()], device);
        Past {
            layers: self.layers.into_iter().map(|kv| kv.select_rows(indices.clone())).collect(),
            mask: rows.iter().map(|&r| self.mask[r].clone()).collect(),
        }
    }
}

/// Each row's `front` mask, then its `back` one.
pub fn joined_masks(front: Vec<Vec<f32>>, back: &[Vec<f32>]) -> Vec<Vec<f32>> {
    front
        .into_iter()
        .zip(back)
        .map(|(mut row, newer)| {
            row.extend_from_slice(newer);
            row
        })
        .collect()
}

/// Keeps rows `rows` of a past (cache or prefix), in that order.
pub fn select_rows(past: Past, rows: &[usize], device: &Device) -> Past {
    past.select_rows(rows, device)
}

/// Each of `rows` rows repeated `copies` times, adjacent: a prompt's beams.
pub fn repeat_rows(rows: usize, copies: usize) -> Vec<usize> {
    (0..rows).flat_map(|r| std::iter::repeat_n(r, copies)).collect()
}

/// Joins batches of pasts of different lengths into one: each is padded at its end with masked
/// zero keys to the longest, so every row still sees only its own keys, and the positions of
/// its later tokens (counted over real keys) do not change.
pub fn concat_rows(pasts: Vec<Past>) -> Past {
    let longest = pasts.iter().map(Past::len).max().unwrap_or(0);
    let n_layer = pasts.first().map_or(0, |p| p.layers.len());
    let mut mask = Vec::new();
    let mut per_layer: Vec<(Vec<burn::tensor::Tensor<4>>, Vec<burn::tensor::Tensor<4>>)> = (0..n_layer).map(|_| (Vec::new(), Vec::new())).collect();
    for past in pasts {
        let length = past.len();
        for (layer, kv) in past.layers.into_iter().enumerate() {
            let pad = |t: burn::tensor::Tensor<4>| {
                if length == longest {
                    return t;
                }
                let [b, h, _, d] = t.dims();
                let zeros = burn::tensor::Tensor::<4>::zeros([b, h, longest - length, d], &t.device());
                burn::tensor::Tensor::cat(vec![t, zeros], 2)
            };
            per_layer[layer].0.push(pad(kv.keys));
            per_layer[layer].1.push(pad(kv.values));
        }
        for mut row in past.mask {
            row.resize(longest, 0.0);
            mask.push(row);
        }
    }
    let layers = per_layer
        .into_iter()
        .map(|(keys, values)| KeyValue { keys: burn::tensor::Tensor::cat(keys, 0), values: burn::tensor::Tensor::cat(values, 0) })
        .collect();
    Past { layers, mask }
}
