//! A frozen weight's matrix product, `x · W` or `x · Wᵀ`, as a classic tiled kernel: each cube
//! computes a 64 × 64 block of the output from 64 × 16 and 16 × 64 tiles of the inputs staged
//! in shared memory, each of its 256 threads a 4 × 4 grid of outputs held in registers.
//!
//! On an H200 in f32 Burn's matmuls (CubeCL's unit-level kernels, the best its autotune found
//! for f32 on Vulkan) ran at ~4 TFLOP/s and took 38.8 of a training step's 44.2 ms of GPU time.
//! This kernel is the candidate `bench matmul` times against them; it is opt-in
//! (`PREFIX_TUNE_MATMUL=shaders`) until a GPU says it is faster.
//!
//! A thread's outputs are strided by 16 (rows `ty + 16i`, columns `tx + 16j`), so a warp's
//! stores are contiguous and its shared-memory reads are broadcasts or consecutive.

use burn_backend::{Shape, TensorMetadata};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use crate::rows::{elements, empty_like};

/// Output rows and columns of one cube's block, and the depth of one staged slice.
const BLOCK: usize = 64;
const DEPTH: usize = 16;
/// Threads per block side: 16 × 16 threads, each with 4 × 4 outputs.
const SIDE: usize = 16;
const PER_THREAD: usize = BLOCK / SIDE;
const THREADS: usize = SIDE * SIDE;

#[cube(launch)]
fn matmul_kernel<F: Float>(
    lhs: &Tensor<F>,     // [M, K]
    weight: &Tensor<F>,  // [K, N], or [N, K] when `transposed`
    out: &mut Tensor<F>, // [M, N]
    #[comptime] transposed: bool,
    #[define(F)] _dtype: ElemType,
) {
    let (m, k) = (lhs.shape(0), lhs.shape(1));
    let n = out.shape(1);
    let thread = UNIT_POS_X as usize;
    let (tx, ty) = (thread % SIDE, thread / SIDE);
    let (row_base, col_base) = (CUBE_POS_Y as usize * BLOCK, CUBE_POS_X as usize * BLOCK);
    let mut lhs_tile = Shared::<[F]>::new_slice(DEPTH * BLOCK); // [DEPTH][BLOCK]: k-major
    let mut weight_tile = Shared::<[F]>::new_slice(DEPTH * BLOCK); // [DEPTH][BLOCK]
    let mut sums = Array::<F>::new(PER_THREAD * PER_THREAD);
    #[unroll]
    for i in 0..PER_THREAD * PER_THREAD {
        sums[i] = F::new(0.0);
    }
    let mut k0 = 0usize;
    while k0 < k {
        // Stage the slices: 1,024 values each, four per thread, read along k (lhs, and a
        // transposed weight) or along n (a weight stored [K, N]) so neighbours read neighbours.
        #[unroll]
        for r in 0..(DEPTH * BLOCK) / THREADS {
            let e = thread + r * THREADS;
            let (row, depth) = (e / DEPTH, e % DEPTH);
            let mut value = F::new(0.0);
            if row_base + row < m && k0 + depth < k {
                value = lhs[(row_base + row) * k + k0 + depth];
            }
            lhs_tile[depth * BLOCK + row] = value;
            let mut w = F::new(0.0);
            if comptime!(transposed) {
                let (col, depth) = (e / DEPTH, e % DEPTH);
                if col_base + col < n && k0 + depth < k {
                    w = weight[(col_base + col) * k + k0 + depth];
                }
                weight_tile[depth * BLOCK + col] = w;
            } else {
                let (depth, col) = (e / BLOCK, e % BLOCK);
                if col_base + col < n && k0 + depth < k {
                    w = weight[(k0 + depth) * n + col_base + col];
                }
                weight_tile[depth * BLOCK + col] = w;
            }
        }
        sync_cube();
        #[unroll]
        for depth in 0..DEPTH {
            let mut a = Array::<F>::new(PER_THREAD);
            let mut b = Array::<F>::new(PER_THREAD);
            #[unroll]
            for i in 0..PER_THREAD {
                a[i] = lhs_tile[depth * BLOCK + ty + i * SIDE];
                b[i] = weight_tile[depth * BLOCK + tx + i * SIDE];
            }
            #[unroll]
            for i in 0..PER_THREAD {
                #[unroll]
                for j in 0..PER_THREAD {
                    sums[i * PER_THREAD + j] += a[i] * b[j];
                }
            }
        }
        sync_cube();
        k0 += DEPTH;
    }
    #[unroll]
    for i in 0..PER_THREAD {
        let row = row_base + ty + i * SIDE;
        #[unroll]
        for j in 0..PER_THREAD {
            let col = col_base + tx + j * SIDE;
            if row < m && col < n {
                out[row * n + col] = sums[i * PER_THREAD + j];
            }
        }
    }
}

/// `lhs [M, K] · weight`: `weight` is `[K, N]`, or `[N, K]` and used transposed. `[M, N]`.
pub fn matmul(lhs: CubeTensor, weight: CubeTensor, transposed: bool) -> CubeTensor {
    let (lhs, weight) = (into_contiguous(lhs), into_contiguous(weight));
    let [m, _] = lhs.shape().dims::<2>();
    let [a, b] = weight.shape().dims::<2>();
    let n = if transposed { a } else { b };
    let client = lhs.client.clone();
    let out = empty_like(&lhs, Shape::new([m, n]));
    let dtype = elements(&lhs);
    matmul_kernel::launch(
        &client,
        CubeCount::Static(n.div_ceil(BLOCK) as u32, m.div_ceil(BLOCK) as u32, 1),
        CubeDim::new_1d(THREADS as u32),
        lhs.into_tensor_arg(),
        weight.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        transposed,
        dtype,
    );
    out
}
