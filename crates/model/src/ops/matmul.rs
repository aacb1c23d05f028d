//! Products with a frozen weight, `x · W` or `x · Wᵀ`: the linear layers and the tied LM head.
//!
//! On a GPU with `PREFIX_TUNE_MATMUL=shaders` they run the tiled kernel of `shaders/`
//! ([`prefix_tune_shaders::matmul`]) forward and, for the input's gradient, backward (the same
//! kernel with the weight the other way round). It is opt-in: `bench matmul` times it against
//! Burn's matmul, and only a GPU can say which is faster. Elsewhere, and by default, Burn's
//! matmul.

use burn::tensor::Tensor;

/// Whether `PREFIX_TUNE_MATMUL=shaders` asks for the kernel of `shaders/`.
pub fn asked() -> bool {
    static ASKED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ASKED.get_or_init(|| std::env::var("PREFIX_TUNE_MATMUL").is_ok_and(|v| v == "shaders"))
}

/// Whether [`frozen`] takes the kernel for these operands: asked for, on a GPU, f32, and a
/// weight that takes no gradient (the kernel differentiates the input only).
pub fn takes(x: &Tensor<2>, weight: &Tensor<2>) -> bool {
    asked() && available(x, weight) && !weight.is_require_grad()
}

/// Whether the kernel can run on these operands at all (a GPU, f32, 32-bit indexable).
pub fn available(x: &Tensor<2>, weight: &Tensor<2>) -> bool {
    #[cfg(feature = "gpu")]
    return crate::backend::is_gpu(&x.device())
        && x.dtype() == burn::tensor::DType::F32
        && weight.dtype() == burn::tensor::DType::F32
        && prefix_tune_shaders::fits(&[x.shape().num_elements(), weight.shape().num_elements()]);
    #[cfg(not(feature = "gpu"))]
    {
        let _ = (x, weight);
        false
    }
}

/// `x [M, K] · weight`, `weight` stored `[K, N]`, or `[N, K]` and used transposed.
pub fn frozen(x: Tensor<2>, weight: Tensor<2>, transposed: bool) -> Tensor<2> {
    if takes(&x, &weight) {
        if let Some(product) = kernel(x.clone(), weight.clone(), transposed) {
            return product;
        }
    }
    if transposed { x.matmul(weight.transpose()) } else { x.matmul(weight) }
}

/// The kernel of `shaders/`, differentiable in `x`, for [`available`] operands (else `None`):
/// `bench matmul` and the tests call it directly.
pub fn kernel(x: Tensor<2>, weight: Tensor<2>, transposed: bool) -> Option<Tensor<2>> {
    if !available(&x, &weight) {
        return None;
    }
    #[cfg(feature = "gpu")]
    return Some(Tensor::from_dispatch(<burn::backend::Dispatch as gpu::CubeFrozenMatmul>::cube_frozen_matmul(x.into_dispatch(), weight.into_dispatch(), transposed)));
    #[cfg(not(feature = "gpu"))]
    {
        let _ = transposed;
        None
    }
}

#[cfg(feature = "gpu")]
mod gpu {
    use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::backend::autodiff::Autodiff;
    use burn::backend::fusion::custom::TensorSpec;
    use burn::backend::tensor::FloatTensor;
    use burn::backend::{backend_extension, Cube};
    use burn::tensor::Shape;
    use prefix_tune_shaders::{matmul, CubeBackend, CubeTensor};

    /// `[M, N]` from `[M, K]` and a weight `[K, N]` (or `[N, K]` transposed).
    fn product_spec(x: &TensorSpec, weight: &TensorSpec, transposed: bool) -> TensorSpec {
        let n = if transposed { weight.shape[0] } else { weight.shape[1] };
        TensorSpec::new(Shape::new([x.shape[0], n]), x.dtype)
    }

    #[backend_extension(Autodiff, Cube, Fusion)]
    pub trait CubeFrozenMatmul: burn::backend::Backend {
        /// `x · W` (or `x · Wᵀ`); differentiable in `x` only.
        #[fusion(meta = |x, weight, transposed| product_spec(x, weight, *transposed))]
        fn cube_frozen_matmul(x: FloatTensor<Self>, weight: FloatTensor<Self>, transposed: bool) -> FloatTensor<Self>;
    }

    impl CubeFrozenMatmul for CubeBackend {
        fn cube_frozen_matmul(x: CubeTensor, weight: CubeTensor, transposed: bool) -> CubeTensor {
            matmul::matmul(x, weight, transposed)
        }
    }

    /// The input's gradient: `grad · Wᵀ`, the same kernel with the weight the other way round.
    #[derive(Debug)]
    struct FrozenMatmulBackward {
        transposed: bool,
    }

    impl Backward<Cube, 1> for FrozenMatmulBackward {
        type State = FloatTensor<Cube>; // the weight

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
            let transposed = self.transposed;
            crate::ops::backward_one::<Cube, _>(ops, grads, |weight, grad| Cube::cube_frozen_matmul(grad, weight, !transposed));
        }
    }

    impl<C: CheckpointStrategy> CubeFrozenMatmul for Autodiff<Cube, C> {
        fn cube_frozen_matmul(x: FloatTensor<Self>, weight: FloatTensor<Self>, transposed: bool) -> FloatTensor<Self> {
            let weight = weight.primitive().clone();
            match (FrozenMatmulBackward { transposed }).prepare::<C>([x.node()]).compute_bound().stateful() {
                OpsKind::Tracked(prep) => prep.finish(weight.clone(), Cube::cube_frozen_matmul(x.primitive().clone(), weight, transposed)),
                OpsKind::UnTracked(prep) => prep.finish(Cube::cube_frozen_matmul(x.into_primitive(), weight, transposed)),
            }
        }
    }
}
