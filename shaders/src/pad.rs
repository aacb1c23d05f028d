//! The gradient of a slice along one dimension (`narrow`): the slice's gradient in its place
//! and zeros around it, written in one pass. Burn's autodiff fills a zeros tensor and then
//! writes the slice into it, two launches for each narrow of a training step (GPT-2's
//! query/key/value split of its fused projection, the prefix's split into layers).

use burn_backend::{Shape, TensorMetadata};
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use crate::rows::{cube_element, elements, empty_like, row_cubes, ROW_THREADS};

/// `out[…, j, …] = grad[…, j − start, …]` where `start ≤ j < start + len` along `dim`, else 0;
/// `out` contiguous, `grad` of any strides.
#[cube(launch)]
fn pad_kernel<F: Float>(grad: &Tensor<F>, out: &mut Tensor<F>, dim: usize, start: usize, #[define(F)] _dtype: ElemType) {
    let i = cube_element();
    if i >= out.len() {
        terminate!();
    }
    let mut inside = true;
    let mut offset = 0;
    for d in 0..out.rank() {
        let mut coordinate = (i / out.stride(d)) % out.shape(d);
        if d == dim {
            if coordinate < start || coordinate >= start + grad.shape(d) {
                inside = false;
            } else {
                coordinate -= start;
            }
        }
        offset += coordinate * grad.stride(d);
    }
    if inside {
        out[i] = grad[offset];
    } else {
        out[i] = F::new(0.0);
    }
}

/// A tensor of `shape` holding `grad` from `start` along `dim`, zeros elsewhere: the gradient
/// of `x.narrow(dim, start, len)` in `x`.
pub fn pad(grad: CubeTensor, shape: Shape, dim: usize, start: usize) -> CubeTensor {
    let out = empty_like(&grad, shape);
    let count = out.shape().num_elements();
    let dtype = elements(&grad);
    pad_kernel::launch(
        &grad.client.clone(),
        row_cubes(count.div_ceil(ROW_THREADS as usize)),
        CubeDim::new_1d(ROW_THREADS),
        grad.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        dim,
        start,
        dtype,
    );
    out
}
