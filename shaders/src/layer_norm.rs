//! LayerNorm over the last dimension with a frozen scale and shift: the forward pass in one
//! kernel, and the input's gradient in one kernel (prefix-tuning never trains the model's scale
//! and shift, so their gradients are never formed).
//!
//! As tensor operations the forward is a mean, a centring, a variance, a root, a division, a
//! scale and a shift, and autodiff walks back through each; here each row is one cube, with the
//! two sums of each pass reduced in shared memory. The backward pass recomputes the row's mean
//! and 1/σ from the input rather than keeping them.

use burn_backend::TensorMetadata;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use crate::rows::{cube_row, cube_sum, elements, empty_like, row_cubes, row_threads};

/// Each row's `(mean, 1/σ)`, two passes as PyTorch takes them (biased variance, eps inside
/// the root).
#[cube]
fn row_statistics<F: Float>(x: &Tensor<F>, start: usize, dim: usize, eps: f32, #[comptime] threads: u32) -> RowStatistics<F> {
    let mut sum = F::new(0.0);
    let mut i = UNIT_POS_X as usize;
    while i < dim {
        sum += x[start + i];
        i += CUBE_DIM_X as usize;
    }
    let mean = cube_sum::<F>(sum, threads) / F::cast_from(dim as u32);
    let mut squares = F::new(0.0);
    let mut i = UNIT_POS_X as usize;
    while i < dim {
        let centred = x[start + i] - mean;
        squares += centred * centred;
        i += CUBE_DIM_X as usize;
    }
    let variance = cube_sum::<F>(squares, threads) / F::cast_from(dim as u32);
    RowStatistics::<F> { mean, inv_std: F::new(1.0) / (variance + F::cast_from(eps)).sqrt() }
}

/// A row's mean and 1/σ.
#[derive(CubeType)]
pub struct RowStatistics<F: Float> {
    mean: F,
    inv_std: F,
}

#[cube(launch)]
fn forward_kernel<F: Float>(
    x: &Tensor<F>,      // [rows, D]
    weight: &Tensor<F>, // [D]
    bias: &Tensor<F>,   // [D]
    y: &mut Tensor<F>,  // [rows, D]
    eps: f32,
    #[comptime] threads: u32,
    #[define(F)] _dtype: ElemType,
) {
    let row = cube_row();
    let dim = weight.len();
    if row * dim >= x.len() {
        terminate!();
    }
    let start = row * dim;
    let stats = row_statistics::<F>(x, start, dim, eps, threads);
    let mut i = UNIT_POS_X as usize;
    while i < dim {
        y[start + i] = (x[start + i] - stats.mean) * stats.inv_std * weight[i] + bias[i];
        i += CUBE_DIM_X as usize;
    }
}

#[cube(launch)]
fn backward_kernel<F: Float>(
    x: &Tensor<F>,          // [rows, D]
    weight: &Tensor<F>,     // [D]
    grad: &Tensor<F>,       // [rows, D], the upstream gradient
    grad_x: &mut Tensor<F>, // [rows, D]
    eps: f32,
    #[comptime] threads: u32,
    #[define(F)] _dtype: ElemType,
) {
    let row = cube_row();
    let dim = weight.len();
    if row * dim >= x.len() {
        terminate!();
    }
    let start = row * dim;
    let stats = row_statistics::<F>(x, start, dim, eps, threads);
    // dx = (1/σ)·(g·w − mean(g·w) − x̂·mean(g·w·x̂)), x̂ the normalised input.
    let mut scaled = F::new(0.0);
    let mut projected = F::new(0.0);
    let mut i = UNIT_POS_X as usize;
    while i < dim {
        let upstream = grad[start + i] * weight[i];
        scaled += upstream;
        projected += upstream * (x[start + i] - stats.mean) * stats.inv_std;
        i += CUBE_DIM_X as usize;
    }
    let count = F::cast_from(dim as u32);
    let scaled_mean = cube_sum::<F>(scaled, threads) / count;
    let projected_mean = cube_sum::<F>(projected, threads) / count;
    let mut i = UNIT_POS_X as usize;
    while i < dim {
        let normalised = (x[start + i] - stats.mean) * stats.inv_std;
        grad_x[start + i] = stats.inv_std * (grad[start + i] * weight[i] - scaled_mean - normalised * projected_mean);
        i += CUBE_DIM_X as usize;
    }
}

/// `x [.., D]` normalised over its last dimension, scaled by `weight [D]` and shifted by `bias [D]`.
pub fn forward(x: CubeTensor, weight: CubeTensor, bias: CubeTensor, eps: f64) -> CubeTensor {
    let (x, weight, bias) = (into_contiguous(x), into_contiguous(weight), into_contiguous(bias));
    let shape = x.shape();
    let dim = shape[shape.num_dims() - 1];
    let (rows, threads) = (shape.num_elements() / dim, row_threads(dim));
    let client = x.client.clone();
    let y = empty_like(&x, shape);
    let dtype = elements(&x);
    forward_kernel::launch(
        &client,
        row_cubes(rows),
        CubeDim::new_1d(threads),
        x.into_tensor_arg(),
        weight.into_tensor_arg(),
        bias.into_tensor_arg(),
        y.clone().into_tensor_arg(),
        eps as f32,
        threads,
        dtype,
    );
    y
}

/// The gradient of [`forward`] in `x`, given the upstream gradient `grad` (shaped as `x`).
pub fn backward(x: CubeTensor, weight: CubeTensor, grad: CubeTensor, eps: f64) -> CubeTensor {
    let (x, weight, grad) = (into_contiguous(x), into_contiguous(weight), into_contiguous(grad));
    let shape = x.shape();
    let dim = shape[shape.num_dims() - 1];
    let (rows, threads) = (shape.num_elements() / dim, row_threads(dim));
    let client = x.client.clone();
    let grad_x = empty_like(&x, shape);
    let dtype = elements(&x);
    backward_kernel::launch(
        &client,
        row_cubes(rows),
        CubeDim::new_1d(threads),
        x.into_tensor_arg(),
        weight.into_tensor_arg(),
        grad.into_tensor_arg(),
        grad_x.clone().into_tensor_arg(),
        eps as f32,
        threads,
        dtype,
    );
    grad_x
}
