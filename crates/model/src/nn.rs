//! Layers GPT-2 and BART share, computed as PyTorch computes them.

use burn::module::{Module, Param};
use burn::tensor::Tensor;

pub use crate::dropout::Dropout;

/// HF's `LayerNorm` (biased variance, eps inside the square root).
#[derive(Module, Debug)]
pub struct LayerNorm {
    pub weight: Param<Tensor<1>>,
    pub bias: Param<Tensor<1>>,
    #[module(skip)]
    pub eps: f64,
}

impl LayerNorm {
    /// Burn's `layer_norm` computes what HF's does (mean, biased variance, eps inside the
    /// root); the CPU backend runs it as one fused pass when no gradient is recorded (decoding,
    /// evaluation, serving). Where one is, autodiff would differentiate its decomposition: with a
    /// frozen scale and shift the CPU backend takes [`crate::layer_norm::frozen`] instead, and a
    /// GPU takes it always (one kernel each way, from `shaders/`).
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let (weight, bias) = (self.weight.val(), self.bias.val());
        let frozen = x.dtype() == burn::tensor::DType::F32 && !weight.is_require_grad() && !bias.is_require_grad();
        let device = x.device();
        if frozen && ((device.is_autodiff() && crate::backend::is_cpu(&device)) || crate::backend::is_gpu(&device)) {
            return crate::layer_norm::frozen(x, weight, bias, self.eps);
        }
        burn::tensor::module::layer_norm(x, weight, Some(bias), self.eps)
    }
}

/// A linear layer whose weight is stored `[in, out]`: GPT-2's `Conv1D` layout and Burn's.
/// PyTorch `nn.Linear` checkpoints (BART) store `[out, in]` and are transposed at load.
#[derive(Module, Debug)]
pub struct Linear {
    pub weight: Param<Tensor<2>>,
    pub bias: Param<Tensor<1>>,
    /// The frozen weight in half precision (`--dtype bf16` or `f16`); when set, every product
    /// takes it.
    #[module(skip)]
    pub half: Option<crate::bf16::HalfWeight>,
}

