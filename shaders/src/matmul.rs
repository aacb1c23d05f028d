//! A frozen weight's matrix product, `x · W` or `x · Wᵀ`, as a classic tiled kernel: each cube
//! computes a block of the output (64 × 64 by default) from slices 16 deep of the inputs staged
//! in shared memory, each of its 256 threads a grid of outputs (4 × 4) held in registers.
//!
//! On an H200 in f32 Burn's matmuls (CubeCL's unit-level kernels, the best its autotune found
//! for f32 on Vulkan) ran at ~4 TFLOP/s and took 38.8 of a training step's 44.2 ms of GPU time.
//! This kernel is the candidate `bench matmul` times against them; it is opt-in
//! (`PREFIX_TUNE_MATMUL=shaders`) until a GPU says it is faster.
//!
//! The block's shape is chosen per launch (`bench matmul` times several), and so is how a
//! thread reads the staged slices ([`Tiling`]): one value at a time, its outputs strided by 16
//! (rows `ty + 16i`, columns `tx + 16j`), or in vectors of four, its outputs in runs of four
//! strided by 64 (rows `4(ty + 16i) + r`, columns `4(tx + 16j) + c`), so a depth of an 8 × 8
//! grid is four 16-byte reads. Either way a warp's shared-memory reads are broadcasts or
//! consecutive.
//!
//! What a GPU needs beyond the textbook tiling, for a training step's shapes (a few hundred rows):
//! - **K split across cubes.** A product with few output blocks and a long K (the LM head's input
//!   gradient: 160 × 768 outputs, K = 50,257) would run on a few dozen cubes, each looping over
//!   all of K, and leave most of a large GPU idle. Such a product splits K into parts summed by
//!   separate cubes (see [`splits`]), then adds the parts in a fixed order, so the result does
//!   not depend on timing.
//! - **The next slice read while this one is multiplied.** Each thread loads its values of the
//!   next slice into registers before the products of the current one, hiding the global read.
//! - **The bias added as the outputs are written**, so a linear layer is one launch (Burn's
//!   fusion folds the addition into its own matmul), and with it an activation or the residual
//!   stream ([`epilogue`](crate::epilogue)): where K is split, by the kernel that adds the
//!   parts.
//! - **No shared-memory bank conflicts when staging.** Values are read along K (coalesced) and
//!   stored K-major, so the 16 threads of one row's slice write 16 different k-rows: rows padded
//!   by two values put a warp's 32 writes in 32 different banks. Vectors of four are stored by
//!   eight threads at a time, 16 bytes each: k-rows padded by one vector put those eight in
//!   eight different groups of four banks.

use burn_backend::{Shape, TensorMetadata};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use crate::epilogue::{finish, Addends, Epilogue};
use crate::rows::{cube_element, elements, empty_like, row_cubes, ROW_THREADS};

/// Depth of one staged slice of K.
const DEPTH: usize = 16;
/// Threads per side of a cube: 16 × 16, each computing `rows × cols` outputs.
const SIDE: usize = 16;
const THREADS: usize = SIDE * SIDE;
/// The cubes a product should launch before it splits K: two per multiprocessor of the largest
/// GPUs (132 on an H100 or H200). wgpu does not report the count.
const TARGET_CUBES: usize = 256;
/// The least depth of K one split works through: 16 slices, so that its partial sums' write
/// and read back stay small beside its products.
const MIN_SPLIT_DEPTH: usize = 16 * DEPTH;

/// How a cube shares out its block: each thread computes `rows × cols` outputs, in runs of
/// `run` neighbouring rows and columns (1 or 4). A cube's block is `16·rows × 16·cols`.
///
/// With runs of 4 a thread reads each depth of the staged slices as vectors of four values, so
/// an 8 × 8 grid of outputs costs 4 shared-memory reads per 64 multiply-adds instead of 16: a
/// GPU issues one shared-memory read per four arithmetic instructions, so scalar reads of a
/// 4 × 4 grid (8 per 16) hold the arithmetic to half its rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tiling {
    pub rows: usize,
    pub cols: usize,
    pub run: usize,
}

impl Tiling {
    /// Vectors of `run` values along one k-row of a staged slice of `width` values, plus the
    /// padding that keeps its stores free of bank conflicts (see the module's notes): two
    /// values for scalar runs, one vector of four otherwise.
    fn stride(self, width: usize) -> usize {
        width / self.run + if self.run == 1 { 2 } else { 1 }
    }
}

