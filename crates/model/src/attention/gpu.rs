//! Attention as the kernels of `shaders/` on a GPU ([`prefix_tune_shaders::attention`]): one
//! kernel forward, two backward, where the tensor form is two matmuls, the bias, a softmax and
//! the dropout forward and twice as many steps back. The dropout mask is drawn as
//! [`super::apply_dropout`] draws it, so a seeded run draws the same masks either way.
//!
//! The earlier keys and values (a prefix) reach the kernels apart from the current ones, each
//! read where it lies: no concatenation per layer, and a prefix shared by the batch's rows
//! (`[1, H, P, Dh]`) gets its gradient summed over them by the key kernel, where broadcast
//! first it would take one more launch per key and value and layer.

use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::Autodiff;
use burn::backend::fusion::custom::TensorSpec;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Cube};
use burn::tensor::{Shape, Tensor};
use prefix_tune_shaders::attention::{self, KeysValues};
use prefix_tune_shaders::{CubeBackend, CubeTensor};

use super::{KeyValue, Memory};

/// Whether the kernels take these shapes: a row of scores fits in shared memory, every tensor
/// in 32-bit indices.
pub fn takes(queries: &Tensor<4>, memory: &Memory) -> bool {
    let [batch, heads, t, _] = queries.dims();
    let s = memory.len();
    let mut counts = vec![batch * heads * t * s, memory.current.keys.shape().num_elements()];
    counts.extend(memory.earlier.as_ref().map(|earlier| earlier.keys.shape().num_elements()));
    s <= attention::MAX_KEYS && prefix_tune_shaders::fits(&counts)
}

pub fn attend(queries: Tensor<4>, memory: Memory, bias: Option<Tensor<4>>, scale: f32, dropout: f64) -> Tensor<3> {
    let [batch, heads, t, _] = queries.dims();
    let s = memory.len();
    let device = queries.device();
    // Absent inputs travel as stand-ins: a bias of size 1 broadcasts (0 adds nothing); the
    // keep mask is not read without dropout, so the bias stands in for it (a tensor of its own
    // would be one more kernel launch per layer and decoding step); without earlier keys, an
    // empty one-element tensor (no launch) stands in for them.
    let bias = bias.unwrap_or_else(|| Tensor::zeros([1, 1, 1, 1], &device));
    let keep = if dropout > 0.0 { super::keep_mask::<4>(Shape::new([batch, heads, t, s]), dropout, &device) } else { bias.clone() };
    let has_front = memory.earlier.is_some();
    let front = memory.earlier.unwrap_or_else(|| {
        let stand_in = || Tensor::<4>::empty([1, 1, 1, 1], &device);
        KeyValue { keys: stand_in(), values: stand_in() }
    });
    let current = memory.current;
    let out = <burn::backend::Dispatch as CubeAttention>::cube_attention(
        queries.into_dispatch(),
        front.keys.into_dispatch(),
        front.values.into_dispatch(),
        current.keys.into_dispatch(),
        current.values.into_dispatch(),
        bias.into_dispatch(),
        keep.into_dispatch(),
        has_front,
        scale,
        dropout,
    );
    Tensor::from_dispatch(out)
}

#[backend_extension(Autodiff, Cube, Fusion)]
pub trait CubeAttention: burn::backend::Backend {
    /// Softmax attention over the front's keys (read when `front`) then the current ones, its
    /// heads merged (`[B, T, H·Dh]`); differentiable in queries, keys and values.
    #[allow(clippy::too_many_arguments)]
    #[fusion(meta = |queries, _front_keys, _front_values, _keys, _values, _bias, _keep, _front, _scale, _dropout| merged_spec(queries))]
    fn cube_attention(queries: FloatTensor<Self>, front_keys: FloatTensor<Self>, front_values: FloatTensor<Self>, keys: FloatTensor<Self>, values: FloatTensor<Self>, bias: FloatTensor<Self>, keep: FloatTensor<Self>, front: bool, scale: f32, dropout: f64) -> FloatTensor<Self>;
}

/// The output `[B, T, H·Dh]` of queries `[B, H, T, Dh]`.
fn merged_spec(queries: &TensorSpec) -> TensorSpec {
    let q = &queries.shape;
    TensorSpec::new(Shape::new([q[0], q[2], q[1] * q[3]]), queries.dtype)
}

/// `[B, H, T, S]` from queries `[B, H, T, Dh]`, the front's keys (counted when `front`) and the
/// current ones.
fn scores_spec(queries: &TensorSpec, front_keys: &TensorSpec, keys: &TensorSpec, front: bool) -> TensorSpec {
    let q = &queries.shape;
    let s = keys.shape[2] + if front { front_keys.shape[2] } else { 0 };
    TensorSpec::new(Shape::new([q[0], q[1], q[2], s]), queries.dtype)
}

