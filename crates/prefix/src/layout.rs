//! Where each layer's key and value sit in a prefix's activation matrix.
//!
//! A prefix of length P is a matrix `[P, 2·L·D]` laid out as PEFT lays it: column
//! `block·D + head·Dh + dh`, where block 2l is layer l's key and block 2l+1 its value.

use burn::tensor::Tensor;
use prefix_tune_model::{KeyValue, Past};
use serde::{Deserialize, Serialize};

/// The shape of the attention a prefix feeds: L layers of H heads of Dh dimensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    pub n_layer: usize,
    pub n_head: usize,
    pub head_dim: usize,
}

impl Layout {
    pub fn gpt2(config: &prefix_tune_model::Gpt2Config) -> Self {
        Self { n_layer: config.n_layer, n_head: config.n_head, head_dim: config.head_dim() }
    }

    pub fn d_model(&self) -> usize {
        self.n_head * self.head_dim
    }

    /// Columns of the activation matrix: 2·L·D.
    pub fn width(&self) -> usize {
        2 * self.n_layer * self.d_model()
    }

    /// Splits activations `[P, 2·L·D]` into per-layer keys and values `[B, H, P, Dh]`, the same
    /// prefix for every one of `batch` rows.
    pub fn to_layers(&self, activations: Tensor<2>, batch: usize) -> Vec<KeyValue> {
        let [length, _] = activations.dims();
        let blocks = activations
            .reshape([length, 2 * self.n_layer, self.n_head, self.head_dim])
            .permute([1, 2, 0, 3]); // [2L, H, P, Dh]
        let shape = [batch, self.n_head, length, self.head_dim];
        (0..self.n_layer)
            .map(|layer| KeyValue {
                keys: blocks.clone().narrow(0, 2 * layer, 1).expand(shape),
                values: blocks.clone().narrow(0, 2 * layer + 1, 1).expand(shape),
            })
            .collect()
    }

    /// The inverse of [`Layout::to_layers`] for row 0: `[P, 2·L·D]` from per-layer keys/values.
    pub fn from_layers(&self, layers: &[KeyValue]) -> Tensor<2> {
        let blocks: Vec<Tensor<4>> = layers
            .iter()
            .flat_map(|kv| [kv.keys.clone().narrow(0, 0, 1), kv.values.clone().narrow(0, 0, 1)])
            .collect();
        let blocks = Tensor::cat(blocks, 0); // [2L, H, P, Dh]
        let length = blocks.dims()[2];
        blocks.permute([2, 0, 1, 3]).reshape([length, self.width()])
    }

    /// One prefix per row — a mixed-task batch (the paper's §8). Rows with shorter prefixes are
    /// padded after their prefix with masked keys, so every row attends only to its own prefix
    /// and its tokens still start at position P_row.
    pub fn stack(&self, per_row: &[Tensor<2>]) -> Past {
        let longest = per_row.iter().map(|a| a.dims()[0]).max().unwrap_or(0);
        let mut rows_layers: Vec<Vec<KeyValue>> = Vec::with_capacity(per_row.len());
        let mut mask = Vec::with_capacity(per_row.len());
        for activations in per_row {
            let [length, width] = activations.dims();
            let padded = if length < longest {
                let zeros = Tensor::<2>::zeros([longest - length, width], &activations.device());
                Tensor::cat(vec![activations.clone(), zeros], 0)
            } else {
                activations.clone()
            };
            rows_layers.push(self.to_layers(padded, 1));
            mask.push((0..longest).map(|i| if i < length { 1.0 } else { 0.0 }).collect());
        }
        let layers = (0..self.n_layer)
            .map(|layer| KeyValue {
                keys: Tensor::cat(rows_layers.iter().map(|row| row[layer].keys.clone()).collect(), 0),
                values: Tensor::cat(rows_layers.iter().map(|row| row[layer].values.clone()).collect(), 0),
            })
            .collect();
        Past { layers, mask }
    }

    /// The same prefix for `batch` rows, as a [`Past`].
    pub fn past(&self, activations: Tensor<2>, batch: usize) -> Past {
        let length = activations.dims()[0];
        Past { layers: self.to_layers(activations, batch), mask: vec![vec![1.0; length]; batch] }
    }
}
