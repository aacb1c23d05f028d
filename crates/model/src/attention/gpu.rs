//! Attention as the kernels of `shaders/` on a GPU ([`prefix_tune_shaders::attention`]): one
//! kernel forward, two backward, where the tensor form is two matmuls, the bias, a softmax and
//! the dropout forward and twice as many steps back. The dropout mask is the tensor form's
//! ([`Site::keep_mask`]), so a seeded run draws the same masks either way.
//!
//! The earlier keys and values (a prefix) reach the kernels apart from the current ones, each
//! read where it lies: no concatenation per layer, and a prefix shared by the batch's rows
//! (`[1, H, P, Dh]`) gets its gradient summed over them by the key kernel, where broadcast
//! first it would take one more launch per key and value and layer. GPT-2's queries, keys and
//! values may come packed in its projection ([`attend_packed`]), and their gradient goes back
//! packed. A decoding step reads a KV cache's keys and values in its pools through each key's
//! pool row ([`Memory::Paged`]), where they were gathered first per layer and step.

use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::Autodiff;
use burn::backend::fusion::custom::TensorSpec;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{backend_extension, Cube};
use burn::tensor::{Int, Shape, Tensor};
use prefix_tune_shaders::attention::{self, KeysValues, ProjectionGrads, Projections};
use prefix_tune_shaders::{CubeBackend, CubeTensor};

use super::{KeyValue, Memory, Pages};
use crate::dropout::Site;

/// Whether the kernels take these shapes: a row of scores fits in shared memory, every tensor
/// in 32-bit indices. The paged kernel has no backward pass and no dropout: a pass that needs
/// either (none does: a KV cache serves decoding) has its keys gathered first.
pub fn takes(queries: &Tensor<4>, memory: &Memory, dropout: Site) -> bool {
    let [batch, heads, t, _] = queries.dims();
    let rows = batch * heads * t;
    match memory {
        Memory::Parts { earlier, current } => fits(rows, memory.len(), &[&current.keys, queries], earlier.as_ref()),
        Memory::Paged(pages) => {
            let counts = [pages.keys.shape().num_elements(), pages.rows.shape().num_elements(), queries.shape().num_elements(), rows * memory.len()];
            !queries.device().is_autodiff() && dropout.is_off() && memory.len() <= attention::MAX_KEYS && prefix_tune_shaders::fits(&counts)
        }
    }
}

/// [`takes`] for a packed projection `[B, T, 3·H, Dh]` and the earlier keys.
pub fn takes_packed(qkv: &Tensor<4>, earlier: Option<&KeyValue>) -> bool {
    let [batch, t, heads, _] = qkv.dims();
    let s = t + earlier.map_or(0, KeyValue::seq_len);
    fits(batch * heads / 3 * t, s, &[qkv], earlier)
}

/// Whether `rows` query rows of `keys` scores each, these tensors and the earlier keys fit.
fn fits(rows: usize, keys: usize, tensors: &[&Tensor<4>], earlier: Option<&KeyValue>) -> bool {
    let mut counts: Vec<usize> = tensors.iter().map(|t| t.shape().num_elements()).collect();
    counts.push(rows * keys);
    counts.extend(earlier.map(|earlier| earlier.keys.shape().num_elements()));
    keys <= attention::MAX_KEYS && prefix_tune_shaders::fits(&counts)
}

pub fn attend(queries: Tensor<4>, memory: Memory, bias: Option<Tensor<4>>, scale: f32, dropout: Site) -> Tensor<3> {
    let [batch, heads, t, _] = queries.dims();
    let shape = Shape::new([batch, heads, t, memory.len()]);
    match memory {
        Memory::Parts { earlier, current } => launch([queries, current.keys, current.values], earlier, shape, false, bias, scale, dropout),
        Memory::Paged(pages) => paged(queries, pages, bias, scale),
    }
}

/// Attention over a KV cache's pools read where they lie ([`attention::forward_paged`]).
fn paged(queries: Tensor<4>, pages: Pages, bias: Option<Tensor<4>>, scale: f32) -> Tensor<3> {
    let bias = bias.unwrap_or_else(|| Tensor::zeros([1, 1, 1, 1], &queries.device()));
    let out = <burn::backend::Dispatch as CubePagedAttention>::cube_paged_attention(
        queries.into_dispatch(),
        pages.keys.into_dispatch(),
        pages.values.into_dispatch(),
        pages.rows.into_dispatch(),
        bias.into_dispatch(),
        scale,
    );
    Tensor::from_dispatch(out)
}

