//! Attention with a prefix: the one function GPT-2's self-attention and BART's self- and
//! cross-attention all go through.
//!
//! A prefix (Li & Liang, 2021) is nothing but extra keys and values that every real token may
//! attend to. Whether they come from a trained prefix, a KV cache of earlier tokens, or an
//! encoder, the computation is the same: concatenate them in front of the current keys and
//! values, mask what a query must not see, softmax.

use burn::tensor::{activation::softmax, Distribution, Int, Tensor};

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
/// - returns `[B, T, H·Dh]`, the heads merged back (the GPU's kernel writes them so)
pub fn attend(
    queries: Tensor<4>,
    keys: Tensor<4>,
    values: Tensor<4>,
    bias: Option<Tensor<4>>,
    scale: f32,
    dropout: f64,
) -> Tensor<3> {
    #[cfg(feature = "flex")]
    if queries.device().is_autodiff() && crate::backend::is_cpu(&queries.device()) && queries.dtype() == burn::tensor::DType::F32 {
        return merge_heads(flex::attend(queries, keys, values, bias, scale, dropout));
    }
    #[cfg(feature = "gpu")]
    if crate::backend::is_gpu(&queries.device()) && queries.dtype() == burn::tensor::DType::F32 && gpu::takes(&queries, &keys) {
        return gpu::attend(queries, keys, values, bias, scale, dropout);
    }
    composed(queries, keys, values, bias, scale, dropout)
}

/// [`attend`] as tensor operations (every backend; the reference for the fused ops).
pub fn composed(queries: Tensor<4>, keys: Tensor<4>, values: Tensor<4>, bias: Option<Tensor<4>>, scale: f32, dropout: f64) -> Tensor<3> {
    merge_heads(per_head(queries, keys, values, bias, scale, dropout))
}

/// `[B, H, T, Dh]` → `[B, T, H·Dh]`.
fn merge_heads(heads: Tensor<4>) -> Tensor<3> {
    let [batch, n_heads, seq, head_dim] = heads.dims();
    heads.swap_dims(1, 2).reshape([batch, seq, n_heads * head_dim])
}

