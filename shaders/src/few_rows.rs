//! A frozen weight's product for a few rows, `x · W + b` with `x` `[M, K]` and `W` stored
//! `[K, N]`, or `x · Wᵀ` with `W` stored `[N, K]` (a tied LM head): a decoding step's linear
//! layers and its head, one row per sequence or beam (more than 8 rows are taken 8 at a time,
//! by more cubes, each reading the weight again).
//!
//! Such a product only reads the weight, once: it is bound by memory, and a tiled kernel
//! ([`matmul`](crate::matmul)) wastes its blocks of 32 rows or more on it. Burn's matmul and its
//! bias addition are two launches per layer there. Here a cube computes 16 columns for every
//! row: its 256 threads are 16 columns × 16 slices of K, each reading its column of the weight
//! at every 16th depth (16 neighbouring threads read 64 contiguous bytes of a k-row; of a
//! transposed weight's row, 16 neighbouring threads are one column's 16 slices) and keeping
//! one sum per row in registers; the 16 slices' sums are then added in a fixed order through
//! shared memory, then the bias, an activation and the residual stream as each output is written
//! ([`epilogue`](crate::epilogue)). One launch, `N / 16` cubes: 48 for a 768-wide output, 144
//! for 2,304. The tuner ([`tune`](crate::tune)) takes it where it is the fastest.
//!
//! A pre-LayerNorm model's layers read a normalised input: GPT-2's `c_attn(ln_1(x))` and
//! `c_fc(ln_2(x))`. Given the norm ([`Norm`]), each cube first takes its rows' mean and 1/σ
//! (the LayerNorm kernel's sums in its order, for a row of 256 values or more) and normalises
//! each value as it reads it, so the norm takes no launch of its own: its rows are a few
//! thousand values, read again from cache.

use burn_backend::ops::FloatTensorOps;
use burn_backend::{DType, Shape, TensorMetadata};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::CubeBackend;
use cubecl::prelude::*;

use crate::epilogue::{finish, Addends, Epilogue};
use crate::rows::{elements, empty_like};

/// The rows a cube takes (one sum per row per thread, in registers).
pub const MAX_ROWS: usize = 8;
/// Columns per cube.
const COLS: usize = 16;
/// Slices of K per cube: a thread sums depths `slice, slice + 16, …`.
const SLICES: usize = 16;
/// Threads per cube.
const THREADS: usize = COLS * SLICES;

/// A LayerNorm (scale `weight`, shift `bias`, both `[K]`) applied to the input's rows as they
/// are read.
#[derive(Debug, Clone)]
pub struct Norm {
    pub weight: CubeTensor,
    pub bias: CubeTensor,
    pub eps: f32,
}

#[cube(launch_unchecked)]
fn few_rows_kernel<F: Float, W: Float>(
    lhs: &Tensor<F>,      // [M, K]
    weight: &Tensor<W>,   // [K, N], read by its strides: contiguous along K when `along_k`
    norm_scale: &Tensor<F>, // [K], read only when `normalized`
    norm_shift: &Tensor<F>, // [K]
    bias: &Tensor<F>,     // [N], read only when the epilogue is biased
    residual: &Tensor<F>, // [M, N], read only when the epilogue adds it
    out: &mut Tensor<F>,  // [M, N]
    eps: f32,
    #[comptime] rows: usize, // per cube: rows CUBE_POS_Y · rows ..
    #[comptime] normalized: bool,
    #[comptime] along_k: bool,
    #[comptime] half: Option<Half>, // W's precision, narrower than F's: inputs rounded to it
    #[comptime] epilogue: Epilogue,
    #[define(F, W)] _dtypes: [ElemType; 2],
) {
    let (m, k, n) = (lhs.shape(0), lhs.shape(1), out.shape(1));
    let (k_stride, n_stride) = (weight.stride(0), weight.stride(1));
    let row_base = CUBE_POS_Y as usize * rows;
    // Neighbouring threads read neighbouring values of the weight: along N (columns) for a
    // weight stored `[K, N]`, along K (slices) for one stored `[N, K]`.
    let mut column = UNIT_POS_X as usize % COLS;
    let mut slice = UNIT_POS_X as usize / COLS;
    if comptime!(along_k) {
        column = UNIT_POS_X as usize / SLICES;
        slice = UNIT_POS_X as usize % SLICES;
    }
    let col = CUBE_POS_X as usize * COLS + column;
    // [rows][SLICES][COLS] (= [rows][THREADS]): the norm's sums first, then each slice's.
    let mut partial = Shared::<[F]>::new_slice(comptime!(rows * THREADS));
    let mut means = Array::<F>::new(rows);
    let mut inv_stds = Array::<F>::new(rows);
    if comptime!(normalized) {
        row_statistics::<F>(lhs, row_base, eps, &mut partial, &mut means, &mut inv_stds, rows);
    }
    let mut sums = Array::<F>::new(rows);
    #[unroll]
    for r in 0..rows {
        sums[r] = F::new(0.0);
    }
    if col < n {
        let mut depth = slice;
        while depth < k {
            let w = F::cast_from(weight[depth * k_stride + col * n_stride]);
            let mut scale = F::new(1.0);
            let mut shift = F::new(0.0);
            if comptime!(normalized) {
                scale = norm_scale[depth];
                shift = norm_shift[depth];
            }
            #[unroll]
            for r in 0..rows {
                if row_base + r < m {
                    let mut value = lhs[(row_base + r) * k + depth];
                    if comptime!(normalized) {
                        value = (value - means[r]) * inv_stds[r] * scale + shift;
                    }
                    if comptime!(half.is_some()) {
                        value = F::cast_from(round_to(f32::cast_from(value), comptime!(half.unwrap())));
                    }
                    sums[r] += value * w;
                }
            }
            depth += SLICES;
        }
    }
    // Each slice's sums, added below in the order of the slices.
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

/// A half-precision type a weight may be in (`--dtype f16` or `bf16`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Half {
    F16,
    Bf16,
}

