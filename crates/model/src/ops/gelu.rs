//! `gelu_new`, GPT-2's activation: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))); and exact
//! GELU, BART's, differentiated exactly on every backend ([`gelu_erf`]: a kernel pair of
//! `shaders/` on a GPU).
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
/// default, the derivative of the tanh approximation, up to 8.7e-4 off the exact slope (5e-4 of
/// the prefix gradients' scale on the BART fixture, where the CPU is within 1e-7). So under
/// autodiff on a GPU it is the kernel pair of `shaders/` ([`prefix_tune_shaders::gelu`], the
/// exact slope, keeping only the input); tensor operations on any other backend.
pub fn gelu_erf<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if !x.device().is_autodiff() || crate::backend::is_cpu(&x.device()) {
        return burn::tensor::activation::gelu(x);
    }
    #[cfg(feature = "gpu")]
    if crate::backend::is_gpu(&x.device()) && x.dtype() == burn::tensor::DType::F32 && prefix_tune_shaders::fits(&[x.shape().num_elements()]) {
        use gpu::CubeGelu;
        return Tensor::from_dispatch(<burn::backend::Dispatch as CubeGelu>::cube_gelu_erf(x.into_dispatch()));
    }
    erf_composed(x)
}

/// Exact GELU as tensor operations, which autodiff differentiates exactly (`erf`'s slope is
/// `2/√π · exp(−z²)`).
pub fn erf_composed<const D: usize>(x: Tensor<D>) -> Tensor<D> {
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

#[cfg(feature = "gpu")]
mod gpu {
    use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::backend::autodiff::Autodiff;
    use burn::backend::tensor::FloatTensor;
    use burn::backend::{backend_extension, Cube};
    use prefix_tune_shaders::{gelu, CubeBackend, CubeTensor};

    #[backend_extension(Autodiff, Cube, Fusion)]
    pub trait CubeGelu: burn::backend::Backend {
        /// Exact GELU, element-wise; differentiable.
        #[fusion(dtype = x, shape = x)]
        fn cube_gelu_erf(x: FloatTensor<Self>) -> FloatTensor<Self>;
    }

    /// The backward kernel, as its own extension so that fusion defers it like any other op.
    #[backend_extension(Cube, Fusion)]
    pub trait CubeGeluBackward: burn::backend::Backend {
        /// The input's gradient, shaped as `x`.
        #[fusion(dtype = x, shape = x)]
        fn cube_gelu_erf_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self>;
    }

    impl CubeGelu for CubeBackend {
        fn cube_gelu_erf(x: CubeTensor) -> CubeTensor {
            gelu::forward(x)
        }
    }

    impl CubeGeluBackward for CubeBackend {
        fn cube_gelu_erf_backward(x: CubeTensor, grad: CubeTensor) -> CubeTensor {
            gelu::backward(x, grad)
        }
    }

    #[derive(Debug)]
    struct GeluBackward;

    impl Backward<Cube, 1> for GeluBackward {
        type State = FloatTensor<Cube>; // the input x

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
            crate::ops::backward_one::<Cube, _>(ops, grads, |x, grad| Cube::cube_gelu_erf_backward(x, grad));
        }
    }

    impl<C: CheckpointStrategy> CubeGelu for Autodiff<Cube, C> {
        fn cube_gelu_erf(x: FloatTensor<Self>) -> FloatTensor<Self> {
            match GeluBackward.prepare::<C>([x.node()]).compute_bound().stateful() {
                OpsKind::Tracked(prep) => {
                    let input = x.primitive().clone();
                    prep.finish(input.clone(), Cube::cube_gelu_erf(input))
                }
                OpsKind::UnTracked(prep) => prep.finish(Cube::cube_gelu_erf(x.into_primitive())),
            }
        }
    }
}