/// [`composed`] before the heads are merged: `[B, H, T, Dh]`.
fn per_head(queries: Tensor<4>, keys: Tensor<4>, values: Tensor<4>, bias: Option<Tensor<4>>, scale: f32, dropout: f64) -> Tensor<4> {
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

/// The keep mask of [`apply_dropout`]: 1 with probability `1 − p`, else 0. On the CPU backend
/// three draws of Burn's generator seed a mask drawn on all cores
/// ([`prefix_tune_kernels::dropout`]), so a seeded run stays reproducible; Burn's own
/// Bernoulli draw there is one value at a time on one core.
fn keep_mask<const D: usize>(shape: burn::tensor::Shape, p: f64, device: &burn::tensor::Device) -> Tensor<D> {
    #[cfg(feature = "flex")]
    if crate::backend::is_cpu(device) {
        let draws = crate::tensors::to_f32s(Tensor::<1>::random([3], Distribution::Default, device));
        let seed = draws.iter().fold(0u64, |seed, draw| seed.rotate_left(24) ^ draw.to_bits() as u64);
        let mask = prefix_tune_kernels::dropout::keep_mask(seed, shape.num_elements(), p);
        return Tensor::from_data(burn::tensor::TensorData::new(mask, shape), device);
    }
    Tensor::<D>::random(shape, Distribution::Bernoulli(1.0 - p), device)
}

/// Inverted dropout as PyTorch does it: zero with probability `p`, scale the rest by 1/(1-p).
pub fn apply_dropout<const D: usize>(x: Tensor<D>, p: f64) -> Tensor<D> {
    if p <= 0.0 {
        return x;
    }
    let keep = keep_mask::<D>(x.shape(), p, &x.device());
    x * keep / (1.0 - p)
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
/// `[B, 1, T, S]` bias is built there (on a GPU, a few fused element-wise kernels).
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
/// passes each way, each with a fresh allocation. The dropout mask is drawn as
/// [`apply_dropout`] draws it, so a seeded run draws the same masks either way.
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

    use crate::flex::{tensor, values};

    pub fn attend(queries: Tensor<4>, keys: Tensor<4>, values: Tensor<4>, bias: Option<Tensor<4>>, scale: f32, dropout: f64) -> Tensor<4> {
        let [batch, heads, t, _] = queries.dims();
        let s = keys.dims()[2];
        let device = queries.device();
        let has_bias = bias.is_some();
        // Absent inputs travel as one-element stand-ins the op does not read.
        let bias = bias.unwrap_or_else(|| Tensor::zeros([1, 1, 1, 1], &device));
        let keep = if dropout > 0.0 { super::keep_mask::<4>(Shape::new([batch, heads, t, s]), dropout, &device) } else { Tensor::zeros([1, 1, 1, 1], &device) };
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

/// Attention as the kernels of `shaders/` on a GPU ([`prefix_tune_shaders::attention`]): one
/// kernel forward, two backward, where the tensor form is two matmuls, the bias, a softmax and
/// the dropout forward and twice as many steps back. The dropout mask is drawn as
/// [`apply_dropout`] draws it, so a seeded run draws the same masks either way.
#[cfg(feature = "gpu")]
mod gpu {
    use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::backend::autodiff::Autodiff;
    use burn::backend::fusion::custom::TensorSpec;
    use burn::backend::tensor::FloatTensor;
    use burn::backend::{backend_extension, Cube};
    use burn::tensor::{Shape, Tensor};
    use prefix_tune_shaders::{attention, CubeBackend, CubeTensor};

    /// Whether the kernels take these shapes: a row of scores fits in shared memory, every
    /// tensor in 32-bit indices.
    pub fn takes(queries: &Tensor<4>, keys: &Tensor<4>) -> bool {
        let [batch, heads, t, _] = queries.dims();
        let s = keys.dims()[2];
        s <= attention::MAX_KEYS && prefix_tune_shaders::fits(&[batch * heads * t * s, keys.shape().num_elements()])
    }

    pub fn attend(queries: Tensor<4>, keys: Tensor<4>, values: Tensor<4>, bias: Option<Tensor<4>>, scale: f32, dropout: f64) -> Tensor<3> {
        let [batch, heads, t, _] = queries.dims();
        let s = keys.dims()[2];
        let device = queries.device();
        // Absent inputs travel as stand-ins: a bias of size 1 broadcasts (0 adds nothing); the
        // keep mask is not read without dropout, so the bias stands in for it (a tensor of its
        // own would be one more kernel launch per layer and decoding step).
        let bias = bias.unwrap_or_else(|| Tensor::zeros([1, 1, 1, 1], &device));
        let keep = if dropout > 0.0 { super::keep_mask::<4>(Shape::new([batch, heads, t, s]), dropout, &device) } else { bias.clone() };
        let out = <burn::backend::Dispatch as CubeAttention>::cube_attention(queries.into_dispatch(), keys.into_dispatch(), values.into_dispatch(), bias.into_dispatch(), keep.into_dispatch(), scale, dropout);
        Tensor::from_dispatch(out)
    }

    #[backend_extension(Autodiff, Cube, Fusion)]
    pub trait CubeAttention: burn::backend::Backend {
        /// Softmax attention, its heads merged (`[B, T, H·Dh]`); differentiable in queries, keys
        /// and values.
        #[fusion(meta = |queries, _keys, _values, _bias, _keep, _scale, _dropout| merged_spec(queries))]
        fn cube_attention(queries: FloatTensor<Self>, keys: FloatTensor<Self>, values: FloatTensor<Self>, bias: FloatTensor<Self>, keep: FloatTensor<Self>, scale: f32, dropout: f64) -> FloatTensor<Self>;
    }

    /// The output `[B, T, H·Dh]` of queries `[B, H, T, Dh]`.
    fn merged_spec(queries: &TensorSpec) -> TensorSpec {
        let q = &queries.shape;
        TensorSpec::new(Shape::new([q[0], q[2], q[1] * q[3]]), queries.dtype)
    }

    /// `[B, H, T, S]` from queries `[B, H, T, Dh]` and keys `[B, H, S, Dh]`.
    fn scores_spec(queries: &TensorSpec, keys: &TensorSpec) -> TensorSpec {
        let q = &queries.shape;
        TensorSpec::new(Shape::new([q[0], q[1], q[2], keys.shape[2]]), queries.dtype)
    }

    /// The forward pass keeping the softmax, and the backward pass: their own extension so
    /// that fusion defers them like any other op.
    #[backend_extension(Cube, Fusion)]
    pub trait CubeAttentionPasses: burn::backend::Backend {
        /// `(output, softmax before dropout)`.
        #[fusion(meta = |queries, keys, _values, _bias, _keep, _scale, _dropout| (merged_spec(queries), scores_spec(queries, keys)))]
        fn cube_attention_forward(queries: FloatTensor<Self>, keys: FloatTensor<Self>, values: FloatTensor<Self>, bias: FloatTensor<Self>, keep: FloatTensor<Self>, scale: f32, dropout: f64) -> (FloatTensor<Self>, FloatTensor<Self>);
        /// The gradients in queries, keys and values, from the output's `grad` `[B, T, H·Dh]`.
        #[allow(clippy::too_many_arguments)]
        #[fusion(meta = |queries, keys, values, _probs, _keep, _grad, _scale, _dropout| (queries.clone(), keys.clone(), values.clone()))]
        fn cube_attention_backward(queries: FloatTensor<Self>, keys: FloatTensor<Self>, values: FloatTensor<Self>, probs: FloatTensor<Self>, keep: FloatTensor<Self>, grad: FloatTensor<Self>, scale: f32, dropout: f64) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
    }

    impl CubeAttention for CubeBackend {
        fn cube_attention(queries: CubeTensor, keys: CubeTensor, values: CubeTensor, bias: CubeTensor, keep: CubeTensor, scale: f32, dropout: f64) -> CubeTensor {
            attention::forward(queries, keys, values, bias, keep, scale, dropout).0
        }
    }

    impl CubeAttentionPasses for CubeBackend {
        fn cube_attention_forward(queries: CubeTensor, keys: CubeTensor, values: CubeTensor, bias: CubeTensor, keep: CubeTensor, scale: f32, dropout: f64) -> (CubeTensor, CubeTensor) {
            attention::forward(queries, keys, values, bias, keep, scale, dropout)
        }

        fn cube_attention_backward(queries: CubeTensor, keys: CubeTensor, values: CubeTensor, probs: CubeTensor, keep: CubeTensor, grad: CubeTensor, scale: f32, dropout: f64) -> (CubeTensor, CubeTensor, CubeTensor) {
            attention::backward(queries, keys, values, probs, keep, grad, scale, dropout)
        }
    }

    #[derive(Debug)]
    struct AttentionBackward {
        scale: f32,
        dropout: f64,
    }

    /// Queries, keys, values, the softmax, the keep mask.
    type Saved = [FloatTensor<Cube>; 5];

    impl Backward<Cube, 3> for AttentionBackward {
        type State = Saved;

        fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
            let grad = grads.consume::<Cube>(&ops.node);
            let [queries, keys, values, probs, keep] = ops.state;
            let (grad_queries, grad_keys, grad_values) = Cube::cube_attention_backward(queries, keys, values, probs, keep, grad, self.scale, self.dropout);
            for (parent, input_grad) in ops.parents.into_iter().zip([grad_queries, grad_keys, grad_values]) {
                if let Some(parent) = parent {
                    grads.register::<Cube>(parent.id, input_grad);
                }
            }
        }
    }

    impl<C: CheckpointStrategy> CubeAttention for Autodiff<Cube, C> {
        fn cube_attention(queries: FloatTensor<Self>, keys: FloatTensor<Self>, values: FloatTensor<Self>, bias: FloatTensor<Self>, keep: FloatTensor<Self>, scale: f32, dropout: f64) -> FloatTensor<Self> {
            let (bias, keep) = (bias.primitive().clone(), keep.primitive().clone());
            let backward = AttentionBackward { scale, dropout };
            match backward.prepare::<C>([queries.node(), keys.node(), values.node()]).compute_bound().stateful() {
                OpsKind::Tracked(prep) => {
                    let [q, k, v] = [queries, keys, values].map(|t| t.primitive().clone());
                    let (out, probs) = Cube::cube_attention_forward(q.clone(), k.clone(), v.clone(), bias, keep.clone(), scale, dropout);
                    prep.finish([q, k, v, probs, keep], out)
                }
                OpsKind::UnTracked(prep) => prep.finish(Cube::cube_attention(queries.into_primitive(), keys.into_primitive(), values.into_primitive(), bias, keep, scale, dropout)),
            }
        }
    }
}
