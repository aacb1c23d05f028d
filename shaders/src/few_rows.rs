//! A frozen weight's product for a few rows, `x · W + b` with `x` `[M, K]` and `W` stored
//! `[K, N]`: a decoding step's linear layers, one row per sequence or beam (more than 8 rows are
//! taken 8 at a time, by more cubes, each reading the weight again).
//!
//! Such a product only reads the weight, once: it is bound by memory, and a tiled kernel
//! ([`matmul`](crate::matmul)) wastes its blocks of 32 rows or more on it. Burn's matmul and its
//! bias addition are two launches per layer there. Here a cube computes 16 columns for every
//! row: its 256 threads are 16 columns × 16 slices of K, each reading its column of the weight
//! at every 16th depth (16 neighbouring threads read 64 contiguous bytes of a k-row) and keeping
//! one sum per row in registers; the 16 slices' sums are then added in a fixed order through
//! shared memory, then the bias, an activation and the residual stream as each output is written
//! ([`epilogue`](crate::epilogue)). One launch, `N / 16` cubes: 48 for a 768-wide output, 144
//! for 2,304. The tuner ([`tune`](crate::tune)) takes it where it is the fastest.

use burn_backend::{Shape, TensorMetadata};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use crate::epilogue::{finish, Addends, Epilogue};
use crate::rows::{elements, empty_like};

/// The rows a cube takes (one sum per row per thread, in registers).
pub const MAX_ROWS: usize = 8;
/// Columns per cube.
const COLS: usize = 16;
/// Slices of K per cube: a thread sums depths `slice, slice + 16, …`.
const SLICES: usize = 16;

#[cube(launch_unchecked)]
fn few_rows_kernel<F: Float>(
    lhs: &Tensor<F>,     // [M, K]
    weight: &Tensor<F>,  // [K, N]
    bias: &Tensor<F>,     // [N], read only when the epilogue is biased
    residual: &Tensor<F>, // [M, N], read only when the epilogue adds it
    out: &mut Tensor<F>,  // [M, N]
    #[comptime] rows: usize, // per cube: rows CUBE_POS_Y · rows ..
    #[comptime] epilogue: Epilogue,
    #[define(F)] _dtype: ElemType,
) {
    let (m, k, n) = (lhs.shape(0), lhs.shape(1), out.shape(1));
    let row_base = CUBE_POS_Y as usize * rows;
    let (column, slice) = (UNIT_POS_X as usize % COLS, UNIT_POS_X as usize / COLS);
    let col = CUBE_POS_X as usize * COLS + column;
    let mut sums = Array::<F>::new(rows);
    #[unroll]
    for r in 0..rows {
        sums[r] = F::new(0.0);
    }
    if col < n {
        let mut depth = slice;
        while depth < k {
            let w = weight[depth * n + col];
            #[unroll]
            for r in 0..rows {
                if row_base + r < m {
                    sums[r] += lhs[(row_base + r) * k + depth] * w;
                }
            }
            depth += SLICES;
        }
    }
    // [rows][SLICES][COLS]: each slice's sums, added below in the order of the slices.
    let mut partial = Shared::<[F]>::new_slice(comptime!(rows * SLICES * COLS));
    #[unroll]
    for r in 0..rows {
        partial[(r * SLICES + slice) * COLS + column] = sums[r];
    }
    sync_cube();
    let (r, c) = (UNIT_POS_X as usize / COLS, UNIT_POS_X as usize % COLS);
    let col = CUBE_POS_X as usize * COLS + c;
    if r < rows && row_base + r < m && col < n {
        let mut total = F::new(0.0);
        #[unroll]
        for s in 0..SLICES {
            total += partial[(r * SLICES + s) * COLS + c];
        }
        let at = (row_base + r) * n + col;
        out[at] = finish::<F>(total, bias, residual, col, at, epilogue);
    }
}

/// `activation(lhs [M, K] · weight [K, N] + bias [N]) + residual [M, N]` (each of `addends`
/// where there is one), [`MAX_ROWS`] rows per cube.
pub fn matmul(lhs: CubeTensor, weight: CubeTensor, addends: Addends) -> CubeTensor {
    let (lhs, weight) = (into_contiguous(lhs), into_contiguous(weight));
    let [m, k] = lhs.shape().dims::<2>();
    let [depth, n] = weight.shape().dims::<2>();
    assert!(depth == k, "few_rows: [{m}, {k}] · [{depth}, {n}]");
    let epilogue = addends.epilogue();
    let (bias, residual) = addends.tensors(&lhs, m, n);
    let out = empty_like(&lhs, Shape::new([m, n]));
    let dtype = elements(&lhs);
    let rows = m.clamp(1, MAX_ROWS);
    // SAFETY: weight reads are guarded by `col < n` and `depth < k`, input reads by the row's
    // `< m` and `depth < k`, writes by the row's `< m` and `col < n`, the bias by `col < n`, the
    // residual where the output is written.
    unsafe {
        few_rows_kernel::launch_unchecked(
            &lhs.client.clone(),
            CubeCount::Static(n.div_ceil(COLS) as u32, m.div_ceil(rows) as u32, 1),
            CubeDim::new_1d((COLS * SLICES) as u32),
            lhs.into_tensor_arg(),
            weight.into_tensor_arg(),
            bias.into_tensor_arg(),
            residual.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            rows,
            epilogue,
            dtype,
        );
    }
    out
}
