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

/// Where a cube's block starts and the problem's sizes.
#[derive(CubeType, Clone, Copy)]
struct Block {
    row_base: usize,
    col_base: usize,
    m: usize,
    k: usize,
    n: usize,
}

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
    let block = Block {
        row_base: CUBE_POS_Y as usize * comptime!(SIDE * tile_rows),
        col_base: CUBE_POS_X as usize * comptime!(SIDE * tile_cols),
        m: lhs.shape(0),
        k: lhs.shape(1),
        n: out.shape(1),
    };
    let mut lhs_tile = Shared::<[F]>::new_slice(comptime!(DEPTH * SIDE * tile_rows)); // [DEPTH][rows]
    let mut weight_tile = Shared::<[F]>::new_slice(comptime!(DEPTH * SIDE * tile_cols)); // [DEPTH][cols]
    let mut sums = Array::<F>::new(comptime!(tile_rows * tile_cols));
    #[unroll]
    for i in 0..tile_rows * tile_cols {
        sums[i] = F::new(0.0);
    }
    let mut k0 = 0usize;
    while k0 < block.k {
        stage_lhs(lhs, &mut lhs_tile, &block, k0, tile_rows);
        stage_weight(weight, &mut weight_tile, &block, k0, transposed, tile_cols);
        sync_cube();
        multiply(&lhs_tile, &weight_tile, &mut sums, tile_rows, tile_cols);
        sync_cube();
        k0 += DEPTH;
    }
    let (tx, ty) = (UNIT_POS_X as usize % SIDE, UNIT_POS_X as usize / SIDE);
    #[unroll]
    for i in 0..tile_rows {
        let row = block.row_base + ty + i * SIDE;
        #[unroll]
        for j in 0..tile_cols {
            let col = block.col_base + tx + j * SIDE;
            if row < block.m && col < block.n {
                out[row * block.n + col] = sums[i * tile_cols + j];
            }
        }
    }
}

/// Stages the slice `k0..k0 + DEPTH` of the block's rows of `lhs`, k-major, `tile_rows` values
/// per thread read along k so that neighbours read neighbours (zeros past the edges).
#[cube]
fn stage_lhs<F: Float>(lhs: &Tensor<F>, tile: &mut Shared<[F]>, block: &Block, k0: usize, #[comptime] tile_rows: usize) {
    let block_rows = comptime!(SIDE * tile_rows);
    #[unroll]
    for r in 0..tile_rows {
        let e = UNIT_POS_X as usize + r * THREADS;
        let (row, depth) = (e / DEPTH, e % DEPTH);
        let mut value = F::new(0.0);
        if block.row_base + row < block.m && k0 + depth < block.k {
            value = lhs[(block.row_base + row) * block.k + k0 + depth];
        }
        tile[depth * block_rows + row] = value;
    }
}

/// Stages the slice `k0..k0 + DEPTH` of the block's columns of the weight, k-major, read along
/// k (a transposed weight) or along n (a weight stored [K, N]).
#[cube]
fn stage_weight<F: Float>(weight: &Tensor<F>, tile: &mut Shared<[F]>, block: &Block, k0: usize, #[comptime] transposed: bool, #[comptime] tile_cols: usize) {
    let block_cols = comptime!(SIDE * tile_cols);
    #[unroll]
    for r in 0..tile_cols {
        let e = UNIT_POS_X as usize + r * THREADS;
        let mut w = F::new(0.0);
        if comptime!(transposed) {
            let (col, depth) = (e / DEPTH, e % DEPTH);
            if block.col_base + col < block.n && k0 + depth < block.k {
                w = weight[(block.col_base + col) * block.k + k0 + depth];
            }
            tile[depth * block_cols + col] = w;
        } else {
            let (depth, col) = (e / block_cols, e % block_cols);
            if block.col_base + col < block.n && k0 + depth < block.k {
                w = weight[(k0 + depth) * block.n + block.col_base + col];
            }
            tile[depth * block_cols + col] = w;
        }
    }
}

/// Adds the staged slices' products into this thread's outputs: rows `ty + 16i`, columns
/// `tx + 16j`.
#[cube]
fn multiply<F: Float>(lhs_tile: &Shared<[F]>, weight_tile: &Shared<[F]>, sums: &mut Array<F>, #[comptime] tile_rows: usize, #[comptime] tile_cols: usize) {
    let (block_rows, block_cols) = (comptime!(SIDE * tile_rows), comptime!(SIDE * tile_cols));
    let (tx, ty) = (UNIT_POS_X as usize % SIDE, UNIT_POS_X as usize / SIDE);
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
