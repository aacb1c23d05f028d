//! Attention with a prefix: the one function GPT-2's self-attention and BART's self- and
//! cross-attention all go through.
//!
//! A prefix (Li & Liang, 2021) is nothing but extra keys and values that every real token may
//! attend to. Whether they come from a trained prefix, a KV cache of earlier tokens, or an
//! encoder, the computation is the same: concatenate them in front of the current keys and
//! values, mask what a query must not see, softmax.

use burn::tensor::{activation::softmax, Int, Tensor};

use crate::dropout::Site;

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
    /// A side of one row shared by the batch (a training prefix) is broadcast to the other's.
    pub fn append(self, newer: KeyValue) -> KeyValue {
        let batch = self.rows().max(newer.rows());
        let (front, back) = (self.broadcast(batch), newer.broadcast(batch));
        KeyValue {
            keys: Tensor::cat(vec![front.keys, back.keys], 2),
            values: Tensor::cat(vec![front.values, back.values], 2),
        }
    }

    /// Batch rows: 1 for a prefix shared by a batch's rows.
    pub fn rows(&self) -> usize {
        self.keys.dims()[0]
    }

    /// `self` for `batch` rows: one row is repeated (a view; its gradient sums over them).
    fn broadcast(self, batch: usize) -> KeyValue {
        if self.rows() == batch {
            return self;
        }
        let [_, heads, len, head_dim] = self.keys.dims();
        let shape = [batch, heads, len, head_dim];
        KeyValue { keys: self.keys.expand(shape), values: self.values.expand(shape) }
    }

    /// Keeps the rows `indices` of the batch, in that order (beam search reordering).
    pub fn select_rows(self, indices: Tensor<1, burn::tensor::Int>) -> KeyValue {
        KeyValue { keys: self.keys.select(0, indices.clone()), values: self.values.select(0, indices) }
    }

    pub fn seq_len(&self) -> usize {
        self.keys.dims()[2]
    }
}

/// What a layer's queries attend over.
#[derive(Debug, Clone)]
pub enum Memory {
    /// Keys and values in two parts, the earlier ones (a prefix, a cache, `[B|1, H, P, Dh]`: one
    /// row when a training batch shares its prefix) in front of the current ones
    /// (`[B, H, T, Dh]`). A GPU's kernels read each part where it lies; elsewhere they are
    /// concatenated ([`Memory::joined`]).
    Parts { earlier: Option<KeyValue>, current: KeyValue },
    /// A KV cache's keys and values where they lie ([`Pages`]): a GPU's kernel reads each
    /// through its pool row; elsewhere they are gathered.
    Paged(Pages),
}