/// `value` rounded to `half`'s precision (to nearest, ties to even; beyond its range, infinite),
/// as an f32. With integer operations on the bits: a shader's `f32(f16(x))` need not round on
/// every driver (lavapipe keeps the f32).
#[cube]
fn round_to(value: f32, #[comptime] half: Half) -> f32 {
    let bits = u32::reinterpret(value);
    let sign = bits & 0x8000_0000u32;
    let magnitude = bits & 0x7FFF_FFFFu32;
    let mut rounded = magnitude;
    if magnitude < 0x7F80_0000u32 {
        // Not infinite or NaN.
        if comptime!(half == Half::Bf16) {
            // Same exponent as f32: 16 bits of the mantissa dropped, subnormals alike.
            rounded = ((magnitude + 0x7FFFu32 + ((magnitude >> 16) & 1u32)) & 0xFFFF_0000u32).min(0x7F80_0000u32);
        } else {
            rounded = round_to_f16(magnitude);
        }
    }
    f32::reinterpret(sign | rounded)
}

/// A finite f32 magnitude's bits rounded to f16's precision: 13 bits of the mantissa dropped in
/// f16's normal range (2⁻¹⁴ and up; from 65,520 infinite), below it a multiple of 2⁻²⁴.
#[cube]
fn round_to_f16(magnitude: u32) -> u32 {
    let exponent = magnitude >> 23;
    let mut rounded = 0u32;
    if exponent >= 113 {
        rounded = ((magnitude + 0x0FFFu32 + ((magnitude >> 13) & 1u32)) & 0xFFFF_E000u32).min(0x7F80_0000u32);
        if rounded >= 0x4780_0000u32 {
            rounded = 0x7F80_0000u32; // past 65,504
        }
    } else {
        // value = mantissa · 2^(exponent − 150) = (mantissa >> (126 − exponent)) · 2⁻²⁴.
        let mut mantissa = magnitude & 0x007F_FFFFu32;
        let mut biased = exponent;
        if exponent > 0 {
            mantissa |= 0x0080_0000u32;
        } else {
            biased = 1u32; // an f32 subnormal
        }
        let shift = 126u32 - biased;
        if shift < 25u32 {
            let kept = mantissa >> shift;
            let rest = mantissa & ((1u32 << shift) - 1u32);
            let halfway = 1u32 << (shift - 1u32);
            let mut steps = kept;
            if rest > halfway || (rest == halfway && (kept & 1u32) == 1u32) {
                steps += 1u32;
            }
            rounded = u32::reinterpret(f32::cast_from(steps) * 5.960_464_5e-8f32); // · 2⁻²⁴, exact
        }
    }
    rounded
}

/// Each of this cube's rows' mean and 1/σ over K, summed as the LayerNorm kernel sums them
/// (each thread striding over the row, the threads' sums halved in `partial`, `[rows][THREADS]`
/// of shared memory the kernel uses again after), into `means` and `inv_stds`.
#[cube]
#[allow(clippy::too_many_arguments)]
fn row_statistics<F: Float>(lhs: &Tensor<F>, row_base: usize, eps: f32, partial: &mut Shared<[F]>, means: &mut Array<F>, inv_stds: &mut Array<F>, #[comptime] rows: usize) {
    let (m, k) = (lhs.shape(0), lhs.shape(1));
    let unit = UNIT_POS_X as usize;
    let count = F::cast_from(k as u32);
    #[unroll]
    for r in 0..rows {
        let mut sum = F::new(0.0);
        if row_base + r < m {
            let mut d = unit;
            while d < k {
                sum += lhs[(row_base + r) * k + d];
                d += THREADS;
            }
        }
        partial[r * THREADS + unit] = sum;
    }
    halve_rows::<F>(partial, rows);
    #[unroll]
    for r in 0..rows {
        means[r] = partial[r * THREADS] / count;
    }
    sync_cube();
    #[unroll]
    for r in 0..rows {
        let mut squares = F::new(0.0);
        if row_base + r < m {
            let mut d = unit;
            while d < k {
                let centred = lhs[(row_base + r) * k + d] - means[r];
                squares += centred * centred;
                d += THREADS;
            }
        }
        partial[r * THREADS + unit] = squares;
    }
    halve_rows::<F>(partial, rows);
    #[unroll]
    for r in 0..rows {
        inv_stds[r] = F::new(1.0) / (partial[r * THREADS] / count + F::cast_from(eps)).sqrt();
    }
    // Every thread has read the totals before the kernel writes `partial` again.
    sync_cube();
}

