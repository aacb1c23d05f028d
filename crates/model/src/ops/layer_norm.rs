//! LayerNorm with a frozen scale and shift as one op: a CPU kernel under autodiff, and on a GPU
//! the kernel pair of `shaders/` ([`prefix_tune_shaders::layer_norm`]) with or without it.
//!
//! Autodiff differentiates Burn's `layer_norm` as its decomposition (mean, centring, variance,
//! root, division, scale, shift, and as many steps back), each a single-threaded pass on the
//! CPU backend: 4–5% of a bf16 training step of GPT-2 small. Prefix-tuning never trains the
//! model's scale and shift, so only the input gradient is needed: one pass per row each way
//! ([`prefix_tune_kernels::layer_norm`]). [`crate::nn::LayerNorm`] takes it on the CPU backend
//! when a gradient is recorded and its scale and shift are frozen.

use burn::tensor::Tensor;

/// LayerNorm with a frozen scale and shift as one op with its own backward pass (the input
/// gradient only): [`prefix_tune_kernels::layer_norm`] on the CPU backend, the kernels of
/// `shaders/` on a GPU, Burn's `layer_norm` elsewhere.
pub fn frozen<const D: usize>(x: Tensor<D>, weight: Tensor<1>, bias: Tensor<1>, eps: f64) -> Tensor<D> {
    #[cfg(feature = "flex")]
    if crate::backend::is_cpu(&x.device()) {
        use flex::FrozenLayerNorm;
        return Tensor::from_dispatch(<burn::backend::Dispatch as FrozenLayerNorm>::frozen_layer_norm(x.into_dispatch(), weight.into_dispatch(), bias.into_dispatch(), eps));
    }
    #[cfg(feature = "gpu")]
    if crate::backend::is_gpu(&x.device()) && prefix_tune_shaders::fits(&[x.shape().num_elements()]) {
        use gpu::CubeLayerNorm;
        return Tensor::from_dispatch(<burn::backend::Dispatch as CubeLayerNorm>::cube_layer_norm(x.into_dispatch(), weight.into_dispatch(), bias.into_dispatch(), eps));
    }
    burn::tensor::module::layer_norm(x, weight, Some(bias), eps)
}

#[cfg(feature = "flex")]
mod flex {
    use std::sync::Arc;

    use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::backend::autodiff::Autodiff;
    use burn::backend::{backend_extension, tensor::FloatTensor, Flex};
    use burn_flex::FlexTensor;
    use prefix_tune_kernels::layer_norm;

    use crate::flex::{backward_one, tensor, values};

    #[backend_extension(Autodiff, Flex)]
    pub trait FrozenLayerNorm: burn::backend::Backend {
        /// LayerNorm over the last dimension; differentiable in `x` only.
        fn frozen_layer_norm(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>, eps: f64) -> FloatTensor<Self>;
    }

    /// The normalised tensor and each row's (mean, 1/std), from a contiguous `x`.
    fn forward(x: &FlexTensor, weight: &FlexTensor, bias: &FlexTensor, eps: f64) -> (FlexTensor, Vec<(f32, f32)>) {
        let shape = x.layout().shape().clone();
        let d = shape[shape.num_dims() - 1];
        let (weight, bias) = (weight.clone().to_contiguous(), bias.clone().to_contiguous());
        let (y, stats) = layer_norm::forward(values(x), d, values(&weight), values(&bias), eps);
        (tensor(y, shape), stats)
    }

    impl FrozenLayerNorm for Flex {
        fn frozen_layer_norm(x: FlexTensor, weight: FlexTensor, bias: FlexTensor, eps: f64) -> FlexTensor {
            forward(&x.to_contiguous(), &weight, &bias, eps).0
        }
    }

    #[derive(Debug)]
    struct FrozenLayerNormBackward;

    impl Backward<Flex, 1> for FrozenLayerNormBackward {
        type State = (FlexTensor, FlexTensor, Arc<Vec<(f32, f32)>>); // contiguous x, weight, row statistics

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
            backward_one(ops, grads, |(x, weight, stats), grad| {
                let shape = x.layout().shape().clone();
                let d = shape[shape.num_dims() - 1];
                let weight = weight.to_contiguous();
                tensor(layer_norm::backward(values(&x), d, values(&weight), &stats, values(&grad)), shape)
            });
        }
    }

    impl<C: CheckpointStrategy> FrozenLayerNorm for Autodiff<Flex, C> {
        fn frozen_layer_norm(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
            let (weight, bias) = (weight.primitive().clone(), bias.primitive().clone());
            match FrozenLayerNormBackward.prepare::<C>([x.node()]).compute_bound().stateful() {
                OpsKind::Tracked(prep) => {
                    let input = x.primitive().clone().to_contiguous();
                    let (y, stats) = forward(&input, &weight, &bias, eps);
                    prep.finish((input, weight, Arc::new(stats)), y)
                }
                OpsKind::UnTracked(prep) => prep.finish(Flex::frozen_layer_norm(x.into_primitive(), weight, bias, eps)),
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
    use prefix_tune_shaders::{layer_norm, CubeBackend, CubeTensor};

    #[backend_extension(Autodiff, Cube, Fusion)]
    pub trait CubeLayerNorm: burn::backend::Backend {
        /// LayerNorm over the last dimension; differentiable in `x` only.
        #[fusion(dtype = x, shape = x)]
        fn cube_layer_norm(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>, eps: f64) -> FloatTensor<Self>;
    }

    /// The backward kernel, as its own extension so that fusion defers it like any other op.
    #[backend_extension(Cube, Fusion)]
    pub trait CubeLayerNormBackward: burn::backend::Backend {
        /// The input's gradient, shaped as `x`.
        #[fusion(dtype = x, shape = x)]
        fn cube_layer_norm_backward(x: FloatTensor<Self>, weight: FloatTensor<Self>, grad: FloatTensor<Self>, eps: f64) -> FloatTensor<Self>;
    }

    impl CubeLayerNorm for CubeBackend {
        fn cube_layer_norm(x: CubeTensor, weight: CubeTensor, bias: CubeTensor, eps: f64) -> CubeTensor {
            layer_norm::forward(x, weight, bias, eps)
        }
    }

    impl CubeLayerNormBackward for CubeBackend {
        fn cube_layer_norm_backward(x: CubeTensor, weight: CubeTensor, grad: CubeTensor, eps: f64) -> CubeTensor {
            layer_norm::backward(x, weight, grad, eps)
        }
    }

    #[derive(Debug)]
    struct LayerNormBackward {
        eps: f64,
    }

    impl Backward<Cube, 1> for LayerNormBackward {
        type State = (FloatTensor<Cube>, FloatTensor<Cube>); // x, weight

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
            let eps = self.eps;
            crate::ops::backward_one::<Cube, _>(ops, grads, |(x, weight), grad| Cube::cube_layer_norm_backward(x, weight, grad, eps));
        }
    }

    impl<C: CheckpointStrategy> CubeLayerNorm for Autodiff<Cube, C> {
        fn cube_layer_norm(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
            let (weight, bias) = (weight.primitive().clone(), bias.primitive().clone());
            match (LayerNormBackward { eps }).prepare::<C>([x.node()]).compute_bound().stateful() {
                OpsKind::Tracked(prep) => {
                    let input = x.primitive().clone();
                    let y = Cube::cube_layer_norm(input.clone(), weight.clone(), bias, eps);
                    prep.finish((input, weight), y)
                }
                OpsKind::UnTracked(prep) => prep.finish(Cube::cube_layer_norm(x.into_primitive(), weight, bias, eps)),
            }
        }
    }
}
