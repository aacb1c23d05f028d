//! Log-probabilities of logit rows, with an amount added to each row: a beam's log-probabilities
//! plus its score so far, as beam search ranks continuations. On a GPU without autodiff one
//! kernel ([`prefix_tune_shaders::cross_entropy::log_softmax`]: the row's logsumexp, then one
//! pass); as Burn's tensor operations a max, a fused sum of exponentials, a subtraction and the
//! addition, four launches. The two differ by f32 rounding.

use burn::tensor::Tensor;

/// `log_softmax(logits [N, V]) + added [N]` (per row, where there is one).
pub fn log_softmax(logits: Tensor<2>, added: Option<Tensor<1>>) -> Tensor<2> {
    #[cfg(feature = "gpu")]
    {
        let device = logits.device();
        let f32s = logits.dtype() == burn::tensor::DType::F32 && added.as_ref().is_none_or(|a| a.dtype() == burn::tensor::DType::F32);
        if f32s && !device.is_autodiff() && crate::backend::is_gpu(&device) && prefix_tune_shaders::fits(&[logits.shape().num_elements()]) {
            return gpu::log_softmax(logits, added);
        }
    }
    let log_probs = burn::tensor::activation::log_softmax(logits, 1);
    match added {
        Some(added) => log_probs + added.unsqueeze_dim::<2>(1), // [N, V] + [N, 1]
        None => log_probs,
    }
}

#[cfg(feature = "gpu")]
mod gpu {
    use burn::backend::backend_extension;
    use burn::backend::tensor::FloatTensor;
    use burn::tensor::Tensor;
    use prefix_tune_shaders::{cross_entropy, CubeBackend, CubeTensor};

    #[backend_extension(Cube, Fusion)]
    pub trait CubeLogSoftmax: burn::backend::Backend {
        /// `[N, V]`: each row's log-probabilities, plus `added[row]` when `adds`.
        #[fusion(meta = |logits, _added, _adds| logits.clone())]
        fn cube_log_softmax(logits: FloatTensor<Self>, added: FloatTensor<Self>, adds: bool) -> FloatTensor<Self>;
    }

    impl CubeLogSoftmax for CubeBackend {
        fn cube_log_softmax(logits: CubeTensor, added: CubeTensor, adds: bool) -> CubeTensor {
            cross_entropy::log_softmax(logits, adds.then_some(added))
        }
    }

    pub fn log_softmax(logits: Tensor<2>, added: Option<Tensor<1>>) -> Tensor<2> {
        let adds = added.is_some();
        // Without an addition the kernel never reads it: one value stands in.
        let added = added.unwrap_or_else(|| Tensor::empty([1], &logits.device()));
        Tensor::from_dispatch(<burn::backend::Dispatch as CubeLogSoftmax>::cube_log_softmax(logits.into_dispatch(), added.into_dispatch(), adds))
    }
}
