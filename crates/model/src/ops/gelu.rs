//! `gelu_new`, GPT-2's activation: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))); and exact
//! GELU, BART's, differentiated exactly on every backend ([`gelu_erf`]).
//!
//! On the CPU backend it is one Burn backend-extension op with its own backward pass, both
//! single vectorised passes over all cores ([`prefix_tune_kernels::gelu`]). As tensor
//! operations it is eight element-wise passes forward and more backward, each on one core with
//! scalar `tanh`/`powf`: about a tenth of a GPT-2 training step there. Other backends fuse
//! element-wise work themselves and take the tensor form.

use burn::tensor::Tensor;

/// `gelu_new(x)`, element-wise.
pub fn gelu_tanh<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "flex")]
    if crate::backend::is_cpu(&x.device()) && x.dtype() == burn::tensor::DType::F32 {
        return Tensor::from_dispatch(<burn::backend::Dispatch as flex::Gelu>::gelu_tanh(x.into_dispatch()));
    }
    composed(x)
}

/// Exact GELU, `0.5·x·(1 + erf(x/√2))` (`gelu`: BART's activation), element-wise.
///
/// Burn's `gelu` computes this on every backend, but differentiates it exactly only on the CPU
/// backend (flex overrides `gelu_backward`): elsewhere its backward pass is burn-backend's
/// default, the derivative of the tanh approximation, off by up to ~1e-3 of the gradient it
/// passes on (5e-4 of the prefix gradients' scale on the BART fixture, where the CPU is within
/// 1e-6). So under autodiff on other backends it is tensor operations, whose `erf` autodiff
/// differentiates exactly (`2/√π · exp(−z²)`); a GPU fuses them into one pass.
pub fn gelu_erf<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if !x.device().is_autodiff() || crate::backend::is_cpu(&x.device()) {
        return burn::tensor::activation::gelu(x);
    }
    x.clone() * 0.5 * ((x * std::f64::consts::FRAC_1_SQRT_2).erf() + 1.0)
}

/// The same function as tensor operations (every backend; the reference for the fused op).
pub fn composed<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let inner = (x.clone() + x.clone().powf_scalar(3.0) * 0.044715) * (2.0f64 / std::f64::consts::PI).sqrt();
    x * 0.5 * (inner.tanh() + 1.0)
}

#[cfg(feature = "flex")]
mod flex {
    use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::backend::autodiff::Autodiff;
    use burn::backend::{backend_extension, tensor::FloatTensor, Flex};
    use burn_flex::FlexTensor;
    use crate::flex::{backward_one, tensor, values};
    use prefix_tune_kernels::gelu;

    #[backend_extension(Autodiff, Flex)]
    pub trait Gelu: burn::backend::Backend {
        /// `gelu_new`, element-wise; differentiable.
        fn gelu_tanh(x: FloatTensor<Self>) -> FloatTensor<Self>;
    }

    impl Gelu for Flex {
        fn gelu_tanh(x: FlexTensor) -> FlexTensor {
            let x = x.to_contiguous();
            let mut out = vec![0.0; x.layout().shape().num_elements()];
            gelu::forward(values(&x), &mut out);
            tensor(out, x.layout().shape().clone())
        }
    }

    /// The backward step: `grad · gelu'(x)`, from the saved input.
    #[derive(Debug)]
    struct GeluBackward;

    impl Backward<Flex, 1> for GeluBackward {
        type State = FlexTensor; // the input x

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
            backward_one(ops, grads, |x, grad| {
                let mut out = vec![0.0; x.layout().shape().num_elements()];
                gelu::backward(values(&x), values(&grad), &mut out);
                tensor(out, x.layout().shape().clone())
            });
        }
    }

    impl<C: CheckpointStrategy> Gelu for Autodiff<Flex, C> {
        fn gelu_tanh(x: FloatTensor<Self>) -> FloatTensor<Self> {
            match GeluBackward.prepare::<C>([x.node()]).compute_bound().stateful() {
                OpsKind::Tracked(prep) => {
                    let input = x.primitive().clone().to_contiguous();
                    let output = Flex::gelu_tanh(input.clone());
                    prep.finish(input, output)
                }
                OpsKind::UnTracked(prep) => prep.finish(Flex::gelu_tanh(x.into_primitive())),
            }
        }
    }
}
