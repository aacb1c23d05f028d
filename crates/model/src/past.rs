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
        let mask = self.mask.into_iter().zip(newer.mask).map(|(mut front, back)| {
            front.extend(back);
            front
        });
        Past { layers, mask: mask.collect() }
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

/// Keeps rows `rows` of a past (cache or prefix), in that order.
pub fn select_rows(past: Past, rows: &[usize], device: &Device) -> Past {
    past.select_rows(rows, device)
}

/// Each of `rows` rows repeated `copies` times, adjacent: a prompt's beams.
pub fn repeat_rows(rows: usize, copies: usize) -> Vec<usize> {
    (0..rows).flat_map(|r| std::iter::repeat_n(r, copies)).collect()
}
