//! A frozen weight's matrix product, `x · W` or `x · Wᵀ`, as a classic tiled kernel: each cube
//! computes a block of the output (64 × 64 by default) from slices 16 deep of the inputs staged
//! in shared memory, each of its 256 threads a grid of outputs (4 × 4) held in registers.
//!
//! On an H200 in f32 Burn's matmuls (CubeCL's unit-level kernels, the best its autotune found
//! for f32 on Vulkan) ran at ~4 TFLOP/s and took 38.8 of a training step's 44.2 ms of GPU time.
//! This kernel is the candidate `bench matmul` times against them; it is opt-in
//! (`PREFIX_TUNE_MATMUL=shaders`) until a GPU says it is faster.
//!
//! The block's shape is chosen per launch (`bench matmul` times several). A thread's outputs are strided
//! by 16 (rows `ty + 16i`, columns `tx + 16j`), so a warp's
//! stores are contiguous and its shared-memory reads are broadcasts or consecutive.

use burn_backend::{Shape, TensorMetadata};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use crate::rows::{elements, empty_like};

/// Depth of one staged slice of K.
const DEPTH: usize = 16;
/// Threads per side of a cube: 16 × 16, each computing `rows × cols` outputs.
const SIDE: usize = 16;
const THREADS: usize = SIDE * SIDE;

#[cube(launch)]
fn matmul_kernel<F: Float>(
    lhs: &Tensor<F>,     // [M, K]
    weight: &Tensor<F>,  // [K, N], or [N, K] when `transposed`
    out: &mut Tensor<F>, // [M, N]
    #[comptime] transposed: bool,
    #[comptime] tile_rows: usize,
    #[comptime] tile_cols: usize,
    #[define(F)] _dtype: ElemType,
) {
    let block_rows = comptime!(SIDE * tile_rows);
    let block_cols = comptime!(SIDE * tile_cols);
    let (m, k) = (lhs.shape(0), lhs.shape(1));
    let n = out.shape(1);
    let thread = UNIT_POS_X as usize;
    let (tx, ty) = (thread % SIDE, thread / SIDE);
    let (row_base, col_base) = (CUBE_POS_Y as usize * block_rows, CUBE_POS_X as usize * block_cols);
    let mut lhs_tile = Shared::<[F]>::new_slice(comptime!(DEPTH * SIDE * tile_rows)); // [DEPTH][rows]
    let mut weight_tile = Shared::<[F]>::new_slice(comptime!(DEPTH * SIDE * tile_cols)); // [DEPTH][cols]
    let mut sums = Array::<F>::new(comptime!(tile_rows * tile_cols));
    #[unroll]
    for i in 0..tile_rows * tile_cols {
        sums[i] = F::new(0.0);
    }
    let mut k0 = 0usize;
    while k0 < k {
        // Stage the slices, `tile_rows` and `tile_cols` values per thread, read along k (lhs,
        // and a transposed weight) or along n (a weight stored [K, N]) so neighbours read
        // neighbours.
        #[unroll]
        for r in 0..tile_rows {
            let e = thread + r * THREADS;
            let (row, depth) = (e / DEPTH, e % DEPTH);
            let mut value = F::new(0.0);
            if row_base + row < m && k0 + depth < k {
                value = lhs[(row_base + row) * k + k0 + depth];
            }
            lhs_tile[depth * block_rows + row] = value;
        }
        #[unroll]
        for r in 0..tile_cols {
            let e = thread + r * THREADS;
            let mut w = F::new(0.0);
            if comptime!(transposed) {
                let (col, depth) = (e / DEPTH, e % DEPTH);
                if col_base + col < n && k0 + depth < k {
                    w = weight[(col_base + col) * k + k0 + depth];
                }
                weight_tile[depth * block_cols + col] = w;
            } else {
                let (depth, col) = (e / block_cols, e % block_cols);
                if col_base + col < n && k0 + depth < k {
                    w = weight[(k0 + depth) * n + col_base + col];
                }
                weight_tile[depth * block_cols + col] = w;
            }
        }
        sync_cube();
        #[unroll]
        for depth in 0..DEPTH {
            let mut a = Array::<F>::new(tile_rows);
            let mut b = Array::<F>::new(tile_cols);
            #[unroll]
            for i in 0..tile_rows {
                a[i] = lhs_tile[depth * block_rows + ty + i * SIDE];
            }
            #[unroll]
            for j in 0..tile_cols {
                b[j] = weight_tile[depth * block_cols + tx + j * SIDE];
            }
            #[unroll]
            for i in 0..tile_rows {
                #[unroll]
                for j in 0..tile_cols {
                    sums[i * tile_cols + j] += a[i] * b[j];
                }
            }
        }
        sync_cube();
        k0 += DEPTH;
    }
    #[unroll]
    for i in 0..tile_rows {
        let row = row_base + ty + i * SIDE;
        #[unroll]
        for j in 0..tile_cols {
            let col = col_base + tx + j * SIDE;
            if row < m && col < n {
                out[row * n + col] = sums[i * tile_cols + j];
            }
        }
    }
}

/// Threads per side of a cube: a thread computing `rows × cols` outputs makes a cube's block
/// `16·rows × 16·cols`.
pub const TILE_SIDE: usize = SIDE;

/// `lhs [M, K] · weight`: `weight` is `[K, N]`, or `[N, K]` and used transposed. `[M, N]`,
/// each thread computing `tile.0 × tile.1` outputs.
pub fn matmul(lhs: CubeTensor, weight: CubeTensor, transposed: bool, tile: (usize, usize)) -> CubeTensor {
    let (tile_rows, tile_cols) = tile;
    let (lhs, weight) = (into_contiguous(lhs), into_contiguous(weight));
    let [m, _] = lhs.shape().dims::<2>();
    let [a, b] = weight.shape().dims::<2>();
    let n = if transposed { a } else { b };
    let client = lhs.client.clone();
    let out = empty_like(&lhs, Shape::new([m, n]));
    let dtype = elements(&lhs);
    matmul_kernel::launch(
        &client,
        CubeCount::Static(n.div_ceil(SIDE * tile_cols) as u32, m.div_ceil(SIDE * tile_rows) as u32, 1),
        CubeDim::new_1d(THREADS as u32),
        lhs.into_tensor_arg(),
        weight.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        transposed,
        tile_rows,
        tile_cols,
        dtype,
    );
    out
}