impl Linear {
    /// `[B, T, in] → [B, T, out]`. Decoding steps (T = 1) fold the rows, so the weight is read
    /// once for all of them, at memory bandwidth on the CPU ([`few_rows`](crate::few_rows)), as
    /// are short prompts there (a serving prefill: up to 16 rows in all, no autodiff).
    /// Sequences go through one batched matmul, per sequence on a GPU and in equal row blocks on
    /// the CPU ([`Self::forward_in_blocks`]); on a GPU with `PREFIX_TUNE_MATMUL` set (`tune` by
    /// default in an `autotune` build), any rows, a decoding step's too, through the kernel it
    /// names or the tuner's choice ([`crate::matmul`]).
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let chosen = self.kernel(&x);
        self.product(x, chosen)
    }

    /// The kernel of `shaders/` that takes this layer's product of `x` on a GPU (f32,
    /// `PREFIX_TUNE_MATMUL` or the tuner's choice), decided from the dimensions; `None` where
    /// Burn's matmul or the CPU's kernels do.
    fn kernel(&self, x: &Tensor<3>) -> Option<crate::matmul::Kernel> {
        match &self.half {
            Some(half) => crate::matmul::ours_half(x, half.on_gpu()?),
            None => crate::matmul::ours(x, &self.weight.val(), Some(&self.bias.val()), false),
        }
    }

    /// The weight a kernel of ours reads: the half-precision copy where there is one.
    fn kernel_weight(&self) -> Tensor<2> {
        self.half.as_ref().and_then(crate::bf16::HalfWeight::on_gpu).cloned().unwrap_or_else(|| self.weight.val())
    }

    /// `x · W + b` through `chosen` (see [`Self::kernel`]), or elsewhere as [`Self::forward`] says.
    fn product(&self, x: Tensor<3>, chosen: Option<crate::matmul::Kernel>) -> Tensor<3> {
        let [batch, seq, d_in] = x.dims();
        let [_, d_out] = self.weight.dims();
        let rows = x.reshape([batch * seq, d_in]); // [B·T, in]
        if let Some(out) = chosen.and_then(|chosen| crate::matmul::kernel(rows.clone(), self.kernel_weight(), Some(self.bias.val()), false, chosen)) {
            return out.reshape([batch, seq, d_out]);
        }
        if let Some(weight) = &self.half {
            return crate::bf16::matmul(rows, weight).reshape([batch, seq, d_out]) + self.bias.val().unsqueeze::<3>();
        }
        if seq == 1 || crate::few_rows::takes_the_kernel(&rows) {
            // The bias is added after the reshape, so that on a GPU its addition fuses with the
            // element-wise work after the layer (a residual, GELU): a reshape ends a fused block.
            let out = crate::few_rows::matmul(rows, self.weight.val()).reshape([batch, seq, d_out]);
            return out + self.bias.val().unsqueeze::<3>();
        }
        // Below a few million multiply-adds the regrouping's extra copies cost more than it saves.
        if crate::backend::is_cpu(&rows.device()) && batch * seq * d_in * d_out >= 1 << 22 {
            return self.forward_in_blocks(rows).reshape([batch, seq, d_out]) + self.bias.val().unsqueeze::<3>();
        }
        // The bias is shaped before the product, so that its addition follows the product in
        // the stream: Burn's matmul fuser then takes it into the product's fused block.
        let bias = self.bias.val().unsqueeze::<3>(); // [1, 1, out]
        rows.reshape([batch, seq, d_in]).matmul(self.weight.val().unsqueeze::<3>()) + bias
    }

    /// `residual + dropout(self.forward(x))`: a sub-layer's output added to the residual stream
    /// `[B, T, out]` ([`Self::forward_with`]).
    pub fn forward_residual(&self, x: Tensor<3>, residual: Tensor<3>, dropout: crate::dropout::Site) -> Tensor<3> {
        self.forward_with(x, With { residual: Some((residual, dropout)), ..With::default() })
    }

    /// `residual + dropout(activation(self.forward(norm(x))))`, each of `with`'s steps where
    /// there is one. Where the product goes to a kernel of `shaders/` (`PREFIX_TUNE_MATMUL`, or
    /// the tuner's choice), that kernel takes what it can of the rest in the same launch: the
    /// residual (nothing dropped), and without autodiff the activation and, in the few-row
    /// kernel (a decoding step), the norm, each value normalised as it is read. What it cannot
    /// take runs as before: the norm first, the rest after the product.
    pub fn forward_with(&self, x: Tensor<3>, with: With) -> Tensor<3> {
        // The norm keeps the shape, so one choice serves the product with or without it.
        let chosen = self.kernel(&x);
        if let Some(out) = chosen.and_then(|chosen| self.in_one_launch(&x, &with, chosen)) {
            return out;
        }
        let With { norm, activation, residual } = with;
        let x = match norm {
            Some(norm) => norm.forward(x),
            None => x,
        };
        let out = self.product(x, chosen);
        let out = match activation {
            Some(activation) => activation.forward(out),
            None => out,
        };
        match residual {
            Some((residual, dropout)) => residual + dropout.apply(out),
            None => out,
        }
    }

    /// `x · W + b` `[B, T, out]` and all of `with`'s steps in one launch of `chosen`, where it
    /// takes them; `None` elsewhere, having built nothing where there is nothing to take.
    fn in_one_launch(&self, x: &Tensor<3>, with: &With, chosen: crate::matmul::Kernel) -> Option<Tensor<3>> {
        let dropped = with.residual.as_ref().is_some_and(|(_, dropout)| !dropout.is_off());
        let nothing_to_fuse = with.norm.is_none() && with.activation.is_none() && with.residual.is_none();
        if dropped || nothing_to_fuse {
            return None;
        }
        let [batch, seq, d_in] = x.dims();
        let rows = x.clone().reshape([batch * seq, d_in]); // [B·T, in]
        let (weight, bias) = (self.kernel_weight(), self.bias.val());
        let d_out = weight.dims()[1];
        let residual = with.residual.as_ref().map(|(residual, _)| residual.clone().reshape([batch * seq, d_out]));
        let then = crate::matmul::Then { norm: with.norm, activation: with.activation, residual: residual.as_ref() };
        let out = crate::matmul::kernel_then(rows, weight, Some(bias), false, chosen, then)?;
        Some(out.reshape([batch, seq, d_out]))
    }

    /// From now on products take the weight in `dtype` (`--dtype bf16` or `f16`); the weight
    /// must stay frozen, since the half-precision copy never sees an update.
    pub fn use_half(&mut self, dtype: crate::bf16::Dtype) {
        self.half = Some(crate::bf16::HalfWeight::pack(self.weight.val(), dtype));
    }

    /// `[B·T, in] → [B·T, out]`, without the bias. The CPU backend gives each core whole
    /// matrices of a batched matmul, so B sequences on two cores leave one idle a third of the
    /// time (5 = 3 + 2), while folding all rows into one matmul packs the weight on every call.
    /// The rows are regrouped into up to two blocks per core of at least 64 rows, the last
    /// padded with zero rows. E2E-shaped batches (5 × 55 tokens) trained at 98–103 tok/s this
    /// way, against 86 per sequence, 76 in two blocks and 82 in eight.
    fn forward_in_blocks(&self, rows: Tensor<2>) -> Tensor<2> {
        let [count, d_in] = rows.dims();
        let cores = crate::backend::cpu_threads();
        let blocks = (count / 64).clamp(1, 2 * cores);
        let per_block = count.div_ceil(blocks);
        let mut rows = rows;
        if per_block * blocks > count {
            let padding = Tensor::zeros([per_block * blocks - count, d_in], &rows.device());
            rows = Tensor::cat(vec![rows, padding], 0);
        }
        let out = rows.reshape([blocks, per_block, d_in]).matmul(self.weight.val().unsqueeze::<3>()); // [blocks, per_block, out]
        let [_, d_out] = self.weight.dims();
        out.reshape([blocks * per_block, d_out]).narrow(0, 0, count) // [B·T, out]
    }
}

/// What a linear layer's caller does around its product: a norm before, an activation and the
/// residual stream (with its dropout) after ([`Linear::forward_with`]).
#[derive(Default)]
pub struct With<'a> {
    pub norm: Option<&'a LayerNorm>,
    pub activation: Option<Activation>,
    pub residual: Option<(Tensor<3>, crate::dropout::Site<'a>)>,
}

/// The feed-forward activations the supported checkpoints use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// tanh approximation of GELU (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
    /// exact GELU (`gelu`).
    Gelu,
    Relu,
}

impl Activation {
    /// The activation a config's `activation_function` names.
    pub fn from_hf(name: &str) -> Result<Self, crate::FieldError> {
        match name {
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(Activation::GeluTanh),
            "gelu" => Ok(Activation::Gelu),
            "relu" => Ok(Activation::Relu),
            other => Err(crate::FieldError::new("activation_function", format!("unsupported activation `{other}`"))),
        }
    }

    pub fn forward(self, x: Tensor<3>) -> Tensor<3> {
        match self {
            Activation::GeluTanh => crate::gelu::gelu_tanh(x),
            Activation::Gelu => crate::gelu::gelu_erf(x),
            Activation::Relu => burn::tensor::activation::relu(x),
        }
    }
}