#[backend_extension(Cube, Fusion)]
pub trait CubePagedAttention: burn::backend::Backend {
    /// Softmax attention over pools `[H·capacity, Dh]` through each key's pool row (`rows`
    /// `[B, H, S]`), its heads merged (`[B, T, H·Dh]`).
    #[fusion(meta = |queries, _pool_keys, _pool_values, _rows, _bias, _scale| merged_spec(queries, Layout { front: false, packed: false }))]
    fn cube_paged_attention(queries: FloatTensor<Self>, pool_keys: FloatTensor<Self>, pool_values: FloatTensor<Self>, rows: IntTensor<Self>, bias: FloatTensor<Self>, scale: f32) -> FloatTensor<Self>;
}

impl CubePagedAttention for CubeBackend {
    fn cube_paged_attention(queries: CubeTensor, pool_keys: CubeTensor, pool_values: CubeTensor, rows: CubeTensor, bias: CubeTensor, scale: f32) -> CubeTensor {
        attention::forward_paged(queries, KeysValues { keys: pool_keys, values: pool_values }, rows, bias, scale)
    }
}

/// Whether [`attend_step`] takes these: one new token per row, no gradient, no dropout, the
/// scores of a row in shared memory and every tensor in 32-bit indices.
pub fn takes_step(queries: &Tensor<4>, pools: &(Tensor<2>, Tensor<2>), slots: &Tensor<3, Int>, dropout: Site) -> bool {
    let [batch, heads, t, _] = queries.dims();
    let keys = slots.dims()[2];
    let counts = [pools.0.shape().num_elements(), slots.shape().num_elements(), queries.shape().num_elements(), batch * heads * keys];
    t == 1 && !queries.device().is_autodiff() && dropout.is_off() && pools.0.dtype() == queries.dtype() && keys <= attention::MAX_KEYS && prefix_tune_shaders::fits(&counts)
}

/// A decoding step's attention that writes the step's keys and values (`current`) into the
/// pools at rows `writes` as it reads them ([`attention::forward_step`]): the output
/// `[B, 1, H·Dh]` and the pools.
pub fn attend_step(queries: Tensor<4>, current: KeyValue, pools: (Tensor<2>, Tensor<2>), slots: Tensor<3, Int>, writes: Tensor<1, Int>, bias: Option<Tensor<4>>, scale: f32) -> (Tensor<3>, (Tensor<2>, Tensor<2>)) {
    let bias = bias.unwrap_or_else(|| Tensor::zeros([1, 1, 1, 1], &queries.device()));
    let (out, keys, values) = <burn::backend::Dispatch as CubeStepAttention>::cube_step_attention(
        queries.into_dispatch(),
        current.keys.into_dispatch(),
        current.values.into_dispatch(),
        pools.0.into_dispatch(),
        pools.1.into_dispatch(),
        slots.into_dispatch(),
        writes.into_dispatch(),
        bias.into_dispatch(),
        scale,
    );
    (Tensor::from_dispatch(out), (Tensor::from_dispatch(keys), Tensor::from_dispatch(values)))
}

