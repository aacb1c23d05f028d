//! One AdamW step (PyTorch's, decoupled weight decay) over a parameter's values in place: one
//! pass on all cores instead of a dozen single-threaded tensor operations.
//!
//! Each element goes through the same f32 operations in the same order as the tensor form in
//! `prefix_tune_train::optim` (no fused multiply-adds), so the two agree bit for bit and a run
//! resumed on either path continues the same run.

use rayon::prelude::*;

/// The step's scalars, each rounded to f32 once as a tensor operation rounds its scalar.
#[derive(Debug, Clone, Copy)]
pub struct Coefficients {
    pub beta1: f32,
    pub one_minus_beta1: f32,
    pub beta2: f32,
    pub one_minus_beta2: f32,
    /// `1 − lr·weight_decay`, when there is weight decay.
    pub decay: Option<f32>,
    /// `√(1 − β₂ᵗ)`.
    pub bias_correction2_sqrt: f32,
    pub eps: f32,
    /// `lr / (1 − β₁ᵗ)`.
    pub step_size: f32,
}

impl Coefficients {
    /// The scalars of step `t` (from 1) at learning rate `lr`, each computed in f64 and
    /// rounded to f32 once, as a tensor operation rounds its scalar.
    pub fn at_step(beta1: f64, beta2: f64, eps: f64, weight_decay: f64, lr: f64, t: usize) -> Self {
        let t = t as i32;
        Coefficients {
            beta1: beta1 as f32,
            one_minus_beta1: (1.0 - beta1) as f32,
            beta2: beta2 as f32,
            one_minus_beta2: (1.0 - beta2) as f32,
            decay: (weight_decay != 0.0).then_some((1.0 - lr * weight_decay) as f32),
            bias_correction2_sqrt: (1.0 - beta2.powi(t)).sqrt() as f32,
            eps: eps as f32,
            step_size: (lr / (1.0 - beta1.powi(t))) as f32,
        }
    }
}

/// Elements per task.
const CHUNK: usize = 1 << 16;

/// `value`, `m` and `v` updated in place from `grad`; `first`: the moments are not yet set
/// (their contents are ignored and overwritten).
pub fn step(c: &Coefficients, value: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32], first: bool) {
    let n = value.len();
    assert!(grad.len() == n && m.len() == n && v.len() == n, "adamw::step: lengths differ");
    value
        .par_chunks_mut(CHUNK)
        .zip(grad.par_chunks(CHUNK))
        .zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
        .for_each(|((value, grad), (m, v))| chunk(c, value, grad, m, v, first));
}

fn chunk(c: &Coefficients, value: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32], first: bool) {
    for (((p, &g), m), v) in value.iter_mut().zip(grad).zip(m.iter_mut()).zip(v.iter_mut()) {
        let decayed = match c.decay {
            Some(decay) => *p * decay,
            None => *p,
        };
        *m = if first { g * c.one_minus_beta1 } else { *m * c.beta1 + g * c.one_minus_beta1 };
        *v = if first { g * g * c.one_minus_beta2 } else { *v * c.beta2 + g * g * c.one_minus_beta2 };
        let denom = v.sqrt() / c.bias_correction2_sqrt + c.eps;
        *p = decayed - *m / denom * c.step_size;
    }
}