/// The tensors of one call as the kernels take them.
fn parts(front_keys: CubeTensor, front_values: CubeTensor, keys: CubeTensor, values: CubeTensor, front: bool) -> (Option<KeysValues>, KeysValues) {
    (front.then_some(KeysValues { keys: front_keys, values: front_values }), KeysValues { keys, values })
}

/// The forward pass keeping the softmax, and the backward pass: their own extension so that
/// fusion defers them like any other op.
#[backend_extension(Cube, Fusion)]
pub trait CubeAttentionPasses: burn::backend::Backend {
    /// `(output, softmax before dropout)`.
    #[allow(clippy::too_many_arguments)]
    #[fusion(meta = |queries, front_keys, _front_values, keys, _values, _bias, _keep, front, _scale, _dropout| (merged_spec(queries), scores_spec(queries, front_keys, keys, *front)))]
    fn cube_attention_forward(queries: FloatTensor<Self>, front_keys: FloatTensor<Self>, front_values: FloatTensor<Self>, keys: FloatTensor<Self>, values: FloatTensor<Self>, bias: FloatTensor<Self>, keep: FloatTensor<Self>, front: bool, scale: f32, dropout: f64) -> (FloatTensor<Self>, FloatTensor<Self>);
    /// The gradients in queries, the front's keys and values (stand-ins shaped as theirs
    /// without a front), and the current keys and values, from the output's `grad`
    /// `[B, T, H·Dh]`.
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    #[fusion(meta = |queries, front_keys, front_values, keys, values, _probs, _keep, _grad, _front, _scale, _dropout| (queries.clone(), front_keys.clone(), front_values.clone(), keys.clone(), values.clone()))]
    fn cube_attention_backward(queries: FloatTensor<Self>, front_keys: FloatTensor<Self>, front_values: FloatTensor<Self>, keys: FloatTensor<Self>, values: FloatTensor<Self>, probs: FloatTensor<Self>, keep: FloatTensor<Self>, grad: FloatTensor<Self>, front: bool, scale: f32, dropout: f64) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

impl CubeAttention for CubeBackend {
    #[allow(clippy::too_many_arguments)]
    fn cube_attention(queries: CubeTensor, front_keys: CubeTensor, front_values: CubeTensor, keys: CubeTensor, values: CubeTensor, bias: CubeTensor, keep: CubeTensor, front: bool, scale: f32, dropout: f64) -> CubeTensor {
        let (front, rest) = parts(front_keys, front_values, keys, values, front);
        attention::forward(queries, front, rest, bias, keep, scale, dropout).0
    }
}

impl CubeAttentionPasses for CubeBackend {
    #[allow(clippy::too_many_arguments)]
    fn cube_attention_forward(queries: CubeTensor, front_keys: CubeTensor, front_values: CubeTensor, keys: CubeTensor, values: CubeTensor, bias: CubeTensor, keep: CubeTensor, front: bool, scale: f32, dropout: f64) -> (CubeTensor, CubeTensor) {
        let (front, rest) = parts(front_keys, front_values, keys, values, front);
        attention::forward(queries, front, rest, bias, keep, scale, dropout)
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
        front: bool,
        scale: f32,
        dropout: f64,
    ) -> (CubeTensor, CubeTensor, CubeTensor, CubeTensor, CubeTensor) {
        // Without a front, its gradients are its stand-ins, shaped as the fusion meta says.
        let stand_ins = KeysValues { keys: front_keys.clone(), values: front_values.clone() };
        let (front, rest) = parts(front_keys, front_values, keys, values, front);
        let (grad_queries, grad_front, grad_rest) = attention::backward(queries, front, rest, probs, keep, grad, scale, dropout);
        let grad_front = grad_front.unwrap_or(stand_ins);
        (grad_queries, grad_front.keys, grad_front.values, grad_rest.keys, grad_rest.values)
    }
}

#[derive(Debug)]
struct AttentionBackward {
    front: bool,
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
        let (dq, dfk, dfv, dk, dv) = Cube::cube_attention_backward(queries, front_keys, front_values, keys, values, probs, keep, grad, self.front, self.scale, self.dropout);
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
        front: bool,
        scale: f32,
        dropout: f64,
    ) -> FloatTensor<Self> {
        let (bias, keep) = (bias.primitive().clone(), keep.primitive().clone());
        let backward = AttentionBackward { front, scale, dropout };
        let inputs = [queries, front_keys, front_values, keys, values];
        match backward.prepare::<C>(inputs.each_ref().map(|t| t.node())).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let [q, fk, fv, k, v] = inputs.map(|t| t.primitive().clone());
                let (out, probs) = Cube::cube_attention_forward(q.clone(), fk.clone(), fv.clone(), k.clone(), v.clone(), bias, keep.clone(), front, scale, dropout);
                prep.finish([q, fk, fv, k, v, probs, keep], out)
            }
            OpsKind::UnTracked(prep) => {
                let [q, fk, fv, k, v] = inputs.map(|t| t.into_primitive());
                prep.finish(Cube::cube_attention(q, fk, fv, k, v, bias, keep, front, scale, dropout))
            }
        }
    }
}