#[backend_extension(Cube, Fusion)]
pub trait CubeStepAttention: burn::backend::Backend {
    /// One new query per row over pools `[H·capacity, Dh]` read through `slots` `[B, H, S]`, the
    /// step's keys and values written at pool rows `writes` `[B·H]`: the output (heads merged,
    /// `[B, 1, H·Dh]`) and the pools.
    #[allow(clippy::too_many_arguments)]
    #[fusion(meta = |queries, _keys, _values, pool_keys, pool_values, _slots, _writes, _bias, _scale| (merged_spec(queries, Layout { front: false, packed: false }), pool_keys.clone(), pool_values.clone()))]
    fn cube_step_attention(queries: FloatTensor<Self>, keys: FloatTensor<Self>, values: FloatTensor<Self>, pool_keys: FloatTensor<Self>, pool_values: FloatTensor<Self>, slots: IntTensor<Self>, writes: IntTensor<Self>, bias: FloatTensor<Self>, scale: f32) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

impl CubeStepAttention for CubeBackend {
    #[allow(clippy::too_many_arguments)]
    fn cube_step_attention(queries: CubeTensor, keys: CubeTensor, values: CubeTensor, pool_keys: CubeTensor, pool_values: CubeTensor, slots: CubeTensor, writes: CubeTensor, bias: CubeTensor, scale: f32) -> (CubeTensor, CubeTensor, CubeTensor) {
        let (out, pools) = attention::forward_step(queries, KeysValues { keys, values }, KeysValues { keys: pool_keys, values: pool_values }, slots, writes, bias, scale);
        (out, pools.keys, pools.values)
    }
}

/// [`super::attend_packed`] through the kernels: the gradient of `qkv` comes back as one tensor.
pub fn attend_packed(qkv: Tensor<4>, earlier: Option<KeyValue>, bias: Option<Tensor<4>>, scale: f32, dropout: Site) -> Tensor<3> {
    let [batch, t, heads, _] = qkv.dims();
    let shape = Shape::new([batch, heads / 3, t, t + earlier.as_ref().map_or(0, KeyValue::seq_len)]);
    let device = qkv.device();
    // Keys and values are in `qkv`: untracked stand-ins take their places.
    let stand_in = || Tensor::<4>::empty([1, 1, 1, 1], &device);
    launch([qkv, stand_in(), stand_in()], earlier, shape, true, bias, scale, dropout)
}

/// The op over queries, keys and values (packed: the projection and two stand-ins) after
/// `earlier`, with scores of `shape` `[B, H, T, S]`.
#[allow(clippy::too_many_arguments)]
fn launch([queries, keys, values]: [Tensor<4>; 3], earlier: Option<KeyValue>, shape: Shape, packed: bool, bias: Option<Tensor<4>>, scale: f32, dropout: Site) -> Tensor<3> {
    let device = queries.device();
    // Absent inputs travel as stand-ins: a bias of size 1 broadcasts (0 adds nothing); the
    // keep mask is not read without dropout, so the bias stands in for it (a tensor of its own
    // would be one more kernel launch per layer and decoding step); without earlier keys, an
    // empty one-element tensor (no launch) stands in for them.
    let bias = bias.unwrap_or_else(|| Tensor::zeros([1, 1, 1, 1], &device));
    let keep = if dropout.is_off() { bias.clone() } else { dropout.keep_mask::<4>(shape, &device) };
    let has_front = earlier.is_some();
    let front = earlier.unwrap_or_else(|| {
        let stand_in = || Tensor::<4>::empty([1, 1, 1, 1], &device);
        KeyValue { keys: stand_in(), values: stand_in() }
    });
    let out = <burn::backend::Dispatch as CubeAttention>::cube_attention(
        queries.into_dispatch(),
        front.keys.into_dispatch(),
        front.values.into_dispatch(),
        keys.into_dispatch(),
        values.into_dispatch(),
        bias.into_dispatch(),
        keep.into_dispatch(),
        Layout { front: has_front, packed },
        scale,
        dropout.p,
    );
    Tensor::from_dispatch(out)
}

/// Which of the op's inputs are real: the front's keys and values (else stand-ins), and whether
/// the queries are the packed projection (keys and values then stand-ins).
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    front: bool,
    packed: bool,
}

#[backend_extension(Autodiff, Cube, Fusion)]
pub trait CubeAttention: burn::backend::Backend {
    /// Softmax attention over the front's keys (read when `front`) then the current ones, its
    /// heads merged (`[B, T, H·Dh]`); differentiable in queries, keys and values.
    #[allow(clippy::too_many_arguments)]
    #[fusion(meta = |queries, _front_keys, _front_values, _keys, _values, _bias, _keep, layout, _scale, _dropout| merged_spec(queries, *layout))]
    fn cube_attention(queries: FloatTensor<Self>, front_keys: FloatTensor<Self>, front_values: FloatTensor<Self>, keys: FloatTensor<Self>, values: FloatTensor<Self>, bias: FloatTensor<Self>, keep: FloatTensor<Self>, layout: Layout, scale: f32, dropout: f64) -> FloatTensor<Self>;
}

