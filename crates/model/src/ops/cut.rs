//! A run of a one-dimensional tensor as a tensor of its own shape: a view on a GPU
//! ([`prefix_tune_shaders::cut`]), where Burn's slice copies unless both ends of the run fall on
//! the buffer alignment. Nothing here is differentiated: it cuts dropout masks from a pass's
//! one draw.

use burn::tensor::{Shape, Tensor};

/// Elements `start..start + shape.num_elements()` of `x` (`[N]`) as a tensor of `shape`; on a
/// GPU a view when `start` is a multiple of [`prefix_tune_shaders::cut::ALIGN`].
pub fn cut<const D: usize>(x: Tensor<1>, start: usize, shape: Shape) -> Tensor<D> {
    #[cfg(feature = "gpu")]
    if crate::backend::is_gpu(&x.device()) {
        use gpu::CubeCut;
        return Tensor::from_dispatch(<burn::backend::Dispatch as CubeCut>::cube_cut(x.into_dispatch(), start, shape));
    }
    x.slice([start..start + shape.num_elements()]).reshape(shape)
}

#[cfg(feature = "gpu")]
mod gpu {
    use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops};
    use burn::backend::autodiff::Autodiff;
    use burn::backend::fusion::custom::TensorSpec;
    use burn::backend::tensor::FloatTensor;
    use burn::backend::{backend_extension, Cube};
    use burn::tensor::Shape;
    use prefix_tune_shaders::{cut, CubeBackend, CubeTensor};

    #[backend_extension(Autodiff, Cube, Fusion)]
    pub trait CubeCut: burn::backend::Backend {
        /// A run of `x` as a tensor of `shape`; never tracked by autodiff.
        #[fusion(meta = |x, _start, shape| TensorSpec::new(shape.clone(), x.dtype))]
        fn cube_cut(x: FloatTensor<Self>, start: usize, shape: Shape) -> FloatTensor<Self>;
    }

    impl CubeCut for CubeBackend {
        fn cube_cut(x: CubeTensor, start: usize, shape: Shape) -> CubeTensor {
            cut::cut(x, start, shape)
        }
    }

    /// Numbers to cut masks from are drawn untracked, so this never runs.
    #[derive(Debug)]
    struct CutBackward;

    impl Backward<Cube, 1> for CutBackward {
        type State = ();

        fn backward(self, _ops: Ops<Self::State, 1>, _grads: &mut Gradients, _checkpointer: &mut Checkpointer) {}
    }

    impl<C: CheckpointStrategy> CubeCut for Autodiff<Cube, C> {
        fn cube_cut(x: FloatTensor<Self>, start: usize, shape: Shape) -> FloatTensor<Self> {
            let prep = CutBackward.prepare::<C>([x.node()]).compute_bound();
            prep.stateless(Cube::cube_cut(x.into_primitive(), start, shape))
        }
    }
}
