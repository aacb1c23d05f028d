//! The negative log-likelihood of each logit row's target: `logsumexp(x) − x[target]`.
//!
//! On the CPU backend it is one Burn backend-extension op with its own backward pass
//! ([`prefix_tune_kernels::cross_entropy`]): one pass per row forward and one backward, on all
//! cores, with a vectorised `exp`. As log-softmax, gather and their backward it is half a
//! dozen passes over `[N, V]` with scalar `expf` on one core: over a tenth of a bf16 training
//! step of GPT-2 small. On a GPU it is the kernel pair of `shaders/` ([`prefix_tune_shaders::
//! cross_entropy`]): one pass per row forward, keeping nothing for backward but the logits the
//! LM head's own backward keeps anyway. Other backends take the tensor form.

use burn::tensor::Tensor;

use crate::tensors::ints;

/// `[N, V]` logits, N targets in `0..V` → the NLL of each row `[N]`; differentiable.
pub fn nll(logits: Tensor<2>, targets: &[usize]) -> Tensor<1> {
    #[cfg(feature = "flex")]
    if crate::backend::is_cpu(&logits.device()) && logits.dtype() == burn::tensor::DType::F32 {
        let targets = flex::Targets(std::sync::Arc::new(targets.to_vec()));
        return Tensor::from_dispatch(<burn::backend::Dispatch as flex::CrossEntropy>::cross_entropy(logits.into_dispatch(), targets));
    }
    #[cfg(feature = "gpu")]
    if crate::backend::is_gpu(&logits.device()) && prefix_tune_shaders::fits(&[logits.shape().num_elements()]) {
        let count = targets.len();
        let targets = ints(targets.iter().map(|&t| t as i64).collect(), [count], &logits.device());
        return Tensor::from_dispatch(<burn::backend::Dispatch as gpu::CubeCrossEntropy>::cube_nll(logits.into_dispatch(), targets.into_dispatch()));
    }
    composed(logits, targets)
}

/// The same as tensor operations (every backend; the reference for the fused op).
pub fn composed(logits: Tensor<2>, targets: &[usize]) -> Tensor<1> {
    let count = targets.len();
    let device = logits.device();
    let targets = ints(targets.iter().map(|&t| t as i64).collect(), [count, 1], &device);
    -burn::tensor::activation::log_softmax(logits, 1).gather(1, targets).reshape([count])
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
    use prefix_tune_kernels::cross_entropy;

    use crate::flex::{backward_one, tensor, values};

    /// The target of each row.
    #[derive(Debug, Clone)]
    pub struct Targets(pub Arc<Vec<usize>>);

    #[backend_extension(Autodiff, Flex)]
    pub trait CrossEntropy: burn::backend::Backend {
        /// `[N, V]` → `[N]`: each row's NLL of its target; differentiable in the logits.
        fn cross_entropy(logits: FloatTensor<Self>, targets: Targets) -> FloatTensor<Self>;
    }

    /// `(nll [N], logsumexp)` of contiguous logits.
    fn forward(logits: &FlexTensor, targets: &Targets) -> (FlexTensor, Vec<f32>) {
        let vocab = logits.layout().shape()[1];
        let (nll, lse) = cross_entropy::forward(values(logits), vocab, &targets.0);
        (tensor(nll, [targets.0.len()]), lse)
    }

    impl CrossEntropy for Flex {
        fn cross_entropy(logits: FlexTensor, targets: Targets) -> FlexTensor {
            forward(&logits.to_contiguous(), &targets).0
        }
    }

    /// `grad[r] · (softmax(x_r) − onehot(target_r))`.
    #[derive(Debug)]
    struct CrossEntropyBackward;

    impl Backward<Flex, 1> for CrossEntropyBackward {
        type State = (FlexTensor, Targets, Arc<Vec<f32>>); // contiguous logits, targets, logsumexp

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
            backward_one(ops, grads, |(logits, targets, lse), grad| {
                let shape = logits.layout().shape().clone();
                let mut out = vec![0.0; shape.num_elements()];
                cross_entropy::backward(values(&logits), shape[1], &targets.0, &lse, values(&grad), &mut out);
                tensor(out, shape)
            });
        }
    }

    impl<C: CheckpointStrategy> CrossEntropy for Autodiff<Flex, C> {
        fn cross_entropy(logits: FloatTensor<Self>, targets: Targets) -> FloatTensor<Self> {
            match CrossEntropyBackward.prepare::<C>([logits.node()]).compute_bound().stateful() {
                OpsKind::Tracked(prep) => {
                    let input = logits.primitive().clone().to_contiguous();
                    let (nll, lse) = forward(&input, &targets);
                    prep.finish((input, targets, Arc::new(lse)), nll)
                }
                OpsKind::UnTracked(prep) => prep.finish(Flex::cross_entropy(logits.into_primitive(), targets)),
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
    use burn::backend::tensor::{FloatTensor, IntTensor};
    use burn::backend::{backend_extension, Cube};
    use burn::tensor::Shape;
    use prefix_tune_shaders::{cross_entropy, CubeBackend, CubeTensor};

    #[backend_extension(Autodiff, Cube, Fusion)]
    pub trait CubeCrossEntropy: burn::backend::Backend {
        /// `[N, V]` logits, `[N]` targets → each row's NLL `[N]`; differentiable in the logits.
        #[fusion(dtype = logits, shape = Shape::new([logits[0]]))]
        fn cube_nll(logits: FloatTensor<Self>, targets: IntTensor<Self>) -> FloatTensor<Self>;
    }

    /// The backward kernel, as its own extension so that fusion defers it like any other op.
    #[backend_extension(Cube, Fusion)]
    pub trait CubeCrossEntropyBackward: burn::backend::Backend {
        /// `grad[r] · (softmax(x_r) − onehot(target_r))`, `[N, V]`.
        #[fusion(dtype = logits, shape = logits)]
        fn cube_nll_backward(logits: FloatTensor<Self>, targets: IntTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self>;
    }

    impl CubeCrossEntropy for CubeBackend {
        fn cube_nll(logits: CubeTensor, targets: CubeTensor) -> CubeTensor {
            cross_entropy::nll(logits, targets)
        }
    }

    impl CubeCrossEntropyBackward for CubeBackend {
        fn cube_nll_backward(logits: CubeTensor, targets: CubeTensor, grad: CubeTensor) -> CubeTensor {
            cross_entropy::nll_backward(logits, targets, grad)
        }
    }

    #[derive(Debug)]
    struct NllBackward;

    impl Backward<Cube, 1> for NllBackward {
        type State = (FloatTensor<Cube>, IntTensor<Cube>); // logits, targets

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
            crate::ops::backward_one::<Cube, _>(ops, grads, |(logits, targets), grad| Cube::cube_nll_backward(logits, targets, grad));
        }
    }

    impl<C: CheckpointStrategy> CubeCrossEntropy for Autodiff<Cube, C> {
        fn cube_nll(logits: FloatTensor<Self>, targets: IntTensor<Self>) -> FloatTensor<Self> {
            match NllBackward.prepare::<C>([logits.node()]).compute_bound().stateful() {
                OpsKind::Tracked(prep) => {
                    let input = logits.primitive().clone();
                    let nll = Cube::cube_nll(input.clone(), targets.clone());
                    prep.finish((input, targets), nll)
                }
                OpsKind::UnTracked(prep) => prep.finish(Cube::cube_nll(logits.into_primitive(), targets)),
            }
        }
    }
}