impl std::fmt::Display for Tiling {
    /// The block as `ROWSxCOLS`, with `_v4` for vector reads: `64x64`, `128x128_v4`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}", SIDE * self.rows, SIDE * self.cols)?;
        if self.run > 1 {
            write!(f, "_v{}", self.run)?;
        }
        Ok(())
    }
}

/// Where a cube's block starts, the problem's sizes and the cube's share of K.
#[derive(CubeType, Clone, Copy)]
struct Block {
    row_base: usize,
    col_base: usize,
    m: usize,
    n: usize,
    /// The length of a row of `lhs` (and of a transposed weight).
    k: usize,
    /// Where this cube's share of K ends.
    k_end: usize,
}

#[cube(launch_unchecked)]
fn matmul_kernel<F: Float, N: Size>(
    lhs: &Tensor<F>,     // [M, K]
    weight: &Tensor<F>,  // [K, N], or [N, K] when `transposed`
    bias: &Tensor<F>,     // [N], read only when the epilogue is biased
    residual: &Tensor<F>, // [M, N], read only when the epilogue adds it
    out: &mut Tensor<F>,  // [splits · M, N]: split z's partial sums in rows z·M..(z + 1)·M
    span: u32,            // the depth of K each split sums, a multiple of DEPTH
    #[comptime] transposed: bool,
    #[comptime] epilogue: Epilogue, // none where K is split: the parts' sum takes it
    #[comptime] tiling: Tiling, // `run` is N's size
    #[define(F)] _dtype: ElemType,
) {
    let k = lhs.shape(1);
    let k_start = CUBE_POS_Z as usize * span as usize;
    let mut k_end = k_start + span as usize;
    if k_end > k {
        k_end = k;
    }
    let block = Block {
        row_base: CUBE_POS_Y as usize * comptime!(SIDE * tiling.rows),
        col_base: CUBE_POS_X as usize * comptime!(SIDE * tiling.cols),
        m: lhs.shape(0),
        n: out.shape(1),
        k,
        k_end,
    };
    // Staged slices, k-major: [DEPTH][block rows (or columns) / run + padding] vectors.
    let mut lhs_tile = Shared::<[Vector<F, N>]>::new_slice(comptime!(DEPTH * tiling.stride(SIDE * tiling.rows)));
    let mut weight_tile = Shared::<[Vector<F, N>]>::new_slice(comptime!(DEPTH * tiling.stride(SIDE * tiling.cols)));
    let mut lhs_next = Array::<Vector<F, N>>::new(comptime!(tiling.rows / tiling.run));
    let mut weight_next = Array::<Vector<F, N>>::new(comptime!(tiling.cols / tiling.run));
    // Row i, vector j of this thread's outputs at i · (cols / run) + j.
    let mut sums = Array::<Vector<F, N>>::new(comptime!(tiling.rows * tiling.cols / tiling.run));
    #[unroll]
    for i in 0..comptime!(tiling.rows * tiling.cols / tiling.run) {
        sums[i] = Vector::new(F::new(0.0));
    }
    load_lhs(lhs, &mut lhs_next, &block, k_start, tiling);
    load_weight(weight, &mut weight_next, &block, k_start, transposed, tiling);
    let mut k0 = k_start;
    while k0 < k_end {
        store_lhs(&lhs_next, &mut lhs_tile, tiling);
        store_weight(&weight_next, &mut weight_tile, transposed, tiling);
        sync_cube();
        let k1 = k0 + DEPTH;
        if k1 < k_end {
            load_lhs(lhs, &mut lhs_next, &block, k1, tiling);
            load_weight(weight, &mut weight_next, &block, k1, transposed, tiling);
        }
        multiply(&lhs_tile, &weight_tile, &mut sums, tiling);
        sync_cube();
        k0 = k1;
    }
    write_out(&sums, bias, residual, out, &block, epilogue, tiling);
}

