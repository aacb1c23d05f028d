//! `--dtype bf16` and `f16`: the frozen weights' matrix products in half precision with f32
//! accumulation. On the CPU, bf16 on the fastest path it runs ([`prefix_tune_kernels::bf16`]:
//! AMX tiles, AVX512-BF16, AVX2, aarch64 BFDOT or NEON); on a GPU, f16 or bf16 (where the adapter has it) through
//! the backend's own matmul with f32 sums, writing f32 ([`crate::matmul::in_half`]), or for a
//! decoding step's few rows the few-row kernel of `shaders/`: the same contract as the CPU's.
//!
//! Prefix-tuning never updates the model, so each frozen weight is rounded and packed for the
//! tiles once, and its transpose on the first backward pass (which only needs the input
//! gradient `dy · Wᵀ`; generation and evaluation never pack it). The activations are rounded to bf16 on each call, as PyTorch's bf16
//! autocast rounds them, but the products are kept in f32 (autocast rounds them to bf16 too),
//! and everything else (attention, LayerNorm, softmax, the prefix and its optimizer) stays f32.
//! On a Xeon with AMX a packed product runs at 0.8–1.0 TFLOP/s against ~0.1 in f32; on AVX2
//! the products run at f32's rate, and decoding reads half the bytes.

#[cfg(feature = "flex")]
use std::sync::Arc;

use burn::tensor::{Device, Tensor};

/// Why `--dtype dtype` cannot run on `device`, if it cannot.
pub fn unavailable(device: &Device, dtype: Dtype) -> Option<String> {
    let name = dtype.name();
    if dtype == Dtype::F32 {
        return None;
    }
    if crate::backend::is_gpu(device) {
        if device.supports_dtype(dtype.burn()) {
            return None;
        }
        // What the adapter lacks, and the best dtype it does run.
        let lacks = match dtype {
            Dtype::F16 => "wgpu: the SHADER_F16 feature",
            _ => "WGSL has no bf16 type; CUDA and some SPIR-V drivers do",
        };
        let instead = if dtype == Dtype::Bf16 && device.supports_dtype(Dtype::F16.burn()) { "f16" } else { "f32" };
        return Some(format!("--dtype {name}: this GPU adapter has no {name} arithmetic in shaders ({lacks}); use --dtype {instead}"));
    }
    if !crate::backend::is_cpu(device) {
        return Some(format!("--dtype {name} runs on a GPU backend or the CPU backend (flex), which this build does not include"));
    }
    if dtype == Dtype::F16 {
        return Some("--dtype f16 runs on a GPU backend (wgpu, vulkan, metal, cuda); on the CPU backend use --dtype bf16".into());
    }
    #[cfg(feature = "flex")]
    return prefix_tune_kernels::bf16::path().err().map(|why| why.to_string());
    #[cfg(not(feature = "flex"))]
    None
}

/// The bf16 path this process's products take (`amx`, `avx2`, `portable`), if any runs.
pub fn path_name() -> Option<&'static str> {
    #[cfg(feature = "flex")]
    return prefix_tune_kernels::bf16::path().ok().map(|p| p.name());
    #[cfg(not(feature = "flex"))]
    None
}

/// A frozen matrix `W` `[K, N]` in half precision. On the CPU, rounded to bf16 and packed: as
/// `W` for `x · W`, and on the first backward pass as `Wᵀ` for the input gradient. On a GPU,
/// a copy of `W` in f16 or bf16. Cheap to clone (shared).
#[derive(Clone)]
#[allow(clippy::large_enum_variant)] // one per frozen matrix: no arrays of them to shrink
pub enum HalfWeight {
    #[cfg(feature = "flex")]
    Cpu(Arc<Packs>),
    Gpu(Tensor<2>),
}

#[cfg(feature = "flex")]
pub struct Packs {
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

impl std::fmt::Debug for HalfWeight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            #[cfg(feature = "flex")]
            HalfWeight::Cpu(packs) => write!(f, "HalfWeight::Cpu {:?}", packs.forward.dims()),
            HalfWeight::Gpu(w) => write!(f, "HalfWeight::Gpu {:?} {:?}", w.dims(), w.dtype()),
        }
    }
}

impl HalfWeight {
    /// The weight `[K, N]` in half precision on a GPU (any memory order); `None` on the CPU,
    /// where it is packed for the CPU's kernels.
    pub fn on_gpu(&self) -> Option<&Tensor<2>> {
        match self {
            HalfWeight::Gpu(weight) => Some(weight),
            #[cfg(feature = "flex")]
            HalfWeight::Cpu(_) => None,
        }
    }

