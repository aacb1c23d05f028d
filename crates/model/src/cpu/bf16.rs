//! `--dtype bf16`: the frozen weights' matrix products in bf16 with f32 accumulation, on the
//! fastest path the CPU runs ([`prefix_tune_kernels::bf16`]: AMX tiles, AVX2, portable loops).
//!
//! Prefix-tuning never updates the model, so each frozen weight is rounded and packed for the
//! tiles once, and its transpose on the first backward pass (which only needs the input
//! gradient `dy · Wᵀ`; generation and evaluation never pack it). The activations are rounded to bf16 on each call, as PyTorch's bf16
//! autocast rounds them, but the products are kept in f32 (autocast rounds them to bf16 too),
//! and everything else (attention, LayerNorm, softmax, the prefix and its optimizer) stays f32.
//! On a Xeon with AMX a packed product runs at 0.8–1.0 TFLOP/s against ~0.1 in f32; on AVX2
//! the products run at f32's rate, and decoding reads half the bytes.

use std::sync::Arc;

use burn::tensor::{Device, Tensor};

/// Why `--dtype bf16` cannot run on `device`, if it cannot.
pub fn unavailable(device: &Device) -> Option<String> {
    #[cfg(feature = "flex")]
    {
        if !crate::backend::is_cpu(device) {
            return Some("--dtype bf16 runs on the CPU backend (flex) only".into());
        }
        prefix_tune_kernels::bf16::path().err().map(|why| why.to_string())
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = device;
        Some("--dtype bf16 runs on the CPU backend (flex), which this build does not include".into())
    }
}

/// The bf16 path this process's products take (`amx`, `avx2`, `portable`), if any runs.
pub fn path_name() -> Option<&'static str> {
    #[cfg(feature = "flex")]
    return prefix_tune_kernels::bf16::path().ok().map(|p| p.name());
    #[cfg(not(feature = "flex"))]
    None
}

/// A frozen matrix `W` `[K, N]` rounded to bf16 and packed: as `W` for `x · W`, and on the
/// first backward pass as `Wᵀ` for the input gradient. Cheap to clone (shared).
#[derive(Clone)]
pub struct Bf16Weight {
    #[cfg(feature = "flex")]
    packs: Arc<Packs>,
    #[cfg(not(feature = "flex"))]
    _none: Arc<()>,
}

#[cfg(feature = "flex")]
struct Packs {
    forward: prefix_tune_kernels::bf16::PackedBf16,
    /// `W` in f32 (the model's own tensor, shared), for packing `Wᵀ` on the first backward
    /// pass: generation and evaluation never need it.
    source: Tensor<2>,
    backward: std::sync::OnceLock<prefix_tune_kernels::bf16::PackedBf16>,
}

#[cfg(feature = "flex")]
impl Packs {
    /// `Wᵀ` `[N, K]`, packed once.
    fn backward(&self) -> &prefix_tune_kernels::bf16::PackedBf16 {
        self.backward.get_or_init(|| {
            let [k, n] = self.source.dims();
            prefix_tune_kernels::bf16::PackedBf16::pack(&f32_values(self.source.clone()), n, k, 1, n)
        })
    }
}

/// Row-major f32 values of a matrix.
#[cfg(feature = "flex")]
fn f32_values(w: Tensor<2>) -> Vec<f32> {
    w.into_data().convert::<f32>().try_into_vec::<f32>().expect("f32 values")
}

impl std::fmt::Debug for Bf16Weight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        #[cfg(feature = "flex")]
        return write!(f, "Bf16Weight {:?}", self.packs.forward.dims());
        #[cfg(not(feature = "flex"))]
        write!(f, "Bf16Weight")
    }
}

impl Bf16Weight {
    /// Packs `w` `[K, N]` (any layout: a `Linear` weight, or a transposed embedding as the LM
    /// head); `Wᵀ` is packed on the first backward pass. Panics where [`unavailable`] says why.
    pub fn pack(w: Tensor<2>) -> Self {
        if let Some(why) = unavailable(&w.device()) {
            panic!("Bf16Weight::pack: {why}");
        }
        #[cfg(feature = "flex")]
        {
            use prefix_tune_kernels::bf16::PackedBf16;
            let [k, n] = w.dims();
            let forward = PackedBf16::pack(&f32_values(w.clone()), k, n, n, 1);
            Self { packs: Arc::new(Packs { forward, source: w, backward: Default::default() }) }
        }
        #[cfg(not(feature = "flex"))]
        unreachable!()
    }
}

/// `x · W` `[M, K] → [M, N]` in bf16 with f32 sums; differentiable in `x`.
pub fn matmul(x: Tensor<2>, w: &Bf16Weight) -> Tensor<2> {
    #[cfg(feature = "flex")]
    if x.dtype() == burn::tensor::DType::F32 {
        return Tensor::from_dispatch(<burn::backend::Dispatch as flex::Bf16Matmul>::bf16_matmul(x.into_dispatch(), w.clone()));
    }
    let _ = w;
    panic!("bf16::matmul: {} (a {:?} tensor)", unavailable(&x.device()).unwrap_or_default(), x.dtype());
}

#[cfg(feature = "flex")]
mod flex {
    use super::Bf16Weight;
    use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::backend::autodiff::Autodiff;
    use burn::backend::{backend_extension, tensor::FloatTensor, Flex};
    use burn_flex::FlexTensor;
    use prefix_tune_kernels::bf16::{self, PackedBf16};

    #[backend_extension(Autodiff, Flex)]
    pub trait Bf16Matmul: burn::backend::Backend {
        /// `[M, K] · W → [M, N]`, W frozen; differentiable in the input.
        fn bf16_matmul(x: FloatTensor<Self>, w: Bf16Weight) -> FloatTensor<Self>;
    }

    fn product(x: FlexTensor, w: &PackedBf16) -> FlexTensor {
        let x = x.to_contiguous();
        let [m, k] = [x.layout().shape()[0], x.layout().shape()[1]];
        let out = bf16::matmul(crate::flex::values(&x), m, k, w);
        crate::flex::tensor(out, [m, w.dims()[1]])
    }

    impl Bf16Matmul for Flex {
        fn bf16_matmul(x: FlexTensor, w: Bf16Weight) -> FlexTensor {
            product(x, &w.packs.forward)
        }
    }

    /// The backward step: `grad · Wᵀ`; the weight is frozen, so it gets no gradient.
    #[derive(Debug)]
    struct Bf16MatmulBackward;

    impl Backward<Flex, 1> for Bf16MatmulBackward {
        type State = Bf16Weight;

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
            crate::flex::backward_one(ops, grads, |w, grad| product(grad, w.packs.backward()));
        }
    }

    impl<C: CheckpointStrategy> Bf16Matmul for Autodiff<Flex, C> {
        fn bf16_matmul(x: FloatTensor<Self>, w: Bf16Weight) -> FloatTensor<Self> {
            match Bf16MatmulBackward.prepare::<C>([x.node()]).compute_bound().stateful() {
                OpsKind::Tracked(prep) => {
                    let output = Flex::bf16_matmul(x.primitive().clone(), w.clone());
                    prep.finish(w, output)
                }
                OpsKind::UnTracked(prep) => prep.finish(Flex::bf16_matmul(x.into_primitive(), w)),
            }
        }
    }
}

/// The precision of the frozen model's matrix products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    /// f32 throughout, as the reference implementations.
    #[default]
    F32,
    /// Frozen weights and the activations entering them rounded to bf16, products summed in
    /// f32 (CPU backend only: AMX, AVX2 or portable loops). Everything else stays f32.
    Bf16,
}