/// Writes this thread's outputs (rows `(ty + 16i)·run + r`, columns `(tx + 16j)·run + c` of the
/// block) into its split's rows of `out`, through the epilogue.
#[cube]
#[allow(clippy::too_many_arguments)]
fn write_out<F: Float, N: Size>(sums: &Array<Vector<F, N>>, bias: &Tensor<F>, residual: &Tensor<F>, out: &mut Tensor<F>, block: &Block, #[comptime] epilogue: Epilogue, #[comptime] tiling: Tiling) {
    let (tx, ty) = (UNIT_POS_X as usize % SIDE, UNIT_POS_X as usize / SIDE);
    let split_base = CUBE_POS_Z as usize * block.m * block.n;
    let vectors = comptime!(tiling.cols / tiling.run);
    #[unroll]
    for i in 0..comptime!(tiling.rows / tiling.run) {
        #[unroll]
        for r in 0..tiling.run {
            let row = block.row_base + (ty + i * SIDE) * tiling.run + r;
            #[unroll]
            for j in 0..vectors {
                let values = sums[(i * tiling.run + r) * vectors + j];
                #[unroll]
                for c in 0..tiling.run {
                    let col = block.col_base + (tx + j * SIDE) * tiling.run + c;
                    if row < block.m && col < block.n {
                        let at = row * block.n + col;
                        out[split_base + at] = finish::<F>(values.extract(c), bias, residual, col, at, epilogue);
                    }
                }
            }
        }
    }
}

/// The vector of the block's rows and the depth in the slice of the `v`-th vector of `lhs`
/// this thread stages: 16 neighbouring threads read one vector's rows at 16 neighbouring
/// values of K.
#[cube]
fn lhs_place(v: usize) -> (usize, usize) {
    let e = UNIT_POS_X as usize + v * THREADS;
    (e / DEPTH, e % DEPTH)
}

/// The vector of the block's columns and the depth in the slice of the `v`-th vector of the
/// weight this thread stages: read along k (a transposed weight) or along n (a weight stored
/// [K, N]).
#[cube]
fn weight_place(v: usize, #[comptime] transposed: bool, #[comptime] tiling: Tiling) -> (usize, usize) {
    let e = UNIT_POS_X as usize + v * THREADS;
    let vectors = comptime!(SIDE * tiling.cols / tiling.run);
    if comptime!(transposed) {
        (e / DEPTH, e % DEPTH)
    } else {
        (e % vectors, e / vectors)
    }
}

/// Reads this thread's vectors of the slice `k0..k0 + DEPTH` of the block's rows of `lhs`
/// (zeros past the edges and past the cube's share of K).
#[cube]
fn load_lhs<F: Float, N: Size>(lhs: &Tensor<F>, next: &mut Array<Vector<F, N>>, block: &Block, k0: usize, #[comptime] tiling: Tiling) {
    #[unroll]
    for v in 0..comptime!(tiling.rows / tiling.run) {
        let (rows, depth) = lhs_place(v);
        let mut values = Vector::<F, N>::empty();
        #[unroll]
        for r in 0..tiling.run {
            let row = block.row_base + rows * tiling.run + r;
            let mut value = F::new(0.0);
            if row < block.m && k0 + depth < block.k_end {
                value = lhs[row * block.k + k0 + depth];
            }
            values.insert(r, value);
        }
        next[v] = values;
    }
}

/// Stores the vectors [`load_lhs`] read into the staged slice, k-major.
#[cube]
fn store_lhs<F: Float, N: Size>(next: &Array<Vector<F, N>>, tile: &mut Shared<[Vector<F, N>]>, #[comptime] tiling: Tiling) {
    let stride = comptime!(tiling.stride(SIDE * tiling.rows));
    #[unroll]
    for v in 0..comptime!(tiling.rows / tiling.run) {
        let (rows, depth) = lhs_place(v);
        tile[depth * stride + rows] = next[v];
    }
}

/// Reads this thread's vectors of the slice `k0..k0 + DEPTH` of the block's columns of the
/// weight (zeros past the edges and past the cube's share of K).
#[cube]
fn load_weight<F: Float, N: Size>(weight: &Tensor<F>, next: &mut Array<Vector<F, N>>, block: &Block, k0: usize, #[comptime] transposed: bool, #[comptime] tiling: Tiling) {
    #[unroll]
    for v in 0..comptime!(tiling.cols / tiling.run) {
        let (cols, depth) = weight_place(v, transposed, tiling);
        let mut values = Vector::<F, N>::empty();
        #[unroll]
        for c in 0..tiling.run {
            let col = block.col_base + cols * tiling.run + c;
            let mut w = F::new(0.0);
            if col < block.n && k0 + depth < block.k_end {
                if comptime!(transposed) {
                    w = weight[col * block.k + k0 + depth];
                } else {
                    w = weight[(k0 + depth) * block.n + col];
                }
            }
            values.insert(c, w);
        }
        next[v] = values;
    }
}

