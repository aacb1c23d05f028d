//! Where each layer's key and value sit in a prefix's activation matrix.
//!
//! A prefix of length P is a matrix `[P, 2·L·D]` laid out as PEFT lays it: column
//! `block·D + head·Dh + dh`, where block 2l is layer l's key and block 2l+1 its value.

use burn::tensor::Tensor;
use prefix_tune_model::narrow::narrow;
use prefix_tune_model::{KeyValue, Past};
use serde::{Deserialize, Serialize};

/// The shape of the attention a prefix feeds: L layers of H heads of Dh dimensions, and which
/// column blocks of the matrix feed which layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    pub n_layer: usize,
    pub n_head: usize,
    pub head_dim: usize,
    #[serde(default)]
    pub blocks: BlockOrder,
}

/// Which blocks of `[P, 2·L·D]` are layer l's key and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum BlockOrder {
    /// Block 2l is the key, 2l+1 the value (the paper's code; PEFT for decoder-only models).
    #[default]
    Paper,
    /// PEFT 0.21's encoder-decoder order: `get_prompt` doubles the blocks and deals them out four
    /// per layer (self K, self V, cross K, cross V) before dropping the cross pair, so layer l
    /// reads blocks 4l mod 2L and 4l+1 mod 2L, and half the blocks are never read.
    PeftSeq2Seq,
}

impl BlockOrder {
    /// The blocks holding layer `layer`'s key and value, of `n_layer` layers.
    pub fn key_value(self, layer: usize, n_layer: usize) -> (usize, usize) {
        match self {
            BlockOrder::Paper => (2 * layer, 2 * layer + 1),
            BlockOrder::PeftSeq2Seq => ((4 * layer) % (2 * n_layer), (4 * layer + 1) % (2 * n_layer)),
        }
    }
}

impl Layout {
    pub fn new(n_layer: usize, n_head: usize, head_dim: usize) -> Self {
        Self { n_layer, n_head, head_dim, blocks: BlockOrder::Paper }
    }

    pub fn gpt2(config: &prefix_tune_model::Gpt2Config) -> Self {
        Self::new(config.n_layer, config.n_head, config.head_dim())
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
        let shape = [batch, self.n_head, length, self.head_dim];
        self.shared_layers(activations)
            .into_iter()
            .map(|kv| KeyValue { keys: kv.keys.expand(shape), values: kv.values.expand(shape) })
            .collect()
    }

    /// [`Layout::to_layers`] held once for all rows: `[1, H, P, Dh]` per layer.
    fn shared_layers(&self, activations: Tensor<2>) -> Vec<KeyValue> {
        let [length, _] = activations.dims();
        let blocks = activations
            .reshape([length, 2 * self.n_layer, self.n_head, self.head_dim])
            .permute([1, 2, 0, 3]); // [2L, H, P, Dh]
        (0..self.n_layer)
            .map(|layer| {
                let (key, value) = self.blocks.key_value(layer, self.n_layer);
                KeyValue { keys: narrow(blocks.clone(), 0, key, 1), values: narrow(blocks.clone(), 0, value, 1) }
            })
            .collect()
    }

    /// The inverse of [`Layout::to_layers`] for row 0: `[P, 2·L·D]` from per-layer keys/values
    /// (in the paper's block order).
    pub fn from_layers(&self, layers: &[KeyValue]) -> Tensor<2> {
        let blocks: Vec<Tensor<4>> = layers
            .iter()
            .flat_map(|kv| [kv.keys.clone().narrow(0, 0, 1), kv.values.clone().narrow(0, 0, 1)])
            .collect();
        let blocks = Tensor::cat(blocks, 0); // [2L, H, P, Dh]
        let length = blocks.dims()[2];
        blocks.permute([2, 0, 1, 3]).reshape([length, self.width()])
    }

    /// One prefix per row — a mixed-task batch (the paper's §8). See [`stack_pasts`].
    pub fn stack(&self, per_row: &[Tensor<2>]) -> Past {
        stack_pasts(per_row.iter().map(|activations| self.past(activations.clone(), 1)).collect())
    }

    /// The same prefix for `batch` rows, as a [`Past`].
    pub fn past(&self, activations: Tensor<2>, batch: usize) -> Past {
        let length = activations.dims()[0];
        Past { layers: self.to_layers(activations, batch), mask: vec![vec![1.0; length]; batch] }
    }

    /// [`Layout::past`] for a teacher-forced pass (training, a loss), its layers one row
    /// (`[1, H, P, Dh]`) that the batch's rows share. Attention then reads that row for each of
    /// them, and its gradient is summed where it is read: on a GPU by the attention kernel,
    /// where a prefix broadcast first takes one more reduction per key and value and layer. The
    /// concatenations of [`prefix_tune_model::KeyValue::append`] broadcast it; a KV cache or beam
    /// search takes [`Layout::past`].
    pub fn shared_past(&self, activations: Tensor<2>, batch: usize) -> Past {
        let length = activations.dims()[0];
        Past { layers: self.shared_layers(activations), mask: vec![vec![1.0; length]; batch] }
    }
}

/// Stacks one-row pasts of possibly different lengths into one batch. Shorter rows are padded
/// after their prefix with masked keys, so every row attends only to its own prefix and its
/// tokens still start at position P_row.
pub fn stack_pasts(rows: Vec<Past>) -> Past {
    prefix_tune_model::past::concat_rows(rows)
}
