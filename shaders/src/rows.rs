//! What the row kernels share: one cube (workgroup) per row, its threads striding over the
//! row, and sums and maxima across a cube in shared memory.

use cubecl::prelude::*;

/// Threads of one cube (workgroup) in the row kernels: one cube per row, each thread striding
/// over the row. 256 is within every runtime's limit (WebGPU guarantees 256) and wide enough to
/// keep a row's reads coalesced.
pub const ROW_THREADS: u32 = 256;

/// Cubes for `rows` one-row cubes, as a grid whose x extent stays within every runtime's
/// 65,535 limit; kernels number a row `CUBE_POS_Y · CUBE_COUNT_X + CUBE_POS_X`.
pub fn row_cubes(rows: usize) -> CubeCount {
    const MAX_X: usize = 65_535;
    let x = rows.clamp(1, MAX_X);
    CubeCount::Static(x as u32, rows.div_ceil(x).max(1) as u32, 1)
}

/// The row this cube works on (see [`row_cubes`]).
#[cube]
pub fn cube_row() -> usize {
    (CUBE_POS_Y * CUBE_COUNT_X + CUBE_POS_X) as usize
}

/// The sum of every thread's `value` in the cube, returned to every thread.
#[cube]
pub fn cube_sum<F: Float>(value: F, #[comptime] threads: u32) -> F {
    let mut partial = Shared::<[F]>::new_slice(threads as usize);
    let unit = UNIT_POS_X as usize;
    partial[unit] = value;
    sync_cube();
    // CUBE_DIM_X (= threads) read at run time: a mutable variable set from a comptime value stays comptime.
    let mut half = CUBE_DIM_X as usize / 2;
    while half > 0 {
        if unit < half {
            partial[unit] = partial[unit] + partial[unit + half];
        }
        sync_cube();
        half /= 2;
    }
    let total = partial[0];
    // Every thread has read the total before a later call reuses shared memory.
    sync_cube();
    total
}

/// The maximum of every thread's `value` in the cube, returned to every thread.
#[cube]
pub fn cube_max<F: Float>(value: F, #[comptime] threads: u32) -> F {
    let mut partial = Shared::<[F]>::new_slice(threads as usize);
    let unit = UNIT_POS_X as usize;
    partial[unit] = value;
    sync_cube();
    let mut half = CUBE_DIM_X as usize / 2;
    while half > 0 {
        if unit < half && partial[unit + half] > partial[unit] {
            partial[unit] = partial[unit + half];
        }
        sync_cube();
        half /= 2;
    }
    let total = partial[0];
    sync_cube();
    total
}
