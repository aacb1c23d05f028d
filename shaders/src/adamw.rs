//! One AdamW step (PyTorch's, decoupled weight decay) over a parameter in one kernel: value,
//! first and second moments read once and written once, where the tensor form is a dozen
//! element-wise operations over the prefix's parameters.
//!
//! Each element goes through the f32 operations of the tensor form in `prefix_tune_train::optim`
//! in the same order.
//!
//! A run that goes ahead of its checks calls a step off on the device when its gradient is not
//! finite: the kernel then reads a `[1]` flag and, where it is set, writes the value and both
//! moments back as they were. (As tensor operations that guard is a `mask_where` per value and
//! moment, three more launches per parameter and step.)

use burn_backend::TensorMetadata;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use crate::rows::{cube_element, elements, empty_like, row_cubes, ROW_THREADS};

/// The step's scalars, each already rounded to f32 as a tensor operation rounds its scalar.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWScalars {
    pub beta1: f32,
    pub one_minus_beta1: f32,
    pub beta2: f32,
    pub one_minus_beta2: f32,
    /// `1 − lr·weight_decay`; exactly 1 without weight decay (`p · 1 = p`).
    pub decay: f32,
    /// `√(1 − β₂ᵗ)`.
    pub bias_correction2_sqrt: f32,
    pub eps: f32,
    /// `lr / (1 − β₁ᵗ)`.
    pub step_size: f32,
}

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn adamw_kernel<F: Float>(
    value: &Tensor<F>,
    grad: &Tensor<F>,
    m: &Tensor<F>, // zeros before the first step: 0·β₁ + g·(1 − β₁) is g·(1 − β₁) exactly
    v: &Tensor<F>,
    skip: &Tensor<F>, // [1], read when guarded: non-zero calls the step off
    new_value: &mut Tensor<F>,
    new_m: &mut Tensor<F>,
    new_v: &mut Tensor<F>,
    beta1: f32,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    decay: f32,
    bias_correction2_sqrt: f32,
    eps: f32,
    step_size: f32,
    #[comptime] guarded: bool,
    #[define(F)] _dtype: ElemType,
) {
    let i = cube_element();
    if i >= value.len() {
        terminate!();
    }
    if comptime!(guarded) {
        if skip[0] != F::new(0.0) {
            new_value[i] = value[i];
            new_m[i] = m[i];
            new_v[i] = v[i];
            terminate!();
        }
    }
    let g = grad[i];
    let decayed = value[i] * F::cast_from(decay);
    let first = m[i] * F::cast_from(beta1) + g * F::cast_from(one_minus_beta1);
    let second = v[i] * F::cast_from(beta2) + g * g * F::cast_from(one_minus_beta2);
    let denom = second.sqrt() / F::cast_from(bias_correction2_sqrt) + F::cast_from(eps);
    new_value[i] = decayed - first / denom * F::cast_from(step_size);
    new_m[i] = first;
    new_v[i] = second;
}

/// `(value, m, v)` after one step from `grad`; all four inputs of one shape. With `skip` (`[1]`)
/// non-zero, the step is called off: `(value, m, v)` as they were.
pub fn step(value: CubeTensor, grad: CubeTensor, m: CubeTensor, v: CubeTensor, skip: Option<CubeTensor>, s: AdamWScalars) -> (CubeTensor, CubeTensor, CubeTensor) {
    let [value, grad, m, v] = [value, grad, m, v].map(into_contiguous);
    let guarded = skip.is_some();
    // Unguarded, the flag is never read: the gradient stands in for it.
    let skip = skip.map_or_else(|| grad.clone(), into_contiguous);
    let shape = value.shape();
    let count = shape.num_elements();
    let client = value.client.clone();
    let empty = || empty_like(&value, shape.clone());
    let (new_value, new_m, new_v) = (empty(), empty(), empty());
    let dtype = elements(&value);
    adamw_kernel::launch(
        &client,
        row_cubes(count.div_ceil(ROW_THREADS as usize)),
        CubeDim::new_1d(ROW_THREADS),
        value.into_tensor_arg(),
        grad.into_tensor_arg(),
        m.into_tensor_arg(),
        v.into_tensor_arg(),
        skip.into_tensor_arg(),
        new_value.clone().into_tensor_arg(),
        new_m.clone().into_tensor_arg(),
        new_v.clone().into_tensor_arg(),
        s.beta1,
        s.one_minus_beta1,
        s.beta2,
        s.one_minus_beta2,
        s.decay,
        s.bias_correction2_sqrt,
        s.eps,
        s.step_size,
        guarded,
        dtype,
    );
    (new_value, new_m, new_v)
}
