//! LayerNorm with a frozen scale and shift under autodiff, as one CPU op.
//!
//! Autodiff differentiates Burn's `layer_norm` as its decomposition (mean, centring, variance,
//! root, division, scale, shift, and as many steps back), each a single-threaded pass on the
//! CPU backend: 4–5% of a bf16 training step of GPT-2 small. Prefix-tuning never trains the
//! model's scale and shift, so only the input gradient is needed: one pass per row each way
//! ([`prefix_tune_kernels::layer_norm`]). [`crate::nn::LayerNorm`] takes it on the CPU backend
//! when a gradient is recorded and its scale and shift are frozen.

use burn::tensor::Tensor;

/// LayerNorm with a frozen scale and shift as one CPU op with its own backward pass (the input
/// gradient only; [`prefix_tune_kernels::layer_norm`]).
pub fn frozen<const D: usize>(x: Tensor<D>, weight: Tensor<1>, bias: Tensor<1>, eps: f64) -> Tensor<D> {
    use flex::FrozenLayerNorm;
    Tensor::from_dispatch(<burn::backend::Dispatch as FrozenLayerNorm>::frozen_layer_norm(x.into_dispatch(), weight.into_dispatch(), bias.into_dispatch(), eps))
}

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