impl Memory {
    /// Keys in all.
    pub fn len(&self) -> usize {
        match self {
            Memory::Parts { earlier, current } => current.seq_len() + earlier.as_ref().map_or(0, KeyValue::seq_len),
            Memory::Paged(pages) => pages.rows.dims()[2],
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every key and value in order, `[B, H, S, Dh]`: the earlier ones, then the current ones.
    pub fn joined(self) -> KeyValue {
        match self {
            Memory::Parts { earlier: Some(earlier), current } => earlier.append(current),
            Memory::Parts { earlier: None, current } => current,
            Memory::Paged(pages) => pages.gathered(),
        }
    }
}

impl From<KeyValue> for Memory {
    fn from(current: KeyValue) -> Self {
        Memory::Parts { earlier: None, current }
    }
}

/// One layer of a KV cache as it lies: its key and value pools `[H·capacity, Dh]` and, for each
/// (row, head, key), the pool row that holds the key, `[B, H, S]` (each row padded at its end).
#[derive(Debug, Clone)]
pub struct Pages {
    pub keys: Tensor<2>,
    pub values: Tensor<2>,
    pub rows: Tensor<3, Int>,
}

impl Pages {
    /// The keys and values gathered, `[B, H, S, Dh]`.
    pub fn gathered(self) -> KeyValue {
        let [batch, heads, len] = self.rows.dims();
        let shape = [batch, heads, len, self.keys.dims()[1]];
        let index = self.rows.reshape([batch * heads * len]);
        KeyValue { keys: self.keys.select(0, index.clone()).reshape(shape), values: self.values.select(0, index).reshape(shape) }
    }
}

/// Softmax attention of `queries` over `memory`'s keys and values.
///
/// # Shapes
/// - queries: `[B, H, T, Dh]`
/// - memory: S keys and values in all, S ≥ T (prefix and cached keys come first)
/// - bias: `[B, 1, T, S]`, 0 where a query may look, [`MASKED`] where it may not
/// - returns `[B, T, H·Dh]`, the heads merged back (the GPU's kernel writes them so)
pub fn attend(queries: Tensor<4>, memory: Memory, bias: Option<Tensor<4>>, scale: f32, dropout: Site) -> Tensor<3> {
    #[cfg(feature = "flex")]
    if queries.device().is_autodiff() && crate::backend::is_cpu(&queries.device()) && queries.dtype() == burn::tensor::DType::F32 {
        let KeyValue { keys, values } = memory.joined();
        return merge_heads(flex::attend(queries, keys, values, bias, scale, dropout));
    }
    #[cfg(feature = "gpu")]
    if crate::backend::is_gpu(&queries.device()) && queries.dtype() == burn::tensor::DType::F32 && gpu::takes(&queries, &memory, dropout) {
        return gpu::attend(queries, memory, bias, scale, dropout);
    }
    let KeyValue { keys, values } = memory.joined();
    composed(queries, keys, values, bias, scale, dropout)
}

/// A KV cache's decoding step: `queries` attend over the keys of `pools` at rows `reads`
/// `[B, H, S]`, among them the step's own (`current`, `[B, H, T, Dh]`), which go into the pools
/// at rows `writes` `[B·H·T]`. Returns the output `[B, T, H·Dh]` and the pools. On a GPU with one
/// new token per row, one kernel writes and attends ([`prefix_tune_shaders::attention::forward_step`]);
/// elsewhere the keys are written ([`crate::kv_write::write`]), then attended over where they lie.
#[allow(clippy::too_many_arguments)]
pub fn attend_written(queries: Tensor<4>, current: KeyValue, pools: (Tensor<2>, Tensor<2>), reads: Tensor<3, Int>, writes: &Tensor<1, Int>, bias: Option<Tensor<4>>, scale: f32, dropout: Site) -> (Tensor<3>, (Tensor<2>, Tensor<2>)) {
    #[cfg(feature = "gpu")]
    if crate::backend::is_gpu(&queries.device()) && queries.dtype() == burn::tensor::DType::F32 && gpu::takes_step(&queries, &pools, &reads, dropout) {
        return gpu::attend_step(queries, current, pools, reads, writes.clone(), bias, scale);
    }
    let (keys, values) = crate::kv_write::write(pools, writes, current);
    let memory = Memory::Paged(Pages { keys: keys.clone(), values: values.clone(), rows: reads });
    (attend(queries, memory, bias, scale, dropout), (keys, values))
}

/// Queries, keys and values packed in one projection `[B, T, 3·H, Dh]` (GPT-2's `c_attn` split
/// into heads) taken apart: `[B, H, T, Dh]` views of heads 0..H, H..2H and 2H..3H.
pub fn unpack(qkv: Tensor<4>) -> (Tensor<4>, KeyValue) {
    let heads = qkv.dims()[2] / 3;
    let part = |index: usize| crate::narrow::narrow(qkv.clone(), 2, index * heads, heads).swap_dims(1, 2);
    (part(0), KeyValue { keys: part(1), values: part(2) })
}

/// [`attend`] for queries, keys and values packed in one projection `[B, T, 3·H, Dh]`, after
/// the `earlier` keys and values. On a GPU one op whose gradient in `qkv` comes back as one
/// tensor, where the three slices of [`unpack`] each take a zero-padded copy of theirs and two
/// additions to sum them; elsewhere [`unpack`], then [`attend`].
pub fn attend_packed(qkv: Tensor<4>, earlier: Option<KeyValue>, bias: Option<Tensor<4>>, scale: f32, dropout: Site) -> Tensor<3> {
    #[cfg(feature = "gpu")]
    if crate::backend::is_gpu(&qkv.device()) && qkv.dtype() == burn::tensor::DType::F32 && gpu::takes_packed(&qkv, earlier.as_ref()) {
        return gpu::attend_packed(qkv, earlier, bias, scale, dropout);
    }
    let (queries, current) = unpack(qkv);
    attend(queries, Memory::Parts { earlier, current }, bias, scale, dropout)
}

/// [`attend`] as tensor operations (every backend; the reference for the fused ops).
pub fn composed(queries: Tensor<4>, keys: Tensor<4>, values: Tensor<4>, bias: Option<Tensor<4>>, scale: f32, dropout: Site) -> Tensor<3> {
    merge_heads(per_head(queries, keys, values, bias, scale, dropout))
}

/// `[B, H, T, Dh]` → `[B, T, H·Dh]`.
fn merge_heads(heads: Tensor<4>) -> Tensor<3> {
    let [batch, n_heads, seq, head_dim] = heads.dims();
    heads.swap_dims(1, 2).reshape([batch, seq, n_heads * head_dim])
}

/// [`composed`] before the heads are merged: `[B, H, T, Dh]`.
fn per_head(queries: Tensor<4>, keys: Tensor<4>, values: Tensor<4>, bias: Option<Tensor<4>>, scale: f32, dropout: Site) -> Tensor<4> {
    let scores = queries.matmul(keys.swap_dims(2, 3)) * scale; // [B, H, T, S]
    let scores = match bias {
        Some(bias) => scores + bias,
        None => scores,
    };
    dropout.apply(softmax(scores, 3)).matmul(values) // [B, H, T, Dh]
}

/// The additive attention bias for T new tokens that follow each row's earlier keys.
///
/// `key_mask[b][s]` is 1 for a key row `b` may attend to (prefix, real tokens) and 0 for
/// padding; its last `new_len` entries are the new tokens. A query at step t of a row with
/// `past_len` earlier keys sees key s when s ≤ past_len + t (causal) and the key is real.
/// Rows may have different lengths (a batch of KV-cache rows): each is padded at its end to
/// the longest with keys nobody sees. `causal = false` gives an encoder's or cross-attention's
/// bias (padding only).
///
/// Only each key's visibility `[B, S]` and each row's past length go to the device; the
/// `[B, 1, T, S]` bias is built there (on a GPU, a few fused element-wise kernels). A decoding
/// step's (T = 1) is no larger than the visibility, so it goes up as it is: there a key is
/// visible exactly when it is real, since the row's keys end at its new token.
pub fn attention_bias(
    key_mask: &[Vec<f32>],
    new_len: usize,
    causal: bool,
    device: &burn::tensor::Device,
) -> Tensor<4> {
    let batch = key_mask.len();
    let total = key_mask.iter().map(Vec::len).max().unwrap_or(0);
    let shape = [batch, 1, new_len, total];
    let visible: Vec<f32> = key_mask.iter().flat_map(|row| (0..total).map(move |s| if row.get(s).is_some_and(|&m| m > 0.5) { 1.0 } else { 0.0 })).collect();
    if new_len == 1 {
        let bias = visible.into_iter().map(|v| if v > 0.5 { 0.0 } else { MASKED }).collect();
        return crate::tensors::floats(bias, shape, device);
    }
    let mut allowed = crate::tensors::floats(visible, [batch, 1, 1, total], device).greater_elem(0.5).expand(shape);
    if causal {
        let past: Vec<i64> = key_mask.iter().map(|row| row.len().saturating_sub(new_len) as i64).collect();
        let past = crate::tensors::ints(past, [batch, 1, 1, 1], device);
        let step = Tensor::<1, Int>::arange(0..new_len as i64, device).reshape([1, 1, new_len, 1]);
        let last_seen = (past.expand([batch, 1, new_len, 1]) + step.expand([batch, 1, new_len, 1])).expand(shape); // past_len + t
        let key = Tensor::<1, Int>::arange(0..total as i64, device).reshape([1, 1, 1, total]).expand(shape);
        allowed = allowed.bool_and(key.lower_equal(last_seen));
    }
    Tensor::<4>::zeros(shape, device).mask_fill(allowed.bool_not(), MASKED)
}

/// Attention as one CPU op under autodiff, forward and backward
/// ([`prefix_tune_kernels::attention`]): as tensor operations it is a dozen single-threaded
/// passes each way, each with a fresh allocation. The dropout mask is drawn as the tensor
/// form's ([`Site::keep_mask`]), so a seeded run draws the same masks either way.
#[cfg(feature = "flex")]
mod flex {
    use std::sync::Arc;

    use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::backend::autodiff::Autodiff;
    use burn::backend::{backend_extension, tensor::FloatTensor, Flex};
    use burn::tensor::{Shape, Tensor};
    use burn_flex::FlexTensor;
    use prefix_tune_kernels::attention::{self as kernel, Dims, Dropout};

    use crate::dropout::Site;
    use crate::flex::{tensor, values};

    pub fn attend(queries: Tensor<4>, keys: Tensor<4>, values: Tensor<4>, bias: Option<Tensor<4>>, scale: f32, site: Site) -> Tensor<4> {
        let [batch, heads, t, _] = queries.dims();
        let s = keys.dims()[2];
        let device = queries.device();
        let has_bias = bias.is_some();
        // Absent inputs travel as one-element stand-ins the op does not read.
        let bias = bias.unwrap_or_else(|| Tensor::zeros([1, 1, 1, 1], &device));
        let dropout = site.p;
        let keep = if site.is_off() { Tensor::zeros([1, 1, 1, 1], &device) } else { site.keep_mask::<4>(Shape::new([batch, heads, t, s]), &device) };
        let out = <burn::backend::Dispatch as CpuAttention>::cpu_attention(
            queries.into_dispatch(),
            keys.into_dispatch(),
            values.into_dispatch(),
            bias.into_dispatch(),
            keep.into_dispatch(),
            has_bias,
            dropout,
            scale as f64,
        );
        Tensor::from_dispatch(out)
    }

    #[backend_extension(Autodiff, Flex)]
    pub trait CpuAttention: burn::backend::Backend {
        /// Softmax attention; differentiable in queries, keys and values. `bias` is read when
        /// `has_bias`, `keep` when `dropout > 0`.
        #[allow(clippy::too_many_arguments)]
        fn cpu_attention(
            queries: FloatTensor<Self>,
            keys: FloatTensor<Self>,
            values: FloatTensor<Self>,
            bias: FloatTensor<Self>,
            keep: FloatTensor<Self>,
            has_bias: bool,
            dropout: f64,
            scale: f64,
        ) -> FloatTensor<Self>;
    }

    /// Contiguous inputs of one call and its sizes.
    #[derive(Debug)]
    struct Inputs {
        q: FlexTensor,
        k: FlexTensor,
        v: FlexTensor,
        bias: Option<FlexTensor>,
        keep: Option<FlexTensor>,
        p: f32,
        scale: f32,
        dims: Dims,
        out_shape: Shape,
    }

    impl Inputs {
        #[allow(clippy::too_many_arguments)]
        fn new(q: FlexTensor, k: FlexTensor, v: FlexTensor, bias: FlexTensor, keep: FlexTensor, has_bias: bool, dropout: f64, scale: f64) -> Self {
            let shape = q.layout().shape().clone(); // [B, H, T, Dh]
            let s = k.layout().shape()[2];
            let dims = Dims { groups: shape[0] * shape[1], heads: shape[1], t: shape[2], s, dh: shape[3] };
            Inputs {
                q: q.to_contiguous(),
                k: k.to_contiguous(),
                v: v.to_contiguous(),
                bias: has_bias.then(|| bias.to_contiguous()),
                keep: (dropout > 0.0).then(|| keep.to_contiguous()),
                p: dropout as f32,
                scale: scale as f32,
                dims,
                out_shape: shape,
            }
        }

        fn dropout(&self) -> Option<Dropout<'_>> {
            self.keep.as_ref().map(|keep| Dropout { keep: values(keep), p: self.p })
        }

        /// `out` and the softmax probabilities.
        fn forward(&self) -> (FlexTensor, Vec<f32>) {
            let bias = self.bias.as_ref().map(values);
            let (out, probs) = kernel::forward(&self.dims, values(&self.q), values(&self.k), values(&self.v), bias, self.dropout(), self.scale);
            (tensor(out, self.out_shape.clone()), probs)
        }
    }

    impl CpuAttention for Flex {
        fn cpu_attention(queries: FlexTensor, keys: FlexTensor, values: FlexTensor, bias: FlexTensor, keep: FlexTensor, has_bias: bool, dropout: f64, scale: f64) -> FlexTensor {
            Inputs::new(queries, keys, values, bias, keep, has_bias, dropout, scale).forward().0
        }
    }

    #[derive(Debug)]
    struct CpuAttentionBackward;

    impl Backward<Flex, 3> for CpuAttentionBackward {
        type State = (Arc<Inputs>, Arc<Vec<f32>>); // the inputs, the softmax probabilities

        fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
            let grad = grads.consume::<Flex>(&ops.node).to_contiguous();
            let (inputs, probs) = ops.state;
            let (q, k, v) = (values(&inputs.q), values(&inputs.k), values(&inputs.v));
            let (dq, dk, dv) = kernel::backward(&inputs.dims, q, k, v, &probs, inputs.dropout(), inputs.scale, values(&grad));
            let [q_node, k_node, v_node] = ops.parents;
            for (node, grad, like) in [(q_node, dq, &inputs.q), (k_node, dk, &inputs.k), (v_node, dv, &inputs.v)] {
                if let Some(node) = node {
                    grads.register::<Flex>(node.id, tensor(grad, like.layout().shape().clone()));
                }
            }
        }
    }

