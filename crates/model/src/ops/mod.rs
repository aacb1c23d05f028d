//! Fused operations with a tensor form for every backend, a one-pass CPU kernel on the flex
//! backend (`crates/kernels`) and, for some, a GPU kernel (`shaders/`), each with its own
//! backward: GPT-2's GELU, LayerNorm with a frozen scale and shift, the LM head's
//! cross-entropy, and AdamW's step.

pub mod adamw;

/// The backward step of an op with one differentiable input, on backend `B`: the upstream
/// gradient is consumed, and `input_grad(state, upstream)` registered for the input when
/// autodiff tracks it.
#[cfg(any(feature = "flex", feature = "gpu"))]
pub(crate) fn backward_one<B: burn::backend::Backend, S>(
    ops: burn::backend::autodiff::ops::Ops<S, 1>,
    grads: &mut burn::backend::autodiff::grads::Gradients,
    input_grad: impl FnOnce(S, burn::backend::tensor::FloatTensor<B>) -> burn::backend::tensor::FloatTensor<B>,
) {
    let [parent] = ops.parents;
    let grad = grads.consume::<B>(&ops.node);
    if let Some(parent) = parent {
        grads.register::<B>(parent.id, input_grad(ops.state, grad));
    }
}

pub mod cross_entropy;
pub mod cut;
pub mod embed;
pub mod gelu;
pub mod kv_write;
pub mod layer_norm;
pub mod log_softmax;
pub mod matmul;
pub mod narrow;
