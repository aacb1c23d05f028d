//! `narrow` whose backward pass is one kernel on a GPU.
//!
//! Burn differentiates a slice by filling a zeros tensor of the input's shape and writing the
//! gradient into it: two launches per slice. A training step slices three times per GPT-2
//! layer (queries, keys and values from the fused projection) and twice per layer of the
//! prefix (its keys and values from one activation matrix), so on a GPU the backward pass is
//! [`prefix_tune_shaders::pad`], one launch. The forward pass is Burn's slice, a view, either
//! way.

use burn::tensor::Tensor;

/// `x.narrow(dim, start, len)`, differentiable.
pub fn narrow<const D: usize>(x: Tensor<D>, dim: usize, start: usize, len: usize) -> Tensor<D> {
    #[cfg(feature = "gpu")]
    if x.device().is_autodiff() && crate::backend::is_gpu(&x.device()) && x.dtype() == burn::tensor::DType::F32 && prefix_tune_shaders::fits(&[x.shape().num_elements()]) {
        use gpu::CubeNarrow;
        return Tensor::from_dispatch(<burn::backend::Dispatch as CubeNarrow>::cube_narrow(x.into_dispatch(), dim, start, len));
    }
    x.narrow(dim, start, len)
}

#[cfg(feature = "gpu")]
mod gpu {
    use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::backend::autodiff::Autodiff;
    use burn::backend::fusion::custom::TensorSpec;
    use burn::backend::tensor::FloatTensor;
    use burn::backend::ops::FloatTensorOps;
    use burn::backend::{backend_extension, Cube, TensorMetadata};
    use burn::tensor::{Shape, Slice};
    use prefix_tune_shaders::{pad, CubeBackend, CubeTensor};

    /// The slice `start..start + len` of `dim`, every other dimension whole.
    fn slices(shape: &Shape, dim: usize, start: usize, len: usize) -> Vec<Slice> {
        (0..shape.num_dims()).map(|d| if d == dim { Slice::from(start..start + len) } else { Slice::from(0..shape[d]) }).collect()
    }

    #[backend_extension(Autodiff, Cube, Fusion)]
    pub trait CubeNarrow: burn::backend::Backend {
        /// `x.narrow(dim, start, len)`; differentiable.
        #[fusion(meta = |x, dim, _start, len| narrowed_spec(x, *dim, *len))]
        fn cube_narrow(x: FloatTensor<Self>, dim: usize, start: usize, len: usize) -> FloatTensor<Self>;
    }

    fn narrowed_spec(x: &TensorSpec, dim: usize, len: usize) -> TensorSpec {
        let mut shape = x.shape.clone();
        shape[dim] = len;
        TensorSpec::new(shape, x.dtype)
    }

    /// The backward kernel, as its own extension so that fusion defers it like any other op.
    #[backend_extension(Cube, Fusion)]
    pub trait CubePad: burn::backend::Backend {
        /// `grad` at `start` along `dim` of a zeros tensor of `shape`.
        #[fusion(meta = |grad, shape, _dim, _start| TensorSpec::new(shape.clone(), grad.dtype))]
        fn cube_pad(grad: FloatTensor<Self>, shape: Shape, dim: usize, start: usize) -> FloatTensor<Self>;
    }

    impl CubeNarrow for CubeBackend {
        fn cube_narrow(x: CubeTensor, dim: usize, start: usize, len: usize) -> CubeTensor {
            let slices = slices(&x.shape(), dim, start, len);
            <CubeBackend as FloatTensorOps<CubeBackend>>::float_slice(x, &slices)
        }
    }

    impl CubePad for CubeBackend {
        fn cube_pad(grad: CubeTensor, shape: Shape, dim: usize, start: usize) -> CubeTensor {
            pad::pad(grad, shape, dim, start)
        }
    }

    #[derive(Debug)]
    struct NarrowBackward {
        dim: usize,
        start: usize,
    }

    impl Backward<Cube, 1> for NarrowBackward {
        type State = Shape; // the input's

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
            crate::ops::backward_one::<Cube, _>(ops, grads, |shape, grad| Cube::cube_pad(grad, shape, self.dim, self.start));
        }
    }

    impl<C: CheckpointStrategy> CubeNarrow for Autodiff<Cube, C> {
        fn cube_narrow(x: FloatTensor<Self>, dim: usize, start: usize, len: usize) -> FloatTensor<Self> {
            let slices = slices(&x.primitive().shape(), dim, start, len);
            match (NarrowBackward { dim, start }).prepare::<C>([x.node()]).compute_bound().stateful() {
                OpsKind::Tracked(prep) => {
                    let shape = x.primitive().shape();
                    prep.finish(shape, <Cube as FloatTensorOps<Cube>>::float_slice(x.into_primitive(), &slices))
                }
                OpsKind::UnTracked(prep) => prep.finish(<Cube as FloatTensorOps<Cube>>::float_slice(x.into_primitive(), &slices)),
            }
        }
    }
}