    impl<C: CheckpointStrategy> CpuAttention for Autodiff<Flex, C> {
        fn cpu_attention(
            queries: FloatTensor<Self>,
            keys: FloatTensor<Self>,
            values: FloatTensor<Self>,
            bias: FloatTensor<Self>,
            keep: FloatTensor<Self>,
            has_bias: bool,
            dropout: f64,
            scale: f64,
        ) -> FloatTensor<Self> {
            let (bias, keep) = (bias.primitive().clone(), keep.primitive().clone());
            match CpuAttentionBackward.prepare::<C>([queries.node(), keys.node(), values.node()]).compute_bound().stateful() {
                OpsKind::Tracked(prep) => {
                    let (q, k, v) = (queries.primitive().clone(), keys.primitive().clone(), values.primitive().clone());
                    let inputs = Inputs::new(q, k, v, bias, keep, has_bias, dropout, scale);
                    let (out, probs) = inputs.forward();
                    prep.finish((Arc::new(inputs), Arc::new(probs)), out)
                }
                OpsKind::UnTracked(prep) => {
                    let (q, k, v) = (queries.into_primitive(), keys.into_primitive(), values.into_primitive());
                    prep.finish(Flex::cpu_attention(q, k, v, bias, keep, has_bias, dropout, scale))
                }
            }
        }
    }
}

#[cfg(feature = "gpu")]
mod gpu;
