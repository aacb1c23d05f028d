//! What the attention kernels are given, as they read it: the queries and current keys and
//! values apart or packed in one projection, and the earlier keys and values in front.

use burn_backend::{Shape, TensorMetadata};
use burn_cubecl::ops::{permute, reshape};
use burn_cubecl::tensor::CubeTensor;

use super::{heads_interleaved, rows_in_place, split_heads, HeadsLaunch};
use crate::rows::empty_like;

/// One part of the keys and values, `[B|1, H, X, Dh]` each.
#[derive(Debug, Clone)]
pub struct KeysValues {
    pub keys: CubeTensor,
    pub values: CubeTensor,
}

impl KeysValues {
    fn in_place(self) -> Self {
        Self { keys: rows_in_place(self.keys), values: rows_in_place(self.values) }
    }

    pub(super) fn rows(&self) -> usize {
        self.keys.shape()[2]
    }
}

/// The queries and the current keys and values.
#[derive(Debug, Clone)]
pub enum Projections {
    /// Each a tensor of its own, `[B, H, X, Dh]`.
    Apart { queries: CubeTensor, current: KeysValues },
    /// One projection `[B, T, 3·H, Dh]` (GPT-2's `c_attn` split into heads): queries, keys and
    /// values are its heads 0..H, H..2H and 2H..3H. Its gradient comes back packed the same way,
    /// where three slices of it would each take a zero-padded copy and two additions.
    Packed(CubeTensor),
}

/// Their gradients, laid out as the [`Projections`] were.
#[derive(Debug, Clone)]
pub enum ProjectionGrads {
    Apart { queries: CubeTensor, current: KeysValues },
    Packed(CubeTensor),
}

/// [`Projections`] as the kernels read them: queries, keys, values (`[B, H|3·H, X, Dh]`, rows
/// contiguous), where each one's heads start, and H.
pub(super) struct Inputs {
    pub(super) queries: CubeTensor,
    pub(super) current: KeysValues,
    heads_at: [usize; 3],
    pub(super) heads: usize,
}

impl Inputs {
    pub(super) fn new(projections: Projections) -> Self {
        match projections {
            Projections::Apart { queries, current } => {
                let heads = queries.shape()[1];
                Inputs { queries: rows_in_place(queries), current: current.in_place(), heads_at: [0; 3], heads }
            }
            Projections::Packed(qkv) => {
                let heads = qkv.shape()[2] / 3;
                let all = rows_in_place(permute(qkv, &[0, 2, 1, 3])); // [B, 3·H, T, Dh]
                Inputs { queries: all.clone(), current: KeysValues { keys: all.clone(), values: all }, heads_at: [0, heads, 2 * heads], heads }
            }
        }
    }

    /// Queries alone, for a pass whose every key and value is in the front (paged): the
    /// current keys and values are stand-ins, never read.
    pub(super) fn queries_only(queries: CubeTensor) -> Self {
        let heads = queries.shape()[1];
        let queries = rows_in_place(queries);
        Inputs { current: KeysValues { keys: queries.clone(), values: queries.clone() }, queries, heads_at: [0; 3], heads }
    }

    pub(super) fn packed(&self) -> bool {
        self.heads_at[1] != 0
    }

    pub(super) fn heads_arg(&self) -> HeadsLaunch {
        let [queries, keys, values] = self.heads_at;
        HeadsLaunch::new(queries, keys, values)
    }

    /// Uninitialised gradients of the queries and current keys and values, laid out as they
    /// are, each `[B, H, X, Dh]` as the kernels write them (packed: three views of one tensor,
    /// and a stand-in for the values' that the kernels do not write).
    pub(super) fn gradients(&self) -> (ProjectionGrads, [CubeTensor; 3]) {
        let [batch, _, t_len, head_dim] = self.queries.shape().dims::<4>();
        if self.packed() {
            let merged = empty_like(&self.queries, Shape::new([batch, t_len, 3 * self.heads * head_dim]));
            let all = split_heads(merged.clone(), 3 * self.heads); // [B, 3·H, T, Dh]
            let packed = reshape(merged, Shape::new([batch, t_len, 3 * self.heads, head_dim]));
            return (ProjectionGrads::Packed(packed), [all.clone(), all, empty_like(&self.queries, Shape::new([1, 1, 1, 1]))]);
        }
        let like = |tensor: &CubeTensor| heads_interleaved(&self.queries, tensor.shape().dims::<4>());
        let (queries, keys, values) = (like(&self.queries), like(&self.current.keys), like(&self.current.values));
        let grads = ProjectionGrads::Apart { queries: queries.clone(), current: KeysValues { keys: keys.clone(), values: values.clone() } };
        (grads, [queries, keys, values])
    }
}

/// The kernels' front arguments: its keys, values and length; without a front, the rest's
/// tensors stand in (never read: its length is 0).
pub(super) fn front_args(front: Option<KeysValues>, rest: &KeysValues) -> (KeysValues, usize) {
    match front {
        Some(front) => {
            let len = front.rows();
            (front.in_place(), len)
        }
        None => (rest.clone(), 0),
    }
}
