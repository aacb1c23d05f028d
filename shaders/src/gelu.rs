//! Exact GELU, `x · Φ(x)` with `Φ(x) = ½(1 + erf(x/√2))` (BART's `gelu`), forward and backward,
//! one element-wise pass each.
//!
//! Burn's `gelu` computes this function on a GPU but differentiates it as the tanh
//! approximation (burn-backend's default `gelu_backward`, up to 8.7e-4 off the exact slope); as
//! tensor operations autodiff is exact but keeps three activation-sized tensors per layer where
//! this pair keeps only the input.

use burn_backend::TensorMetadata;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use crate::rows::{cube_element, elements, empty_like, row_cubes, ROW_THREADS};

/// `Φ(x)`, the standard normal's distribution function.
#[cube]
pub(crate) fn normal_cdf<F: Float>(x: F) -> F {
    F::new(0.5) * (F::new(1.0) + (x * F::new(core::f32::consts::FRAC_1_SQRT_2)).erf())
}

#[cube(launch)]
fn forward_kernel<F: Float>(x: &Tensor<F>, y: &mut Tensor<F>, #[define(F)] _dtype: ElemType) {
    let i = cube_element();
    if i < x.len() {
        y[i] = x[i] * normal_cdf::<F>(x[i]);
    }
}

/// `grad · (Φ(x) + x · φ(x))`, `φ` the standard normal's density.
#[cube(launch)]
fn backward_kernel<F: Float>(x: &Tensor<F>, grad: &Tensor<F>, out: &mut Tensor<F>, #[define(F)] _dtype: ElemType) {
    let i = cube_element();
    if i < x.len() {
        let v = x[i];
        let density = (F::new(-0.5) * v * v).exp() * F::new(0.398_942_3); // 1/√(2π)
        out[i] = grad[i] * (normal_cdf::<F>(v) + v * density);
    }
}

/// `gelu(x)`, element-wise, in `x`'s shape.
pub fn forward(x: CubeTensor) -> CubeTensor {
    let x = into_contiguous(x);
    let y = empty_like(&x, x.shape());
    let count = x.shape().num_elements();
    forward_kernel::launch(&x.client.clone(), row_cubes(count.div_ceil(ROW_THREADS as usize)), CubeDim::new_1d(ROW_THREADS), x.clone().into_tensor_arg(), y.clone().into_tensor_arg(), elements(&x));
    y
}

/// The gradient of `x` from the gradient `grad` of `gelu(x)`, in `x`'s shape.
pub fn backward(x: CubeTensor, grad: CubeTensor) -> CubeTensor {
    let (x, grad) = (into_contiguous(x), into_contiguous(grad));
    let out = empty_like(&x, x.shape());
    let count = x.shape().num_elements();
    backward_kernel::launch(
        &x.client.clone(),
        row_cubes(count.div_ceil(ROW_THREADS as usize)),
        CubeDim::new_1d(ROW_THREADS),
        x.clone().into_tensor_arg(),
        grad.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        elements(&x),
    );
    out
}
