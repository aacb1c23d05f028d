//! Softmax attention of a training step, forward and backward, one (sequence, head) pair per
//! task.
//!
//! As tensor operations a layer's attention is a dozen single-threaded passes on the CPU
//! backend (scale, bias, the softmax's max, exp, sum and division, dropout, two batched
//! products, and the transposes between them), each with a fresh allocation, and about twice
//! as many back. Here each pair's scores stay in a `T × S` block that fits in L1/L2, and the
//! pairs run on all cores.
//!
//! The arithmetic is the tensor form's, in its order: `scores = (q · kᵀ) · scale + bias`,
//! `probs = softmax(scores)`, `weights = probs · keep / (1 − p)` under dropout, `out =
//! weights · v`. Dot products are summed in another order than `gemm`'s, so results differ
//! from it in the last bits of f32.

use rayon::prelude::*;

/// The sizes of one call. Tensors are row-major and contiguous: `q` `[groups, t, dh]`, `k`
/// and `v` `[groups, s, dh]`, `bias` `[groups / heads, t, s]` (shared by a sequence's heads),
/// `keep` `[groups, t, s]`; `groups` is batch × heads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dims {
    pub groups: usize,
    pub heads: usize,
    pub t: usize,
    pub s: usize,
    pub dh: usize,
}

/// Dropout's keep mask (1 or 0 per weight) and its probability of dropping.
#[derive(Debug, Clone, Copy)]
pub struct Dropout<'a> {
    pub keep: &'a [f32],
    pub p: f32,
}

impl Dims {
    fn check(&self, q: &[f32], k: &[f32], v: &[f32], bias: Option<&[f32]>, dropout: Option<Dropout>) {
        let Dims { groups, heads, t, s, dh } = *self;
        assert!(heads > 0 && groups % heads == 0, "attention: {groups} groups are not whole sequences of {heads} heads");
        assert!(q.len() == groups * t * dh && k.len() == groups * s * dh && v.len() == k.len(), "attention: q, k or v has the wrong size");
        assert!(bias.is_none_or(|b| b.len() == groups / heads * t * s), "attention: bias has the wrong size");
        assert!(dropout.is_none_or(|d| d.keep.len() == groups * t * s), "attention: keep mask has the wrong size");
    }

    /// Pair `g`'s slices of the inputs.
    fn group<'a>(&self, g: usize, q: &'a [f32], k: &'a [f32], v: &'a [f32], dropout: Option<Dropout<'a>>) -> Group<'a> {
        let Dims { t, s, dh, .. } = *self;
        Group {
            q: &q[g * t * dh..][..t * dh],
            k: &k[g * s * dh..][..s * dh],
            v: &v[g * s * dh..][..s * dh],
            keep: dropout.map(|d| (&d.keep[g * t * s..][..t * s], d.p)),
        }
    }
}

/// Returns `out` `[groups, t, dh]` and `probs` `[groups, t, s]` (before dropout), which
/// [`backward`] takes.
pub fn forward(dims: &Dims, q: &[f32], k: &[f32], v: &[f32], bias: Option<&[f32]>, dropout: Option<Dropout>, scale: f32) -> (Vec<f32>, Vec<f32>) {
    dims.check(q, k, v, bias, dropout);
    let Dims { groups, heads, t, s, dh } = *dims;
    let mut out = vec![0.0f32; groups * t * dh];
    let mut probs = vec![0.0f32; groups * t * s];
    out.par_chunks_mut(t * dh).zip(probs.par_chunks_mut(t * s)).enumerate().for_each(|(g, (out, probs))| {
        let bias = bias.map(|b| &b[g / heads * t * s..][..t * s]);
        widest!(forward_group(dims, dims.group(g, q, k, v, dropout), bias, scale, out, probs));
    });
    (out, probs)
}

/// The gradients of `q`, `k` and `v` from the gradient of `out`, with `probs` from
/// [`forward`]:
/// `dweights = dout · vᵀ`, `dprobs = dweights · keep / (1 − p)`,
/// `dscores = probs ⊙ (dprobs − rowsum(dprobs ⊙ probs))`,
/// `dq = dscores · k · scale`, `dk = dscoresᵀ · q · scale`, `dv = weightsᵀ · dout`.
#[allow(clippy::too_many_arguments)]
pub fn backward(dims: &Dims, q: &[f32], k: &[f32], v: &[f32], probs: &[f32], dropout: Option<Dropout>, scale: f32, dout: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    dims.check(q, k, v, None, dropout);
    let Dims { groups, t, s, dh, .. } = *dims;
    assert!(probs.len() == groups * t * s && dout.len() == q.len(), "attention::backward: probs or dout has the wrong size");
    let mut dq = vec![0.0f32; q.len()];
    let mut dk = vec![0.0f32; k.len()];
    let mut dv = vec![0.0f32; v.len()];
    let grads = dq.par_chunks_mut(t * dh).zip(dk.par_chunks_mut(s * dh)).zip(dv.par_chunks_mut(s * dh));
    grads.enumerate().for_each(|(g, ((dq, dk), dv))| {
        let (probs, dout) = (&probs[g * t * s..][..t * s], &dout[g * t * dh..][..t * dh]);
        widest!(backward_group(dims, dims.group(g, q, k, v, dropout), probs, dout, scale, dq, dk, dv));
    });
    (dq, dk, dv)
}