/// `[B, H, T, Dh]` of queries `[B, H, T, Dh]`, or of a packed projection `[B, T, 3·H, Dh]`.
fn query_dims(queries: &TensorSpec, layout: Layout) -> [usize; 4] {
    let q = &queries.shape;
    if layout.packed { [q[0], q[2] / 3, q[1], q[3]] } else { [q[0], q[1], q[2], q[3]] }
}

/// The output `[B, T, H·Dh]`.
fn merged_spec(queries: &TensorSpec, layout: Layout) -> TensorSpec {
    let [batch, heads, t, head_dim] = query_dims(queries, layout);
    TensorSpec::new(Shape::new([batch, t, heads * head_dim]), queries.dtype)
}

/// The scores `[B, H, T, S]`: the front's keys (when there is one) and the current ones (T of
/// them when packed).
fn scores_spec(queries: &TensorSpec, front_keys: &TensorSpec, keys: &TensorSpec, layout: Layout) -> TensorSpec {
    let [batch, heads, t, _] = query_dims(queries, layout);
    let current = if layout.packed { t } else { keys.shape[2] };
    let s = current + if layout.front { front_keys.shape[2] } else { 0 };
    TensorSpec::new(Shape::new([batch, heads, t, s]), queries.dtype)
}

/// The tensors of one call as the kernels take them.
fn parts(queries: CubeTensor, [front_keys, front_values, keys, values]: [CubeTensor; 4], layout: Layout) -> (Projections, Option<KeysValues>) {
    let projections = match layout.packed {
        true => Projections::Packed(queries),
        false => Projections::Apart { queries, current: KeysValues { keys, values } },
    };
    (projections, layout.front.then_some(KeysValues { keys: front_keys, values: front_values }))
}

/// The forward pass keeping the softmax, and the backward pass: their own extension so that
/// fusion defers them like any other op.
#[backend_extension(Cube, Fusion)]
pub trait CubeAttentionPasses: burn::backend::Backend {
    /// `(output, softmax before dropout)`.
    #[allow(clippy::too_many_arguments)]
    #[fusion(meta = |queries, front_keys, _front_values, keys, _values, _bias, _keep, layout, _scale, _dropout| (merged_spec(queries, *layout), scores_spec(queries, front_keys, keys, *layout)))]
    fn cube_attention_forward(queries: FloatTensor<Self>, front_keys: FloatTensor<Self>, front_values: FloatTensor<Self>, keys: FloatTensor<Self>, values: FloatTensor<Self>, bias: FloatTensor<Self>, keep: FloatTensor<Self>, layout: Layout, scale: f32, dropout: f64) -> (FloatTensor<Self>, FloatTensor<Self>);
    /// The gradients in queries, the front's keys and values (stand-ins shaped as theirs
    /// without a front), and the current keys and values, from the output's `grad`
    /// `[B, T, H·Dh]`.
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    #[fusion(meta = |queries, front_keys, front_values, keys, values, _probs, _keep, _grad, _layout, _scale, _dropout| (queries.clone(), front_keys.clone(), front_values.clone(), keys.clone(), values.clone()))]
    fn cube_attention_backward(queries: FloatTensor<Self>, front_keys: FloatTensor<Self>, front_values: FloatTensor<Self>, keys: FloatTensor<Self>, values: FloatTensor<Self>, probs: FloatTensor<Self>, keep: FloatTensor<Self>, grad: FloatTensor<Self>, layout: Layout, scale: f32, dropout: f64) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

impl CubeAttention for CubeBackend {
    #[allow(clippy::too_many_arguments)]
    fn cube_attention(queries: CubeTensor, front_keys: CubeTensor, front_values: CubeTensor, keys: CubeTensor, values: CubeTensor, bias: CubeTensor, keep: CubeTensor, layout: Layout, scale: f32, dropout: f64) -> CubeTensor {
        let (projections, front) = parts(queries, [front_keys, front_values, keys, values], layout);
        attention::forward(projections, front, bias, keep, scale, dropout).0
    }
}

impl CubeAttentionPasses for CubeBackend {
    #[allow(clippy::too_many_arguments)]
    fn cube_attention_forward(queries: CubeTensor, front_keys: CubeTensor, front_values: CubeTensor, keys: CubeTensor, values: CubeTensor, bias: CubeTensor, keep: CubeTensor, layout: Layout, scale: f32, dropout: f64) -> (CubeTensor, CubeTensor) {
        let (projections, front) = parts(queries, [front_keys, front_values, keys, values], layout);
        attention::forward(projections, front, bias, keep, scale, dropout)
    }

