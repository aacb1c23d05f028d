//! GPT-2's activation, `gelu_new` = 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), and its
//! derivative, each as one vectorised pass over all cores.
//!
//! Written as Burn tensor operations it is eight element-wise passes forward and more backward,
//! each single-threaded on the CPU backend, and its `tanh` and `powf` are scalar libm calls:
//! together about a tenth of a GPT-2 training step there. Here `tanh` comes from an `exp` with a
//! degree-6 polynomial (a few ulp; the activation's absolute error stays near 1e-7).

use rayon::prelude::*;

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const CUBIC: f32 = 0.044_715;
/// Elements per task: big enough to amortise the hand-off, small enough to share the cores.
const CHUNK: usize = 1 << 14;

/// `out[i] = gelu_new(x[i])`.
pub fn forward(x: &[f32], out: &mut [f32]) {
    assert_eq!(x.len(), out.len(), "gelu::forward: input and output lengths differ");
    if x.len() <= CHUNK {
        return run(x, out, None);
    }
    out.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(out, x)| run(x, out, None));
}

/// `out[i] = grad[i] · gelu_new'(x[i])`.
pub fn backward(x: &[f32], grad: &[f32], out: &mut [f32]) {
    assert!(x.len() == out.len() && grad.len() == out.len(), "gelu::backward: lengths differ");
    if x.len() <= CHUNK {
        return run(x, out, Some(grad));
    }
    out.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .zip(grad.par_chunks(CHUNK))
        .for_each(|((out, x), grad)| run(x, out, Some(grad)));
}

/// One chunk, through the widest loop the CPU has.
fn run(x: &[f32], out: &mut [f32], grad: Option<&[f32]>) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA.
        return unsafe { run_avx2(x, out, grad) };
    }
    run_portable(x, out, grad)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2(x: &[f32], out: &mut [f32], grad: Option<&[f32]>) {
    run_portable(x, out, grad)
}

/// Plain loops the compiler vectorises: no branches, no libm calls.
#[inline(always)]
fn run_portable(x: &[f32], out: &mut [f32], grad: Option<&[f32]>) {
    match grad {
        None => {
            for (o, &v) in out.iter_mut().zip(x) {
                *o = 0.5 * v * (1.0 + tanh(SQRT_2_OVER_PI * (v + CUBIC * v * v * v)));
            }
        }
        Some(grad) => {
            for ((o, &v), &g) in out.iter_mut().zip(x).zip(grad) {
                let t = tanh(SQRT_2_OVER_PI * (v + CUBIC * v * v * v));
                let d_inner = SQRT_2_OVER_PI * (1.0 + 3.0 * CUBIC * v * v);
                *o = g * (0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * d_inner);
            }
        }
    }
}

/// tanh(u) = sign(u)·(1 − 2/(e^{2|u|} + 1)).
#[inline(always)]
fn tanh(u: f32) -> f32 {
    let e = exp((2.0 * u.abs()).min(88.0));
    let magnitude = 1.0 - 2.0 / (e + 1.0);
    f32::from_bits(magnitude.to_bits() | (u.to_bits() & 0x8000_0000))
}

/// e^x for x in [−88, 88]: 2^n · p(r) with n = round(x / ln 2) and |r| ≤ ln 2 / 2 (Cephes'
/// `expf` polynomial), rounding by the 1.5·2^23 trick so it vectorises without SSE4.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5·2^23
    let n = (x * LOG2_E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4_f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let p = p * r * r + r + 1.0;
    f32::from_bits(p.to_bits().wrapping_add(((n as i32) << 23) as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(x: f64) -> (f64, f64) {
        let c = (2.0 / std::f64::consts::PI).sqrt();
        let t = (c * (x + 0.044715 * x.powi(3))).tanh();
        let value = 0.5 * x * (1.0 + t);
        let slope = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * c * (1.0 + 3.0 * 0.044715 * x * x);
        (value, slope)
    }

    #[test]
    fn gelu_and_its_slope_match_f64_everywhere() {
        // Dense over where activations live, plus the far tails and both signs of zero.
        let mut x: Vec<f32> = (-200_000..=200_000).map(|i| i as f32 * 1e-4).collect();
        x.extend([-1e4, -90.0, -30.0, -10.0, 10.0, 30.0, 90.0, 1e4, 0.0, -0.0, 1e-30, -1e-30]);
        let grad: Vec<f32> = x.iter().enumerate().map(|(i, _)| 1.0 + (i % 7) as f32 * 0.25).collect();
        let (mut value, mut slope) = (vec![0.0; x.len()], vec![0.0; x.len()]);
        forward(&x, &mut value);
        backward(&x, &grad, &mut slope);
        for i in 0..x.len() {
            let (want, want_slope) = reference(x[i] as f64);
            let scale = want.abs().max(1.0);
            assert!((value[i] as f64 - want).abs() <= 4e-7 * scale, "gelu({}) = {} against {want}", x[i], value[i]);
            // Absolute, scaled by the incoming gradient: in the far negative tail any f32 form
            // (PyTorch's too) rounds 1 + tanh to 0 where the true slope is still about -1e-6.
            let want_grad = grad[i] as f64 * want_slope;
            assert!((slope[i] as f64 - want_grad).abs() <= 1e-6 * (grad[i] as f64) * want_slope.abs().max(1.0), "gelu'({}) = {} against {want_grad}", x[i], slope[i]);
        }
    }

    #[test]
    fn exp_is_within_a_few_ulp() {
        // The activation only takes e^x of x ≥ 0; results below f32's normal range are not needed.
        for i in -8000..=8800 {
            let x = i as f32 * 0.01;
            let (got, want) = (exp(x) as f64, (x as f64).exp());
            assert!(((got - want) / want).abs() < 4.0 * f32::EPSILON as f64, "exp({x}) = {got} against {want}");
        }
    }
}