/// Runs a `#[inline(always)]` function through the widest vectors the CPU has: the same
/// arithmetic in the same order on every path (no fused multiply-adds), only wider.
macro_rules! widest {
    ($name:ident($($arg:expr),* $(,)?)) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx512f")]
            unsafe fn avx512(f: impl FnOnce()) { f() }
            #[target_feature(enable = "avx2")]
            unsafe fn avx2(f: impl FnOnce()) { f() }
            fn portable(f: impl FnOnce()) { f() }
            let run = move || $name($($arg),*);
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has AVX-512F.
                unsafe { avx512(run) }
            } else if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2.
                unsafe { avx2(run) }
            } else {
                portable(run)
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        $name($($arg),*)
    }};
}
use widest;

/// One (sequence, head) pair's inputs: `q` `[t, dh]`, `k` and `v` `[s, dh]`, and dropout's keep
/// mask `[t, s]` with its probability.
struct Group<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    keep: Option<(&'a [f32], f32)>,
}

#[inline(always)]
fn forward_group(dims: &Dims, g: Group, bias: Option<&[f32]>, scale: f32, out: &mut [f32], probs: &mut [f32]) {
    let Dims { s, dh, .. } = *dims;
    let mut weights = vec![0.0f32; s];
    for (row, (out, probs)) in out.chunks_mut(dh).zip(probs.chunks_mut(s)).enumerate() {
        let query = &g.q[row * dh..][..dh];
        for (col, score) in probs.iter_mut().enumerate() {
            *score = dot(query, &g.k[col * dh..][..dh]) * scale;
            if let Some(bias) = bias {
                *score += bias[row * s + col];
            }
        }
        softmax(probs);
        let weights = match g.keep {
            Some((keep, p)) => {
                let keep = &keep[row * s..][..s];
                weights.iter_mut().zip(probs.iter()).zip(keep).for_each(|((w, &pr), &kp)| *w = pr * kp / (1.0 - p));
                &weights[..]
            }
            None => &probs[..],
        };
        for (col, &w) in weights.iter().enumerate() {
            axpy(w, &g.v[col * dh..][..dh], out);
        }
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn backward_group(dims: &Dims, g: Group, probs: &[f32], dout: &[f32], scale: f32, dq: &mut [f32], dk: &mut [f32], dv: &mut [f32]) {
    let Dims { t, s, dh, .. } = *dims;
    let mut dscores = vec![0.0f32; s];
    for row in 0..t {
        let (probs, dout) = (&probs[row * s..][..s], &dout[row * dh..][..dh]);
        let keep = g.keep.map(|(keep, p)| (&keep[row * s..][..s], p));
        let mut weighted = 0.0f32; // rowsum(dprobs ⊙ probs)
        for (col, ds) in dscores.iter_mut().enumerate() {
            let dweight = dot(dout, &g.v[col * dh..][..dh]);
            let (dprob, weight) = match keep {
                Some((keep, p)) => (dweight * keep[col] / (1.0 - p), probs[col] * keep[col] / (1.0 - p)),
                None => (dweight, probs[col]),
            };
            axpy(weight, dout, &mut dv[col * dh..][..dh]);
            *ds = dprob;
            weighted += dprob * probs[col];
        }
        let dq = &mut dq[row * dh..][..dh];
        let query = &g.q[row * dh..][..dh];
        for (col, ds) in dscores.iter_mut().enumerate() {
            *ds = probs[col] * (*ds - weighted) * scale;
            axpy(*ds, &g.k[col * dh..][..dh], dq);
            axpy(*ds, query, &mut dk[col * dh..][..dh]);
        }
    }
}

/// `Σ a·b` in 16 running sums, so it vectorises.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut sums = [0.0f32; 16];
    let (a_blocks, b_blocks) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = a_blocks.remainder().iter().zip(b_blocks.remainder()).map(|(x, y)| x * y).sum();
    for (a, b) in a_blocks.zip(b_blocks) {
        for i in 0..16 {
            sums[i] += a[i] * b[i];
        }
    }
    sums.iter().sum::<f32>() + tail
}

/// `y += alpha · x`.
#[inline(always)]
fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    y.iter_mut().zip(x).for_each(|(y, &x)| *y += alpha * x);
}