/// Stores the vectors [`load_weight`] read into the staged slice, k-major.
#[cube]
fn store_weight<F: Float, N: Size>(next: &Array<Vector<F, N>>, tile: &mut Shared<[Vector<F, N>]>, #[comptime] transposed: bool, #[comptime] tiling: Tiling) {
    let stride = comptime!(tiling.stride(SIDE * tiling.cols));
    #[unroll]
    for v in 0..comptime!(tiling.cols / tiling.run) {
        let (cols, depth) = weight_place(v, transposed, tiling);
        tile[depth * stride + cols] = next[v];
    }
}

/// Adds the staged slices' products into this thread's outputs: each depth's vectors of rows
/// `(ty + 16i)·run ..` and of columns `(tx + 16j)·run ..`, each row's value times a vector of
/// columns.
#[cube]
fn multiply<F: Float, N: Size>(lhs_tile: &Shared<[Vector<F, N>]>, weight_tile: &Shared<[Vector<F, N>]>, sums: &mut Array<Vector<F, N>>, #[comptime] tiling: Tiling) {
    let (lhs_stride, weight_stride) = (comptime!(tiling.stride(SIDE * tiling.rows)), comptime!(tiling.stride(SIDE * tiling.cols)));
    let (row_vectors, col_vectors) = (comptime!(tiling.rows / tiling.run), comptime!(tiling.cols / tiling.run));
    let (tx, ty) = (UNIT_POS_X as usize % SIDE, UNIT_POS_X as usize / SIDE);
    #[unroll]
    for depth in 0..DEPTH {
        let mut a = Array::<Vector<F, N>>::new(row_vectors);
        let mut b = Array::<Vector<F, N>>::new(col_vectors);
        #[unroll]
        for i in 0..row_vectors {
            a[i] = lhs_tile[depth * lhs_stride + ty + i * SIDE];
        }
        #[unroll]
        for j in 0..col_vectors {
            b[j] = weight_tile[depth * weight_stride + tx + j * SIDE];
        }
        #[unroll]
        for i in 0..row_vectors {
            #[unroll]
            for r in 0..tiling.run {
                let row_value = Vector::<F, N>::new(a[i].extract(r));
                #[unroll]
                for j in 0..col_vectors {
                    let at = (i * tiling.run + r) * col_vectors + j;
                    sums[at] += row_value * b[j];
                }
            }
        }
    }
}

/// `out[i]` = the sum over splits of `partial[z · len(out) + i]`, in the order of z, through
/// the epilogue.
#[cube(launch_unchecked)]
fn sum_splits_kernel<F: Float>(partial: &Tensor<F>, bias: &Tensor<F>, residual: &Tensor<F>, out: &mut Tensor<F>, #[comptime] epilogue: Epilogue, #[define(F)] _dtype: ElemType) {
    let i = cube_element();
    let len = out.len();
    if i < len {
        let splits = partial.len() / len;
        let mut sum = F::new(0.0);
        for z in 0..splits {
            sum += partial[z * len + i];
        }
        out[i] = finish::<F>(sum, bias, residual, i % out.shape(1), i, epilogue);
    }
}

/// How an `[m, k] · [k, n]` product in `tiling`'s blocks shares out K: the
/// depth each part sums (a whole number of slices) and the number of parts. One part when the
/// blocks alone fill a large GPU (or `split_k` is off), else as many as bring the cubes to
/// about 256, each at least 256 deep, and none left empty.
fn partition(m: usize, k: usize, n: usize, tiling: Tiling, split_k: bool) -> (usize, usize) {
    let blocks = m.div_ceil(SIDE * tiling.rows) * n.div_ceil(SIDE * tiling.cols);
    let wanted = match split_k && blocks < TARGET_CUBES {
        true => TARGET_CUBES.div_ceil(blocks.max(1)).min(k / MIN_SPLIT_DEPTH).max(1),
        false => 1,
    };
    let span = k.div_ceil(wanted).next_multiple_of(DEPTH).max(DEPTH);
    (span, k.div_ceil(span).max(1))
}

