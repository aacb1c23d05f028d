//! What a product kernel does to each output as it writes it: the bias, an activation and the
//! residual stream, `activation(x·W + b) + residual`. A linear layer and the element-wise work
//! after it are then one launch, where they were the product and one more kernel: GPT-2's MLP
//! is `gelu(x·W₁ + b₁)` then `x·W₂ + b₂` added to the stream, its attention's projection too.

use burn_backend::{Shape, TensorMetadata};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use crate::rows::empty_like;

/// The activation an epilogue applies after the bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub enum Activation {
    #[default]
    Identity,
    /// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`: GPT-2's `gelu_new`.
    GeluTanh,
    /// `x·Φ(x)`: exact GELU, BART's.
    GeluErf,
}

/// Which of its steps an epilogue takes (a kernel's comptime argument).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Epilogue {
    pub biased: bool,
    pub activation: Activation,
    pub residual: bool,
}

/// The tensors an epilogue reads: a bias `[N]` and the residual stream `[M, N]`, each where
/// there is one, and the activation between them.
#[derive(Debug, Clone, Default)]
pub struct Addends {
    pub bias: Option<CubeTensor>,
    pub activation: Activation,
    pub residual: Option<CubeTensor>,
}

impl Addends {
    /// The bias alone.
    pub fn bias(bias: Option<CubeTensor>) -> Self {
        Self { bias, ..Self::default() }
    }

    /// The steps these addends ask for.
    pub fn epilogue(&self) -> Epilogue {
        Epilogue { biased: self.bias.is_some(), activation: self.activation, residual: self.residual.is_some() }
    }

    /// The bias and the residual as a kernel reads them, contiguous, for an output `[m, n]`; a
    /// one-value stand-in (never read) for each that is absent.
    pub fn tensors(self, like: &CubeTensor, m: usize, n: usize) -> (CubeTensor, CubeTensor) {
        let stand_in = || empty_like(like, Shape::new([1]));
        let bias = self.bias.map(into_contiguous).unwrap_or_else(stand_in);
        let residual = self.residual.map(into_contiguous).unwrap_or_else(stand_in);
        let [b, r] = [&bias, &residual].map(|t| t.shape().num_elements());
        assert!(b == n || b == 1, "a bias of {b} values for {n} columns");
        assert!(r == m * n || r == 1, "a residual of {r} values for a [{m}, {n}] product");
        (bias, residual)
    }
}

/// Output `at` (column `col`) of a product whose sum is `sum`, through `epilogue`'s steps.
#[cube]
pub fn finish<F: Float>(sum: F, bias: &Tensor<F>, residual: &Tensor<F>, col: usize, at: usize, #[comptime] epilogue: Epilogue) -> F {
    let mut value = sum;
    if comptime!(epilogue.biased) {
        value += bias[col];
    }
    if comptime!(epilogue.activation == Activation::GeluTanh) {
        let inner = F::new(0.797_884_6) * (value + F::new(0.044715) * value * value * value); // √(2/π)
        value = F::new(0.5) * value * (F::new(1.0) + inner.tanh());
    }
    if comptime!(epilogue.activation == Activation::GeluErf) {
        value = value * crate::gelu::normal_cdf::<F>(value);
    }
    if comptime!(epilogue.residual) {
        value += residual[at];
    }
    value
}
