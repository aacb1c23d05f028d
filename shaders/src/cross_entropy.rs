//! The LM head's cross-entropy: `nll[r] = logsumexp(x_r) − x_r[target_r]` in one pass over each
//! row of logits, and its backward `grad[r] · (softmax(x_r) − onehot(target_r))` in one kernel.
//!
//! As tensor operations (log-softmax, gather, and their backward) the same work is a max, a
//! subtraction, an exp, a sum, a log, a gather and a scatter, each a pass over `[N, V]`, with
//! the `[N, V]` log-probabilities kept for the backward pass. Here the forward keeps nothing:
//! the backward pass recomputes each row's logsumexp, one extra read of a row it reads anyway.

use burn_backend::{Shape, TensorMetadata};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use crate::rows::{cube_row, elements, empty_like, row_cubes, row_threads};

/// `logsumexp` of `row` of a contiguous `[N, V]` tensor, the same value in every thread.
/// Each thread keeps a running maximum and the sum of `exp(x − max)` over its strided share
/// (the online softmax), then the cube merges the pairs in shared memory.
#[cube]
fn row_logsumexp<F: Float>(logits: &Tensor<F>, row: usize, vocab: usize, #[comptime] threads: u32) -> F {
    let start = row * vocab;
    let mut max = F::min_value();
    let mut sum = F::new(0.0);
    let mut i = UNIT_POS_X as usize;
    while i < vocab {
        let x = logits[start + i];
        if x > max {
            sum = sum * (max - x).exp() + F::new(1.0);
            max = x;
        } else {
            sum += (x - max).exp();
        }
        i += CUBE_DIM_X as usize;
    }
    let mut maxes = Shared::<[F]>::new_slice(threads as usize);
    let mut sums = Shared::<[F]>::new_slice(threads as usize);
    let unit = UNIT_POS_X as usize;
    maxes[unit] = max;
    sums[unit] = sum;
    sync_cube();
    // CUBE_DIM_X (= threads) read at run time: a mutable variable set from a comptime value stays comptime.
    let mut half = CUBE_DIM_X as usize / 2;
    while half > 0 {
        if unit < half {
            let max_a = maxes[unit];
            let max_b = maxes[unit + half];
            let mut merged = max_a;
            if max_b > max_a {
                merged = max_b;
            }
            sums[unit] = sums[unit] * (max_a - merged).exp() + sums[unit + half] * (max_b - merged).exp();
            maxes[unit] = merged;
        }
        sync_cube();
        half /= 2;
    }
    maxes[0] + sums[0].ln()
}

#[cube(launch)]
fn nll_kernel<F: Float, I: Numeric>(
    logits: &Tensor<F>,  // [N, V]
    targets: &Tensor<I>, // [N]
    nll: &mut Tensor<F>, // [N]
    #[comptime] threads: u32,
    #[define(F, I)] _dtypes: [ElemType; 2],
) {
    let row = cube_row();
    if row >= nll.len() {
        terminate!();
    }
    let vocab = logits.shape(1);
    let lse = row_logsumexp::<F>(logits, row, vocab, threads);
    if UNIT_POS_X == 0 {
        let target = u32::cast_from(targets[row]) as usize;
        nll[row] = lse - logits[row * vocab + target];
    }
}

#[cube(launch)]
fn nll_backward_kernel<F: Float, I: Numeric>(
    logits: &Tensor<F>,       // [N, V]
    targets: &Tensor<I>,      // [N]
    grad: &Tensor<F>,         // [N], the upstream gradient of each row's NLL
    grad_logits: &mut Tensor<F>, // [N, V]
    #[comptime] threads: u32,
    #[define(F, I)] _dtypes: [ElemType; 2],
) {
    let row = cube_row();
    if row >= grad.len() {
        terminate!();
    }
    let vocab = logits.shape(1);
    let lse = row_logsumexp::<F>(logits, row, vocab, threads);
    let target = u32::cast_from(targets[row]) as usize;
    let upstream = grad[row];
    let start = row * vocab;
    let mut i = UNIT_POS_X as usize;
    while i < vocab {
        let mut onehot = F::new(0.0);
        if i == target {
            onehot = F::new(1.0);
        }
        grad_logits[start + i] = upstream * ((logits[start + i] - lse).exp() - onehot);
        i += CUBE_DIM_X as usize;
    }
}