/// Each row's [`THREADS`] values in `partial` summed into its first, halving as
/// [`crate::rows::cube_combine`] does.
#[cube]
fn halve_rows<F: Float>(partial: &mut Shared<[F]>, #[comptime] rows: usize) {
    sync_cube();
    let unit = UNIT_POS_X as usize;
    // CUBE_DIM_X (= THREADS) read at run time: a mutable variable set from a comptime value stays comptime.
    let mut half = CUBE_DIM_X as usize / 2;
    while half > 0 {
        if unit < half {
            #[unroll]
            for r in 0..rows {
                partial[r * THREADS + unit] = partial[r * THREADS + unit] + partial[r * THREADS + unit + half];
            }
        }
        sync_cube();
        half /= 2;
    }
}

/// `activation(norm(lhs) [M, K] · weight [K, N] + bias [N]) + residual [M, N]` (the norm, where
/// there is one, applied to each row of `lhs` as it is read; each of `addends` where there is
/// one), [`MAX_ROWS`] rows per cube; `transposed`: the weight is `[N, K]`, used as its transpose.
/// The weight is read where it lies, in either memory order (a view is not copied). A weight in
/// a narrower float type than `lhs` (`--dtype f16`, `bf16`) takes the CPU's contract for them:
/// each input value rounded to its type (after the norm), f32 sums and output, the epilogue in
/// f32.
pub fn matmul(lhs: CubeTensor, weight: CubeTensor, norm: Option<Norm>, addends: Addends, transposed: bool) -> CubeTensor {
    let lhs = into_contiguous(lhs);
    // `[K, N]`, a view where the weight is stored the other way round.
    let weight = if transposed { CubeBackend::float_swap_dims(weight, 0, 1) } else { weight };
    let strides = weight.meta.strides();
    let weight = if strides[0] == 1 || strides[1] == 1 { weight } else { into_contiguous(weight) };
    let along_k = weight.meta.strides()[0] == 1 && weight.meta.strides()[1] != 1;
    let [m, k] = lhs.shape().dims::<2>();
    let [depth, n] = weight.shape().dims::<2>();
    assert!(depth == k, "few_rows: [{m}, {k}] · [{depth}, {n}]{}", if transposed { "ᵀ" } else { "" });
    let epilogue = addends.epilogue();
    let (bias, residual) = addends.tensors(&lhs, m, n);
    let normalized = norm.is_some();
    // Without a norm the kernel never reads its scale and shift: the bias stands in for them.
    let (norm_scale, norm_shift, eps) = match norm {
        Some(norm) => {
            assert!(norm.weight.shape().num_elements() == k && norm.bias.shape().num_elements() == k, "few_rows: a norm over {k} values");
            (into_contiguous(norm.weight), into_contiguous(norm.bias), norm.eps)
        }
        None => (bias.clone(), bias.clone(), 0.0),
    };
    let out = empty_like(&lhs, Shape::new([m, n]));
    let dtypes = [elements(&lhs), elements(&weight)];
    let half = match (weight.dtype, lhs.dtype) {
        (DType::F16, DType::F32) => Some(Half::F16),
        (DType::BF16, DType::F32) => Some(Half::Bf16),
        (w, x) if w == x => None,
        (w, x) => panic!("few_rows: a {w:?} weight for a {x:?} input"),
    };
    let rows = m.clamp(1, MAX_ROWS);
    // SAFETY: weight reads (by its strides) are guarded by `col < n` and `depth < k`, input reads by the row's
    // `< m` and `depth < k`, writes by the row's `< m` and `col < n`, the bias by `col < n`, the
    // residual where the output is written, the norm's scale and shift by `depth < k`.
    unsafe {
        few_rows_kernel::launch_unchecked(
            &lhs.client.clone(),
            CubeCount::Static(n.div_ceil(COLS) as u32, m.div_ceil(rows) as u32, 1),
            CubeDim::new_1d((COLS * SLICES) as u32),
            lhs.into_tensor_arg(),
            weight.into_tensor_arg(),
            norm_scale.into_tensor_arg(),
            norm_shift.into_tensor_arg(),
            bias.into_tensor_arg(),
            residual.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            eps,
            rows,
            normalized,
            along_k,
            half,
            epilogue,
            dtypes,
        );
    }
    out
}
