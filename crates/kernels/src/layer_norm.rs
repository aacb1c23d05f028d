//! LayerNorm over the last dimension with a frozen scale and shift, and its input gradient:
//! one pass per row each way, rows spread over the cores.
//!
//! Autodiff differentiates Burn's LayerNorm as its decomposition (mean, centring, variance,
//! root, division, scale, shift, and as many steps back), each a single-threaded pass: 4–5% of
//! a bf16 training step of GPT-2 small. Statistics are summed in f64, so the result is at
//! least as close to the exact one as PyTorch's.

use rayon::prelude::*;

/// Rows per task: a few hundred KB of activations.
const ROWS: usize = 64;

/// `y = (x − mean) / √(var + eps) · weight + bias` per row of `x` `[rows, d]` (biased
/// variance, as PyTorch). Returns `y` and each row's `(mean, 1/√(var + eps))` for [`backward`].
pub fn forward(x: &[f32], d: usize, weight: &[f32], bias: &[f32], eps: f64) -> (Vec<f32>, Vec<(f32, f32)>) {
    assert!(d > 0 && x.len() % d == 0 && weight.len() == d && bias.len() == d, "layer_norm::forward: shapes differ");
    let rows = x.len() / d;
    let mut y = vec![0.0f32; x.len()];
    let mut stats = vec![(0.0f32, 0.0f32); rows];
    y.par_chunks_mut(ROWS * d).zip(x.par_chunks(ROWS * d)).zip(stats.par_chunks_mut(ROWS)).for_each(|((y, x), stats)| {
        for ((y, x), stat) in y.chunks_mut(d).zip(x.chunks(d)).zip(stats) {
            let mean = x.iter().map(|&v| v as f64).sum::<f64>() / d as f64;
            let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / d as f64;
            let (mean, rstd) = (mean as f32, (1.0 / (var + eps).sqrt()) as f32);
            for (((y, &v), &w), &b) in y.iter_mut().zip(x).zip(weight).zip(bias) {
                *y = (v - mean) * rstd * w + b;
            }
            *stat = (mean, rstd);
        }
    });
    (y, stats)
}

/// The input gradient: `dx = rstd · (g − mean(g) − x̂ · mean(g · x̂))` with `g = dy · weight`
/// and `x̂ = (x − mean) · rstd`. The scale and shift are frozen and get none.
pub fn backward(x: &[f32], d: usize, weight: &[f32], stats: &[(f32, f32)], dy: &[f32]) -> Vec<f32> {
    assert!(x.len() == dy.len() && x.len() == stats.len() * d && weight.len() == d, "layer_norm::backward: shapes differ");
    let mut dx = vec![0.0f32; x.len()];
    dx.par_chunks_mut(ROWS * d).zip(x.par_chunks(ROWS * d).zip(dy.par_chunks(ROWS * d))).zip(stats.par_chunks(ROWS)).for_each(|((dx, (x, dy)), stats)| {
        for (((dx, x), dy), &(mean, rstd)) in dx.chunks_mut(d).zip(x.chunks(d)).zip(dy.chunks(d)).zip(stats) {
            let (mut sum_g, mut sum_gx) = (0.0f64, 0.0f64);
            for ((&v, &g), &w) in x.iter().zip(dy).zip(weight) {
                let g = (g * w) as f64;
                sum_g += g;
                sum_gx += g * ((v - mean) * rstd) as f64;
            }
            let (mean_g, mean_gx) = ((sum_g / d as f64) as f32, (sum_gx / d as f64) as f32);
            for (((dx, &v), &g), &w) in dx.iter_mut().zip(x).zip(dy).zip(weight) {
                *dx = rstd * (g * w - mean_g - (v - mean) * rstd * mean_gx);
            }
        }
    });
    dx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_input_gradient_match_f64() {
        let (rows, d) = (70, 37);
        let x: Vec<f32> = (0..rows * d).map(|i| ((i * 7919 % 1009) as f32 / 1009.0 - 0.3) * 6.0).collect();
        let weight: Vec<f32> = (0..d).map(|j| 0.5 + j as f32 * 0.05).collect();
        let bias: Vec<f32> = (0..d).map(|j| j as f32 * 0.01 - 0.2).collect();
        let dy: Vec<f32> = (0..rows * d).map(|i| ((i * 104_729 % 997) as f32 / 997.0) - 0.5).collect();
        let eps = 1e-5;
        let (y, stats) = forward(&x, d, &weight, &bias, eps);
        let dx = backward(&x, d, &weight, &stats, &dy);
        for r in 0..rows {
            let row: Vec<f64> = x[r * d..(r + 1) * d].iter().map(|&v| v as f64).collect();
            let mean = row.iter().sum::<f64>() / d as f64;
            let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / d as f64;
            let rstd = 1.0 / (var + eps).sqrt();
            let xhat: Vec<f64> = row.iter().map(|v| (v - mean) * rstd).collect();
            let g: Vec<f64> = (0..d).map(|j| dy[r * d + j] as f64 * weight[j] as f64).collect();
            let mean_g = g.iter().sum::<f64>() / d as f64;
            let mean_gx = g.iter().zip(&xhat).map(|(a, b)| a * b).sum::<f64>() / d as f64;
            for j in 0..d {
                let want = xhat[j] * weight[j] as f64 + bias[j] as f64;
                assert!((y[r * d + j] as f64 - want).abs() < 2e-6, "y[{r}, {j}] = {} against {want}", y[r * d + j]);
                let want = rstd * (g[j] - mean_g - xhat[j] * mean_gx);
                assert!((dx[r * d + j] as f64 - want).abs() < 2e-6 * rstd.max(1.0), "dx[{r}, {j}] = {} against {want}", dx[r * d + j]);
            }
        }
    }
}