/// Into how many parts [`matmul`] splits the K of an `[m, k] · [k, n]` product in `tiling`'s
/// blocks (1: not split).
pub fn splits(m: usize, k: usize, n: usize, tiling: Tiling) -> usize {
    partition(m, k, n, tiling, true).1
}

/// `activation(lhs [M, K] · weight + bias) + residual`: `weight` is `[K, N]`, or `[N, K]` and
/// used transposed; the bias `[N]` and the residual `[M, N]` of `addends`, where there are
/// some, are added as the outputs are written. `[M, N]`, in `tiling`'s blocks (runs of 1 or 4);
/// K split across cubes as [`splits`] says when `split_k`.
pub fn matmul(lhs: CubeTensor, weight: CubeTensor, addends: Addends, transposed: bool, tiling: Tiling, split_k: bool) -> CubeTensor {
    assert!(matches!(tiling.run, 1 | 4) && tiling.rows % tiling.run == 0 && tiling.cols % tiling.run == 0, "{tiling:?}: runs of 1 or 4 that divide the thread's rows and columns");
    let (lhs, weight) = (into_contiguous(lhs), into_contiguous(weight));
    let [m, k] = lhs.shape().dims::<2>();
    let [a, b] = weight.shape().dims::<2>();
    let n = if transposed { a } else { b };
    let epilogue = addends.epilogue();
    let (bias, residual) = addends.tensors(&lhs, m, n);
    let (cubes_x, cubes_y) = (n.div_ceil(SIDE * tiling.cols), m.div_ceil(SIDE * tiling.rows));
    let (span, parts) = partition(m, k, n, tiling, split_k);
    let client = lhs.client.clone();
    let out = empty_like(&lhs, Shape::new([parts * m, n]));
    let dtype = elements(&lhs);
    // SAFETY: every global read and write is guarded by the bounds it indexes within (`m`, `n`,
    // the split's end of K; the bias and the residual only at outputs within `[m, n]`) and every
    // loop ends at `k_end`.
    unsafe {
        matmul_kernel::launch_unchecked(
            &client,
            CubeCount::Static(cubes_x as u32, cubes_y as u32, parts as u32),
            CubeDim::new_1d(THREADS as u32),
            tiling.run,
            lhs.into_tensor_arg(),
            weight.into_tensor_arg(),
            bias.clone().into_tensor_arg(),
            residual.clone().into_tensor_arg(),
            out.clone().into_tensor_arg(),
            span as u32,
            transposed,
            if parts == 1 { epilogue } else { Epilogue::default() },
            tiling,
            dtype,
        );
    }
    if parts == 1 {
        return out;
    }
    let summed = empty_like(&out, Shape::new([m, n]));
    // SAFETY: each thread reads `partial` at `z · m · n + i` for `i < m · n` and `z < parts`.
    unsafe {
        sum_splits_kernel::launch_unchecked(
            &client,
            row_cubes((m * n).div_ceil(ROW_THREADS as usize)),
            CubeDim::new_1d(ROW_THREADS),
            out.into_tensor_arg(),
            bias.into_tensor_arg(),
            residual.into_tensor_arg(),
            summed.clone().into_tensor_arg(),
            epilogue,
            dtype,
        );
    }
    summed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_products_too_small_for_a_large_gpu_split_k() {
        let block_64 = Tiling { rows: 4, cols: 4, run: 1 };
        // A training step's body products at batch 5 × 64 in 64 × 64 blocks.
        assert_eq!(splits(320, 768, 3072, block_64), 2); // 240 blocks
        assert_eq!(splits(320, 3072, 768, block_64), 5); // 60 blocks
        // The LM head over 160 labelled rows: forward (3 × 786 blocks) never splits; its input
        // gradient (3 × 12 blocks) does.
        assert_eq!(splits(160, 768, 50_257, block_64), 1);
        assert_eq!(splits(160, 50_257, 768, block_64), 8);
        // Short K never splits below 256 deep.
        assert_eq!(splits(16, 300, 16, block_64), 1);
        assert_eq!(splits(16, 600, 16, block_64), 2);
        // The count is of parts that exist: the LM head's gradient at 320 rows in 128 × 128
        // blocks (3 of them) wants 86 parts, and 592-deep parts make 85.
        let block_128 = Tiling { rows: 8, cols: 8, run: 4 };
        assert_eq!(splits(320, 50_257, 64, block_128), 85);
        assert_eq!(partition(320, 50_257, 64, block_128, false), (50_272, 1));
    }
}