    #[allow(clippy::too_many_arguments)]
    fn cube_attention_backward(
        queries: CubeTensor,
        front_keys: CubeTensor,
        front_values: CubeTensor,
        keys: CubeTensor,
        values: CubeTensor,
        probs: CubeTensor,
        keep: CubeTensor,
        grad: CubeTensor,
        layout: Layout,
        scale: f32,
        dropout: f64,
    ) -> (CubeTensor, CubeTensor, CubeTensor, CubeTensor, CubeTensor) {
        // What has no gradient (the front's keys and values without a front, the keys and
        // values beside a packed projection) gets its stand-in back, shaped as the fusion meta
        // says.
        let stand_ins = [front_keys.clone(), front_values.clone(), keys.clone(), values.clone()];
        let (projections, front) = parts(queries, [front_keys, front_values, keys, values], layout);
        let (grads, grad_front) = attention::backward(projections, front, probs, keep, grad, scale, dropout);
        let [front_keys, front_values, keys, values] = stand_ins;
        let (grad_front_keys, grad_front_values) = grad_front.map_or((front_keys, front_values), |g| (g.keys, g.values));
        match grads {
            ProjectionGrads::Apart { queries, current } => (queries, grad_front_keys, grad_front_values, current.keys, current.values),
            ProjectionGrads::Packed(packed) => (packed, grad_front_keys, grad_front_values, keys, values),
        }
    }
}

#[derive(Debug)]
struct AttentionBackward {
    layout: Layout,
    scale: f32,
    dropout: f64,
}

/// Queries, the front's keys and values, the current keys and values, the softmax, the keep
/// mask.
type Saved = [FloatTensor<Cube>; 7];

impl Backward<Cube, 5> for AttentionBackward {
    type State = Saved;

    fn backward(self, ops: Ops<Self::State, 5>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let grad = grads.consume::<Cube>(&ops.node);
        let [queries, front_keys, front_values, keys, values, probs, keep] = ops.state;
        let (dq, dfk, dfv, dk, dv) = Cube::cube_attention_backward(queries, front_keys, front_values, keys, values, probs, keep, grad, self.layout, self.scale, self.dropout);
        for (parent, input_grad) in ops.parents.into_iter().zip([dq, dfk, dfv, dk, dv]) {
            if let Some(parent) = parent {
                grads.register::<Cube>(parent.id, input_grad);
            }
        }
    }
}

impl<C: CheckpointStrategy> CubeAttention for Autodiff<Cube, C> {
    #[allow(clippy::too_many_arguments)]
    fn cube_attention(
        queries: FloatTensor<Self>,
        front_keys: FloatTensor<Self>,
        front_values: FloatTensor<Self>,
        keys: FloatTensor<Self>,
        values: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        keep: FloatTensor<Self>,
        layout: Layout,
        scale: f32,
        dropout: f64,
    ) -> FloatTensor<Self> {
        let (bias, keep) = (bias.primitive().clone(), keep.primitive().clone());
        let backward = AttentionBackward { layout, scale, dropout };
        let inputs = [queries, front_keys, front_values, keys, values];
        match backward.prepare::<C>(inputs.each_ref().map(|t| t.node())).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let [q, fk, fv, k, v] = inputs.map(|t| t.primitive().clone());
                let (out, probs) = Cube::cube_attention_forward(q.clone(), fk.clone(), fv.clone(), k.clone(), v.clone(), bias, keep.clone(), layout, scale, dropout);
                prep.finish([q, fk, fv, k, v, probs, keep], out)
            }
            OpsKind::UnTracked(prep) => {
                let [q, fk, fv, k, v] = inputs.map(|t| t.into_primitive());
                prep.finish(Cube::cube_attention(q, fk, fv, k, v, bias, keep, layout, scale, dropout))
            }
        }
    }
}
