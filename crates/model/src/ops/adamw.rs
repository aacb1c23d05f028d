//! One AdamW step over a parameter's values (PyTorch's, decoupled weight decay): on a GPU the
//! one-kernel step of `shaders/` ([`prefix_tune_shaders::adamw`]), elsewhere as tensor
//! operations. (The CPU backend's one-pass step, [`prefix_tune_kernels::adamw`], works on host
//! slices and is taken by the optimizer itself.)

use burn::tensor::{Bool, Tensor};
pub use prefix_tune_kernels::adamw::Coefficients;

/// `(value, m, v)` after one step from `grad`; moments `None` before the first step.
pub fn step(c: &Coefficients, value: Tensor<1>, grad: Tensor<1>, moments: (Option<Tensor<1>>, Option<Tensor<1>>)) -> (Tensor<1>, Tensor<1>, Tensor<1>) {
    step_unless(c, value, grad, moments, None)
}

/// [`step`], called off where `skip` (`[1]`) is non-zero: the value and moments come back as
/// they were (an unset moment as zeros), decided on the device without reading the flag.
pub fn step_unless(c: &Coefficients, value: Tensor<1>, grad: Tensor<1>, (m, v): (Option<Tensor<1>>, Option<Tensor<1>>), skip: Option<Tensor<1>>) -> (Tensor<1>, Tensor<1>, Tensor<1>) {
    #[cfg(feature = "gpu")]
    if crate::backend::is_gpu(&value.device()) && prefix_tune_shaders::fits(&[value.shape().num_elements()]) {
        return gpu::step(c, value, grad, (m, v), skip);
    }
    let Some(skip) = skip else { return tensors(c, value, grad, (m, v)) };
    let called_off = skip.not_equal_elem(0.0);
    let (new_value, new_m, new_v) = tensors(c, value.clone(), grad, (m.clone(), v.clone()));
    (guard(new_value, Some(value), &called_off), guard(new_m, m, &called_off), guard(new_v, v, &called_off))
}

/// `new`, or `old` where the step is `called_off` (`[1]`); `old` `None` (an unset moment): zeros.
pub fn guard(new: Tensor<1>, old: Option<Tensor<1>>, called_off: &Tensor<1, Bool>) -> Tensor<1> {
    let old = old.unwrap_or_else(|| new.zeros_like());
    new.mask_where(called_off.clone().expand([old.dims()[0]]), old)
}

/// AdamW as tensor operations (any backend): the reference for the fused forms.
pub fn tensors(c: &Coefficients, value: Tensor<1>, grad: Tensor<1>, (m, v): (Option<Tensor<1>>, Option<Tensor<1>>)) -> (Tensor<1>, Tensor<1>, Tensor<1>) {
    // f32 → f64 is exact, so each scalar reaches the backend as the f32 the fused step uses.
    let value = match c.decay {
        Some(decay) => value * decay as f64,
        None => value,
    };
    let m = match m {
        Some(m) => m * c.beta1 as f64 + grad.clone() * c.one_minus_beta1 as f64,
        None => grad.clone() * c.one_minus_beta1 as f64,
    };
    let v = match v {
        Some(v) => v * c.beta2 as f64 + grad.clone() * grad * c.one_minus_beta2 as f64,
        None => grad.clone() * grad * c.one_minus_beta2 as f64,
    };
    let denom = v.clone().sqrt() / c.bias_correction2_sqrt as f64 + c.eps as f64;
    (value - m.clone() / denom * c.step_size as f64, m, v)
}

#[cfg(feature = "gpu")]
mod gpu {
    use burn::backend::fusion::custom::TensorSpec;
    use burn::backend::tensor::FloatTensor;
    use burn::backend::backend_extension;
    use burn::tensor::Tensor;
    use prefix_tune_shaders::adamw::{self, AdamWScalars};
    use prefix_tune_shaders::{CubeBackend, CubeTensor};

    use super::Coefficients;

    /// Three outputs shaped as the parameter.
    fn three(value: &TensorSpec) -> (TensorSpec, TensorSpec, TensorSpec) {
        (value.clone(), value.clone(), value.clone())
    }

    #[backend_extension(Cube, Fusion)]
    pub trait CubeAdamW: burn::backend::Backend {
        /// `(value, m, v)` after one step; the moments are zeros before the first. Guarded, the
        /// step is called off where `skip` (`[1]`) is non-zero; unguarded, `skip` is not read.
        #[fusion(meta = |value, _grad, _m, _v, _skip, _scalars, _guarded| three(value))]
        fn cube_adamw(value: FloatTensor<Self>, grad: FloatTensor<Self>, m: FloatTensor<Self>, v: FloatTensor<Self>, skip: FloatTensor<Self>, scalars: AdamWScalars, guarded: bool) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
    }

    impl CubeAdamW for CubeBackend {
        fn cube_adamw(value: CubeTensor, grad: CubeTensor, m: CubeTensor, v: CubeTensor, skip: CubeTensor, scalars: AdamWScalars, guarded: bool) -> (CubeTensor, CubeTensor, CubeTensor) {
            adamw::step(value, grad, m, v, guarded.then_some(skip), scalars)
        }
    }

    pub fn step(c: &Coefficients, value: Tensor<1>, grad: Tensor<1>, (m, v): (Option<Tensor<1>>, Option<Tensor<1>>), skip: Option<Tensor<1>>) -> (Tensor<1>, Tensor<1>, Tensor<1>) {
        let scalars = AdamWScalars {
            beta1: c.beta1,
            one_minus_beta1: c.one_minus_beta1,
            beta2: c.beta2,
            one_minus_beta2: c.one_minus_beta2,
            decay: c.decay.unwrap_or(1.0),
            bias_correction2_sqrt: c.bias_correction2_sqrt,
            eps: c.eps,
            step_size: c.step_size,
        };
        let zeros = || value.zeros_like();
        let (m, v) = (m.unwrap_or_else(zeros), v.unwrap_or_else(zeros));
        let guarded = skip.is_some();
        // Unguarded, the kernel never reads the flag: the gradient stands in for it.
        let skip = skip.unwrap_or_else(|| grad.clone());
        let (value, m, v) = <burn::backend::Dispatch as CubeAdamW>::cube_adamw(value.into_dispatch(), grad.into_dispatch(), m.into_dispatch(), v.into_dispatch(), skip.into_dispatch(), scalars, guarded);
        (Tensor::from_dispatch(value), Tensor::from_dispatch(m), Tensor::from_dispatch(v))
    }
}
