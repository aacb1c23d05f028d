//! Cross-entropy of logit rows against target ids, and its gradient, each one pass per row
//! over all cores: the LM head's loss without materialising log-probabilities.
//!
//! As tensor operations (log-softmax, gather, and their backward) it is half a dozen passes over
//! `[N, V]` (GPT-2: 50,257 columns) with scalar libm `expf` on one core: a tenth of a bf16
//! training step. Sums run in 16 lanes, as a vectorised reduction does.

use rayon::prelude::*;

const LANES: usize = 16;

/// `nll[r] = logsumexp(x_r) − x_r[targets[r]]` for the rows of `logits` `[rows, vocab]`.
/// Returns `(nll, logsumexp)`, the second for [`backward`]. Panics on a target ≥ vocab.
pub fn forward(logits: &[f32], vocab: usize, targets: &[usize]) -> (Vec<f32>, Vec<f32>) {
    assert_eq!(logits.len(), vocab * targets.len(), "cross_entropy::forward: [{}, {vocab}] logits for {} targets", logits.len() / vocab.max(1), targets.len());
    let row = |(x, &t): (&[f32], &usize)| {
        assert!(t < vocab, "cross_entropy: target {t} is outside the vocabulary of {vocab}");
        let lse = dispatch_logsumexp(x);
        (lse - x[t], lse)
    };
    logits.par_chunks(vocab).zip(targets).map(row).unzip()
}

/// `out[r, j] = grad[r] · (softmax(x_r)[j] − [j = targets[r]])`, from [`forward`]'s logsumexp.
pub fn backward(logits: &[f32], vocab: usize, targets: &[usize], logsumexp: &[f32], grad: &[f32], out: &mut [f32]) {
    assert!(logits.len() == out.len() && logits.len() == vocab * targets.len(), "cross_entropy::backward: shapes differ");
    out.par_chunks_mut(vocab).zip(logits.par_chunks(vocab)).enumerate().for_each(|(r, (out, x))| {
        dispatch_softmax_times(x, logsumexp[r], grad[r], out);
        out[targets[r]] -= grad[r];
    });
}

/// The widest loops the CPU has (AVX2 + FMA, else what the compiler's baseline gives).
fn dispatch_logsumexp(x: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA.
        return unsafe { avx2::logsumexp(x) };
    }
    logsumexp(x)
}

fn dispatch_softmax_times(x: &[f32], lse: f32, g: f32, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA.
        return unsafe { avx2::softmax_times(x, lse, g, out) };
    }
    softmax_times(x, lse, g, out)
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn logsumexp(x: &[f32]) -> f32 {
        super::logsumexp(x)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn softmax_times(x: &[f32], lse: f32, g: f32, out: &mut [f32]) {
        super::softmax_times(x, lse, g, out)
    }
}

/// `out[j] = g · e^(x[j] − lse)`.
#[inline(always)]
fn softmax_times(x: &[f32], lse: f32, g: f32, out: &mut [f32]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = g * exp((v - lse).max(-87.0));
    }
}

/// ln Σ e^x, shifted by the maximum so nothing overflows.
#[inline(always)]
fn logsumexp(x: &[f32]) -> f32 {
    let max = lanes(x, f32::NEG_INFINITY, |acc, v| acc.max(v)).into_iter().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY || max.is_nan() {
        return max;
    }
    let sum: f32 = lanes(x, 0.0, |acc, v| acc + exp((v - max).max(-87.0))).iter().sum();
    max + sum.ln()
}

/// Folds `x` into LANES partial results, lane i taking elements i, i + LANES, …, so the loop
/// vectorises (a single accumulator would serialise on its own latency).
#[inline(always)]
fn lanes(x: &[f32], init: f32, f: impl Fn(f32, f32) -> f32) -> [f32; LANES] {
    let mut acc = [init; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for i in 0..LANES {
            acc[i] = f(acc[i], chunk[i]);
        }
    }
    for (i, &v) in tail.iter().enumerate() {
        acc[i] = f(acc[i], v);
    }
    acc
}

/// e^x for x in [−87, 88] (see [`crate::gelu`]).
#[inline(always)]
fn exp(x: f32) -> f32 {
    crate::gelu::exp(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_and_gradient_match_f64() {
        let vocab = 1003; // not a multiple of the lanes
        let rows = 7;
        let logits: Vec<f32> = (0..rows * vocab).map(|i| ((i * 7919 % 2003) as f32 / 2003.0 - 0.5) * 30.0).collect();
        let targets: Vec<usize> = (0..rows).map(|r| (r * 389) % vocab).collect();
        let grad: Vec<f32> = (0..rows).map(|r| 0.5 + r as f32).collect();
        let (nll, lse) = forward(&logits, vocab, &targets);
        let mut out = vec![0.0; logits.len()];
        backward(&logits, vocab, &targets, &lse, &grad, &mut out);
        for r in 0..rows {
            let x: Vec<f64> = logits[r * vocab..(r + 1) * vocab].iter().map(|&v| v as f64).collect();
            let max = x.iter().cloned().fold(f64::MIN, f64::max);
            let lse64 = max + x.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
            let want = lse64 - x[targets[r]];
            assert!((nll[r] as f64 - want).abs() < 2e-6 * lse64.abs().max(1.0), "row {r}: {} against {want}", nll[r]);
            for j in 0..vocab {
                let want = grad[r] as f64 * ((x[j] - lse64).exp() - if j == targets[r] { 1.0 } else { 0.0 });
                assert!((out[r * vocab + j] as f64 - want).abs() < 1e-6 * grad[r] as f64, "row {r} column {j}: {} against {want}", out[r * vocab + j]);
            }
        }
    }
}