/// In place, as the tensor form: `exp(x − max) / Σ exp(x − max)`.
#[inline(always)]
fn softmax(row: &mut [f32]) {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    let mut sum = 0.0f32;
    row.iter_mut().for_each(|x| {
        *x = (*x - max).exp();
        sum += *x;
    });
    row.iter_mut().for_each(|x| *x /= sum);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut state = seed;
        (0..len)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// The same attention in f64, straight from the definitions, and its gradients against
    /// `dout`.
    #[allow(clippy::type_complexity)]
    fn reference(d: &Dims, q: &[f32], k: &[f32], v: &[f32], bias: &[f32], keep: &[f32], p: f64, scale: f64, dout: &[f32]) -> (Vec<f64>, [Vec<f64>; 3]) {
        let Dims { groups, heads, t, s, dh } = *d;
        let (mut out, mut dq, mut dk, mut dv) = (vec![0.0; q.len()], vec![0.0; q.len()], vec![0.0; k.len()], vec![0.0; v.len()]);
        for g in 0..groups {
            for r in 0..t {
                let at = |x: &[f32], i: usize, j: usize, n: usize| x[(g * n + i) * dh + j] as f64;
                let scores: Vec<f64> = (0..s).map(|c| (0..dh).map(|j| at(q, r, j, t) * at(k, c, j, s)).sum::<f64>() * scale + bias[((g / heads) * t + r) * s + c] as f64).collect();
                let max = scores.iter().cloned().fold(f64::MIN, f64::max);
                let sum: f64 = scores.iter().map(|x| (x - max).exp()).sum();
                let probs: Vec<f64> = scores.iter().map(|x| (x - max).exp() / sum).collect();
                let mask: Vec<f64> = (0..s).map(|c| keep[(g * t + r) * s + c] as f64 / (1.0 - p)).collect();
                for j in 0..dh {
                    out[(g * t + r) * dh + j] = (0..s).map(|c| probs[c] * mask[c] * at(v, c, j, s)).sum();
                }
                let dweights: Vec<f64> = (0..s).map(|c| (0..dh).map(|j| dout[(g * t + r) * dh + j] as f64 * at(v, c, j, s)).sum()).collect();
                let dprobs: Vec<f64> = (0..s).map(|c| dweights[c] * mask[c]).collect();
                let weighted: f64 = (0..s).map(|c| dprobs[c] * probs[c]).sum();
                for c in 0..s {
                    let ds = probs[c] * (dprobs[c] - weighted) * scale;
                    for j in 0..dh {
                        dq[(g * t + r) * dh + j] += ds * at(k, c, j, s);
                        dk[(g * s + c) * dh + j] += ds * at(q, r, j, t);
                        dv[(g * s + c) * dh + j] += probs[c] * mask[c] * dout[(g * t + r) * dh + j] as f64;
                    }
                }
            }
        }
        (out, [dq, dk, dv])
    }

    fn assert_close(name: &str, ours: &[f32], exact: &[f64]) {
        let largest = exact.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        for (i, (&a, &b)) in ours.iter().zip(exact).enumerate() {
            assert!((a as f64 - b).abs() <= 2e-6 * largest.max(1.0), "{name}[{i}]: {a} against {b}");
        }
    }

    #[test]
    fn forward_and_gradients_match_f64_with_bias_and_dropout() {
        // Non-square everywhere, dh not a multiple of 16, s > t as with a prefix and a cache.
        let d = Dims { groups: 6, heads: 3, t: 5, s: 9, dh: 19 };
        let (q, k, v) = (values(6 * 5 * 19, 1), values(6 * 9 * 19, 2), values(6 * 9 * 19, 3));
        let bias: Vec<f32> = values(2 * 5 * 9, 4).iter().map(|x| if *x > 0.6 { -1e9 } else { *x }).collect();
        let keep: Vec<f32> = values(6 * 5 * 9, 5).iter().map(|x| if *x > -0.6 { 1.0 } else { 0.0 }).collect();
        let dout = values(6 * 5 * 19, 6);
        let scale = 1.0 / (19f32).sqrt();
        for p in [0.0f32, 0.2] {
            let dropout = (p > 0.0).then_some(Dropout { keep: &keep, p });
            let ones = vec![1.0f32; keep.len()];
            let (out, probs) = forward(&d, &q, &k, &v, Some(&bias), dropout, scale);
            let (dq, dk, dv) = backward(&d, &q, &k, &v, &probs, dropout, scale, &dout);
            let mask = if p > 0.0 { &keep } else { &ones };
            let (exact, [eq, ek, ev]) = reference(&d, &q, &k, &v, &bias, mask, p as f64, scale as f64, &dout);
            assert_close("out", &out, &exact);
            assert_close("dq", &dq, &eq);
            assert_close("dk", &dk, &ek);
            assert_close("dv", &dv, &ev);
        }
    }
}
