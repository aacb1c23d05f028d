//! Each row's next token, chosen on the device: the argmax, or a draw after temperature, top-k
//! and top-p (HF's warper order), one cube per row of logits. Only the chosen ids leave the
//! device, not the `[rows, V]` logits a host-side choice reads back every step.
//!
//! The draw takes its uniform number from the host's seeded generator, so a seed gives the same
//! tokens here as on the CPU (`prefix_tune_model::generate::pick` states the rules both follow):
//! - top-k keeps the scores at or above the k-th largest (HF's rule; the k-th is found by
//!   Burn's top-k before this kernel and given as the row's floor);
//! - top-p keeps a token when the probability of the tokens strictly more likely than it is
//!   below p (HF's cumulative rule, with ties kept together). The threshold is found by
//!   bisection over the scores' bit patterns, which order as the floats do: 32 passes over the
//!   row at most, and no sort;
//! - the draw is the first token, in vocabulary order, at which the running sum of the kept
//!   weights `exp(s − max)` passes `uniform · total`.

use burn_backend::{DType, Shape, TensorMetadata};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use crate::rows::{cube_combine, cube_max, cube_row, cube_sum, row_cubes, Combine, ROW_THREADS};

/// The columns of a row's settings, `[rows, SETTINGS]`.
pub const SETTINGS: usize = 4;
/// Column: the temperature the scores are divided by (1 for the argmax).
pub const TEMPERATURE: usize = 0;
/// Column: the lowest raw logit top-k keeps (−∞ keeps all).
pub const FLOOR: usize = 1;
/// Column: top-p's mass, in (0, 1]; 1 keeps all.
pub const TOP_P: usize = 2;
/// Column: the draw's uniform number in [0, 1); negative asks for the argmax.
pub const UNIFORM: usize = 3;

/// A float's bits as an unsigned integer that orders as the floats do (NaN aside).
#[cube]
fn ordered(x: f32) -> u32 {
    let bits = u32::reinterpret(x);
    let mut key = bits | 0x8000_0000u32;
    if bits >= 0x8000_0000u32 {
        key = !bits;
    }
    key
}

/// The float whose [`ordered`] key is `key`.
#[cube]
fn from_ordered(key: u32) -> f32 {
    let mut bits = !key;
    if key >= 0x8000_0000u32 {
        bits = key & 0x7fff_ffffu32;
    }
    f32::reinterpret(bits)
}

/// The weight a draw gives score `x` (a raw logit): `exp(x / temperature − max)` when top-k's
/// floor and top-p's threshold keep it, else 0.
#[cube]
fn weight(x: f32, temperature: f32, floor: f32, threshold: f32, max: f32) -> f32 {
    let s = x / temperature;
    let mut w = 0.0f32;
    if x >= floor && s >= threshold {
        w = (s - max).exp();
    }
    w
}

/// The sum of the weights of the row's scores strictly above `above`, on every thread.
#[cube]
fn mass_above(logits: &Tensor<f32>, start: usize, vocab: usize, temperature: f32, floor: f32, above: f32, max: f32, #[comptime] threads: u32) -> f32 {
    let mut sum = 0.0f32;
    let mut i = UNIT_POS_X as usize;
    while i < vocab {
        let x = logits[start + i];
        let s = x / temperature;
        if x >= floor && s > above {
            sum += (s - max).exp();
        }
        i += CUBE_DIM_X as usize;
    }
    cube_sum::<f32>(sum, threads)
}

/// Top-p's threshold: the smallest score `t` such that the mass strictly above it is below
/// `top_p · total`. Bisection over ordered keys from −∞ (the whole mass is above it) to the
/// maximum (none is), so at least the most likely token is kept.
#[cube]
fn top_p_threshold(logits: &Tensor<f32>, start: usize, vocab: usize, temperature: f32, floor: f32, top_p: f32, max: f32, total: f32, #[comptime] threads: u32) -> f32 {
    let mut low = ordered(f32::MIN);
    let mut high = ordered(max);
    // Every thread holds the same `low` and `high` (the sums are shared), so all take the same
    // number of turns through the loop and its barriers.
    while low < high {
        let middle = low + (high - low) / 2;
        let mass = mass_above(logits, start, vocab, temperature, floor, from_ordered(middle), max, threads);
        if mass < top_p * total {
            high = middle;
        } else {
            low = middle + 1;
        }
    }
    from_ordered(high)
}