    /// `w` `[K, N]` (any layout: a `Linear` weight, or a transposed embedding as the LM head)
    /// in `dtype`: on the CPU packed for bf16 products (`Wᵀ` on the first backward pass), on a
    /// GPU cast. Panics where [`unavailable`] says why.
    pub fn pack(w: Tensor<2>, dtype: Dtype) -> Self {
        if let Some(why) = unavailable(&w.device(), dtype) {
            panic!("HalfWeight::pack: {why}");
        }
        if crate::backend::is_gpu(&w.device()) {
            // Kept outside autodiff: an autodiff tensor reused across steps would carry the
            // first step's graph node, which that step's backward pass consumes.
            return HalfWeight::Gpu(w.without_autodiff().cast(dtype.burn()));
        }
        #[cfg(feature = "flex")]
        {
            use prefix_tune_kernels::bf16::PackedBf16;
            let [k, n] = w.dims();
            let forward = PackedBf16::pack(&f32_values(w.clone()), k, n, n, 1);
            HalfWeight::Cpu(Arc::new(Packs { forward, source: w, backward: Default::default() }))
        }
        #[cfg(not(feature = "flex"))]
        unreachable!("checked by unavailable")
    }
}

#[cfg(feature = "flex")]
impl HalfWeight {
    /// The CPU packs; a CPU product only ever gets a CPU weight.
    fn packs(&self) -> &Packs {
        match self {
            HalfWeight::Cpu(packs) => packs,
            HalfWeight::Gpu(_) => unreachable!("a GPU weight in a CPU product"),
        }
    }
}

/// `x · W` `[M, K] → [M, N]` in half precision with f32 sums; differentiable in `x`.
pub fn matmul(x: Tensor<2>, w: &HalfWeight) -> Tensor<2> {
    match w {
        // The input rounded to W's precision, f32 sums and output, as on the CPU.
        HalfWeight::Gpu(weight) => {
            // A constant of this step's graph when the input is tracked.
            let weight = if x.is_autodiff() { weight.clone().autodiff() } else { weight.clone() };
            crate::matmul::in_half(x, weight)
        }
        #[cfg(feature = "flex")]
        HalfWeight::Cpu(_) => Tensor::from_dispatch(<burn::backend::Dispatch as flex::Bf16Matmul>::bf16_matmul(x.into_dispatch(), w.clone())),
    }
}

#[cfg(feature = "flex")]
mod flex {
    use super::HalfWeight;
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
        fn bf16_matmul(x: FloatTensor<Self>, w: HalfWeight) -> FloatTensor<Self>;
    }

    fn product(x: FlexTensor, w: &PackedBf16) -> FlexTensor {
        let x = x.to_contiguous();
        let [m, k] = [x.layout().shape()[0], x.layout().shape()[1]];
        let out = bf16::matmul(crate::flex::values(&x), m, k, w);
        crate::flex::tensor(out, [m, w.dims()[1]])
    }

    impl Bf16Matmul for Flex {
        fn bf16_matmul(x: FlexTensor, w: HalfWeight) -> FlexTensor {
            product(x, &w.packs().forward)
        }
    }

    /// The backward step: `grad · Wᵀ`; the weight is frozen, so it gets no gradient.
    #[derive(Debug)]
    struct Bf16MatmulBackward;

    impl Backward<Flex, 1> for Bf16MatmulBackward {
        type State = HalfWeight;

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
            crate::flex::backward_one(ops, grads, |w, grad| product(grad, w.packs().backward()));
        }
    }

    impl<C: CheckpointStrategy> Bf16Matmul for Autodiff<Flex, C> {
        fn bf16_matmul(x: FloatTensor<Self>, w: HalfWeight) -> FloatTensor<Self> {
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
    /// f32 (CPU backend: AMX, AVX512-BF16, AVX2, aarch64, or portable loops when forced; a GPU whose adapter has bf16).
    /// Everything else stays f32.
    Bf16,
    /// The same in f16 (GPU backends; wgpu needs the adapter's SHADER_F16).
    F16,
}

impl Dtype {
    /// The flag's spelling.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::Bf16 => "bf16",
            Dtype::F16 => "f16",
        }
    }

    /// Burn's element type.
    pub fn burn(self) -> burn::tensor::DType {
        match self {
            Dtype::F32 => burn::tensor::DType::F32,
            Dtype::Bf16 => burn::tensor::DType::BF16,
            Dtype::F16 => burn::tensor::DType::F16,
        }
    }
}
