//! Learning-rate schedules as HF's `get_linear_schedule_with_warmup` and
//! `get_constant_schedule_with_warmup`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// Linear warmup from 0, then linear decay to 0 at the last step (the paper's).
    #[default]
    Linear,
    /// Linear warmup, then constant.
    Constant,
}

impl Schedule {
    /// The learning rate for optimizer step `step` (0-based) of `total`.
    pub fn lr(self, base: f64, step: usize, warmup: usize, total: usize) -> f64 {
        if step < warmup {
            return base * step as f64 / warmup.max(1) as f64;
        }
        match self {
            Schedule::Constant => base,
            Schedule::Linear => {
                let remaining = total.saturating_sub(step) as f64;
                base * (remaining / total.saturating_sub(warmup).max(1) as f64).max(0.0)
            }
        }
    }
}
