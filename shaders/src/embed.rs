//! A pass's input embeddings in one launch: `scale · tokens[ids] + positions[position_ids +
//! offset]`. As tensor operations each gather is a launch and their sum another, and BART's
//! scale and offset one more each: three to five launches per decoding step for a few rows.
//!
//! Each thread writes one value, as the tensor operations compute it: the token's value, scaled
//! only where the scale is not 1 (so no multiply-add is contracted where the tensor form has
//! none), plus the position's.

use burn_backend::{Shape, TensorMetadata};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use crate::rows::{cube_element, elements, empty_like, row_cubes, ROW_THREADS};

/// `out[r][d] = scale · tokens[ids[r]][d] + positions[position_ids[r] + offset][d]`.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn embed_kernel<F: Float, I: Numeric>(
    tokens: &Tensor<F>,       // [V, D]
    ids: &Tensor<I>,          // [R]
    positions: &Tensor<F>,    // [P, D]
    position_ids: &Tensor<I>, // [R]
    out: &mut Tensor<F>,      // [R, D]
    scale: f32,
    offset: u32,
    #[comptime] scaled: bool,
    #[define(F, I)] _dtypes: [ElemType; 2],
) {
    let i = cube_element();
    let width = out.shape(1);
    if i >= out.len() {
        terminate!();
    }
    let (row, d) = (i / width, i % width);
    let mut token = tokens[usize::cast_from(ids[row]) * width + d];
    if comptime!(scaled) {
        token *= F::cast_from(scale);
    }
    out[i] = token + positions[(usize::cast_from(position_ids[row]) + offset as usize) * width + d];
}

/// `scale · tokens[ids] + positions[position_ids + offset]`: `[R, D]` from tables `[V, D]` and
/// `[P, D]` and ids `[R]` each (in range: the caller checks them).
pub fn embed(tokens: CubeTensor, ids: CubeTensor, positions: CubeTensor, position_ids: CubeTensor, scale: f32, offset: u32) -> CubeTensor {
    let (tokens, positions) = (into_contiguous(tokens), into_contiguous(positions));
    let (ids, position_ids) = (into_contiguous(ids), into_contiguous(position_ids));
    let rows = ids.shape().num_elements();
    let width = tokens.shape()[1];
    assert!(positions.shape()[1] == width && position_ids.shape().num_elements() == rows, "embed: tables of {width} and {} values, {rows} ids and {} positions", positions.shape()[1], position_ids.shape().num_elements());
    let out = empty_like(&tokens, Shape::new([rows, width]));
    let dtypes = [elements(&tokens), elements(&ids)];
    embed_kernel::launch(
        &tokens.client.clone(),
        row_cubes((rows * width).div_ceil(ROW_THREADS as usize)),
        CubeDim::new_1d(ROW_THREADS),
        tokens.into_tensor_arg(),
        ids.into_tensor_arg(),
        positions.into_tensor_arg(),
        position_ids.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        scale,
        offset,
        scale != 1.0,
        dtypes,
    );
    out
}