#[cube(launch)]
fn log_softmax_kernel<F: Float>(
    logits: &Tensor<F>,  // [N, V]
    added: &Tensor<F>,   // [N], read only when `adds`
    out: &mut Tensor<F>, // [N, V]
    #[comptime] adds: bool,
    #[comptime] threads: u32,
    #[define(F)] _dtype: ElemType,
) {
    let row = cube_row();
    let (rows, vocab) = (logits.shape(0), logits.shape(1));
    if row >= rows {
        terminate!();
    }
    let lse = row_logsumexp::<F>(logits, row, vocab, threads);
    let start = row * vocab;
    let mut i = UNIT_POS_X as usize;
    while i < vocab {
        // The addition after the log-probability, as `log_softmax(x) + a` adds it.
        let mut value = logits[start + i] - lse;
        if comptime!(adds) {
            value += added[row];
        }
        out[start + i] = value;
        i += CUBE_DIM_X as usize;
    }
}

/// `[N, V]` logits → `log_softmax(x_r) + added[r]` per row (`added` `[N]`, where there is one):
/// a beam's log-probabilities plus its score so far, one pass over each row after the
/// logsumexp's.
pub fn log_softmax(logits: CubeTensor, added: Option<CubeTensor>) -> CubeTensor {
    let logits = into_contiguous(logits);
    let shape = logits.shape();
    let (rows, threads) = (shape[0], row_threads(shape[1]));
    let adds = added.is_some();
    // Without an addition the kernel never reads `added`: the logits stand in for it.
    let added = added.map_or_else(|| logits.clone(), into_contiguous);
    let out = empty_like(&logits, shape);
    let dtype = elements(&logits);
    log_softmax_kernel::launch(
        &logits.client.clone(),
        row_cubes(rows),
        CubeDim::new_1d(threads),
        logits.into_tensor_arg(),
        added.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        adds,
        threads,
        dtype,
    );
    out
}

/// `[N, V]` logits and `[N]` integer targets in `0..V` → each row's NLL `[N]`.
pub fn nll(logits: CubeTensor, targets: CubeTensor) -> CubeTensor {
    let (logits, targets) = (into_contiguous(logits), into_contiguous(targets));
    let [rows, vocab] = logits.shape().dims::<2>();
    let threads = row_threads(vocab);
    let client = logits.client.clone();
    let out = empty_like(&logits, Shape::new([rows]));
    let dtypes = [elements(&logits), elements(&targets)];
    nll_kernel::launch(
        &client,
        row_cubes(rows),
        CubeDim::new_1d(threads),
        logits.into_tensor_arg(),
        targets.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        threads,
        dtypes,
    );
    out
}

/// The gradient of [`nll`] in the logits: `grad[r] · (softmax(x_r) − onehot(target_r))`, `[N, V]`.
pub fn nll_backward(logits: CubeTensor, targets: CubeTensor, grad: CubeTensor) -> CubeTensor {
    let (logits, targets, grad) = (into_contiguous(logits), into_contiguous(targets), into_contiguous(grad));
    let shape = logits.shape();
    let (rows, threads) = (shape[0], row_threads(shape[1]));
    let client = logits.client.clone();
    let out = empty_like(&logits, shape);
    let dtypes = [elements(&logits), elements(&targets)];
    nll_backward_kernel::launch(
        &client,
        row_cubes(rows),
        CubeDim::new_1d(threads),
        logits.into_tensor_arg(),
        targets.into_tensor_arg(),
        grad.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        threads,
        dtypes,
    );
    out
}
