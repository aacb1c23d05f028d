//! What the row kernels share: one cube (workgroup) per row, its threads striding over the
//! row, and sums and maxima across a cube in shared memory.

use burn_backend::cubecl::dtype_to_storage_type;
use burn_backend::Shape;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

/// Threads of one cube (workgroup) in the row kernels: one cube per row, each thread striding
/// over the row. 256 is within every runtime's limit (WebGPU guarantees 256) and wide enough to
/// keep a row's reads coalesced.
pub const ROW_THREADS: u32 = 256;

/// Threads for a cube working on a row of `width` values: the width rounded up to a power of
/// two (the halving in [`cube_combine`] needs one), from 32 (a warp on NVIDIA, below which a
/// GPU idles lanes) to [`ROW_THREADS`]. A narrow row in a 256-thread cube would leave most of
/// its threads idle through every halving step and its barrier: on lavapipe, which runs a
/// cube's threads on a CPU core, LayerNorm's backward over 320 rows of 64 took 8.9 ms a launch.
pub fn row_threads(width: usize) -> u32 {
    width.next_power_of_two().clamp(32, ROW_THREADS as usize) as u32
}

/// Cubes for `rows` one-row cubes, as a grid whose x extent stays within every runtime's
/// 65,535 limit; kernels number a row `CUBE_POS_Y · CUBE_COUNT_X + CUBE_POS_X`.
pub fn row_cubes(rows: usize) -> CubeCount {
    const MAX_X: usize = 65_535;
    let x = rows.clamp(1, MAX_X);
    CubeCount::Static(x as u32, rows.div_ceil(x).max(1) as u32, 1)
}

/// An uninitialised tensor of `shape` on `like`'s device, in its element type.
pub fn empty_like(like: &CubeTensor, shape: Shape) -> CubeTensor {
    empty_device_dtype(like.client.clone(), like.device.clone(), shape, like.dtype)
}

/// The storage type a kernel's `#[define(F)]` takes for `tensor`'s elements.
pub fn elements(tensor: &CubeTensor) -> ElemType {
    dtype_to_storage_type(tensor.dtype)
}

/// The row this cube works on (see [`row_cubes`]).
#[cube]
pub fn cube_row() -> usize {
    (CUBE_POS_Y * CUBE_COUNT_X + CUBE_POS_X) as usize
}

/// This thread's element in a grid of [`row_cubes`] of `CUBE_DIM_X` threads each: one element
/// per thread, numbered across cubes.
#[cube]
pub fn cube_element() -> usize {
    cube_row() * CUBE_DIM_X as usize + UNIT_POS_X as usize
}

/// How [`cube_combine`] merges two threads' values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Combine {
    Sum,
    Max,
    Min,
}

/// The sum of every thread's `value` in the cube, returned to every thread.
#[cube]
pub fn cube_sum<F: Float>(value: F, #[comptime] threads: u32) -> F {
    cube_combine::<F>(value, Combine::Sum, threads)
}

/// The maximum of every thread's `value` in the cube, returned to every thread.
#[cube]
pub fn cube_max<F: Float>(value: F, #[comptime] threads: u32) -> F {
    cube_combine::<F>(value, Combine::Max, threads)
}

/// Every thread's `value` combined across the cube (`op`: the sum, the maximum or the minimum)
/// by halving in shared memory, returned to every thread.
#[cube]
pub fn cube_combine<N: Numeric>(value: N, #[comptime] op: Combine, #[comptime] threads: u32) -> N {
    let mut partial = Shared::<[N]>::new_slice(threads as usize);
    let unit = UNIT_POS_X as usize;
    partial[unit] = value;
    sync_cube();
    // CUBE_DIM_X (= threads) read at run time: a mutable variable set from a comptime value stays comptime.
    let mut half = CUBE_DIM_X as usize / 2;
    while half > 0 {
        if unit < half {
            let other = partial[unit + half];
            match comptime!(op) {
                Combine::Sum => partial[unit] = partial[unit] + other,
                Combine::Max => {
                    if other > partial[unit] {
                        partial[unit] = other;
                    }
                }
                Combine::Min => {
                    if other < partial[unit] {
                        partial[unit] = other;
                    }
                }
            }
        }
        sync_cube();
        half /= 2;
    }
    let total = partial[0];
    // Every thread has read the total before a later call reuses shared memory.
    sync_cube();
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_cube_is_a_power_of_two_from_a_warp_to_row_threads() {
        let cases = [(1, 32), (16, 32), (33, 64), (64, 64), (70, 128), (768, 256), (50_257, 256)];
        for (width, threads) in cases {
            assert_eq!(row_threads(width), threads, "a row of {width}");
        }
    }
}