#[cube(launch)]
fn pick_kernel(
    logits: &Tensor<f32>,   // [N, V]
    knobs: &Tensor<f32>, // [N, SETTINGS]
    tokens: &mut Tensor<f32>, // [N], the chosen ids (exact in f32 below 2^24)
    #[comptime] threads: u32,
) {
    let row = cube_row();
    if row >= tokens.len() {
        terminate!();
    }
    let vocab = logits.shape(1);
    let start = row * vocab;
    let temperature = knobs[row * SETTINGS + TEMPERATURE];
    let floor = knobs[row * SETTINGS + FLOOR];
    let top_p = knobs[row * SETTINGS + TOP_P];
    let uniform = knobs[row * SETTINGS + UNIFORM];
    let unit = UNIT_POS_X as usize;

    let mut best = f32::new(f32::MIN);
    let mut i = unit;
    while i < vocab {
        let x = logits[start + i];
        if x >= floor && x / temperature > best {
            best = x / temperature;
        }
        i += CUBE_DIM_X as usize;
    }
    let max = cube_max::<f32>(best, threads);
    if uniform < 0.0 {
        // The argmax: the first index holding the maximum, as the host's.
        let mut first = vocab as u32;
        let mut j = unit;
        while j < vocab {
            if logits[start + j] / temperature == max && (j as u32) < first {
                first = j as u32;
            }
            j += CUBE_DIM_X as usize;
        }
        let mut first = cube_combine::<u32>(first, Combine::Min, threads);
        if first >= vocab as u32 {
            // No score compares (a row of NaN): token 0, as the host's argmax gives.
            first = 0u32;
        }
        if unit == 0 {
            tokens[row] = f32::cast_from(first);
        }
        terminate!();
    }
    let total = mass_above(logits, start, vocab, temperature, floor, f32::MIN, max, threads);
    let mut threshold = f32::new(f32::MIN);
    if top_p < 1.0 {
        threshold = top_p_threshold(logits, start, vocab, temperature, floor, top_p, max, total, threads);
    }
    draw(logits, start, vocab, temperature, floor, threshold, max, uniform, tokens, row, threads);
}

/// The draw: each thread sums the kept weights of its own contiguous chunk of the row; thread 0
/// runs through the chunk sums to the chunk where the running sum passes `uniform · total`, then
/// through that chunk's weights. Should rounding leave the target unreached, the last token
/// with weight is taken.
#[cube]
#[allow(clippy::too_many_arguments)]
fn draw(logits: &Tensor<f32>, start: usize, vocab: usize, temperature: f32, floor: f32, threshold: f32, max: f32, uniform: f32, tokens: &mut Tensor<f32>, row: usize, #[comptime] threads: u32) {
    let unit = UNIT_POS_X as usize;
    let cube = CUBE_DIM_X as usize;
    let chunk = (vocab + cube - 1) / cube;
    let mut sum = 0.0f32;
    let mut i = unit * chunk;
    while i < vocab && i < (unit + 1) * chunk {
        sum += weight(logits[start + i], temperature, floor, threshold, max);
        i += 1;
    }
    let mut sums = Shared::<[f32]>::new_slice(threads as usize);
    sums[unit] = sum;
    sync_cube();
    if unit == 0 {
        let mut total = 0.0f32;
        for c in 0..cube {
            total += sums[c];
        }
        if !(total > 0.0f32) {
            // Nothing to draw from (NaN scores, or every token banned): -1, an error on the host.
            tokens[row] = f32::new(-1.0);
            terminate!();
        }
        let target = uniform * total;
        let mut running = 0.0f32;
        let mut found = false;
        let mut chosen = 0u32;
        let mut last_chunk = 0usize;
        let mut c = 0usize;
        while c < cube && !found {
            if sums[c] > 0.0 {
                last_chunk = c;
                if running + sums[c] > target {
                    let mut j = c * chunk;
                    while j < vocab && j < (c + 1) * chunk && !found {
                        let w = weight(logits[start + j], temperature, floor, threshold, max);
                        running += w;
                        if w > 0.0 && running > target {
                            chosen = j as u32;
                            found = true;
                        }
                        j += 1;
                    }
                } else {
                    running += sums[c];
                }
            }
            c += 1;
        }
        if !found {
            let mut j = last_chunk * chunk;
            while j < vocab && j < (last_chunk + 1) * chunk {
                if weight(logits[start + j], temperature, floor, threshold, max) > 0.0 {
                    chosen = j as u32;
                }
                j += 1;
            }
        }
        tokens[row] = f32::cast_from(chosen);
    }
}

/// Each row's token from `[N, V]` f32 `logits` and `[N, SETTINGS]` f32 `settings`: `[N]` ids,
/// as f32; -1 for a draw from a row where no token has weight.
pub fn pick(logits: CubeTensor, knobs: CubeTensor) -> CubeTensor {
    let (logits, knobs) = (into_contiguous(logits), into_contiguous(knobs));
    let rows = logits.shape()[0];
    let client = logits.client.clone();
    let tokens = empty_device_dtype(client.clone(), logits.device.clone(), Shape::new([rows]), DType::F32);
    pick_kernel::launch(
        &client,
        row_cubes(rows),
        CubeDim::new_1d(ROW_THREADS),
        logits.into_tensor_arg(),
        knobs.into_tensor_arg(),
        tokens.clone().into_tensor_arg(),
        ROW_THREADS,
    );
    tokens
}
