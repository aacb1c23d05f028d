//! A run that goes ahead of its checks. On a GPU every value read back waits for the device,
//! and the host then builds the next step's graph while the device idles: reading a step's
//! loss and testing its gradients before its update cost a training step ~11.5 of 55.7 ms on an
//! H200 (the forward and backward passes timed to their read-backs, against the step's GPU
//! time). Instead the step's finiteness test runs on the device and calls its update off there
//! when it fails ([`crate::optim::step_unless`]), and the step stays pending: its loss, the test
//! and the gradient norm are read in one go once the next step's backward pass is queued, and a
//! failure stops the run then, with nothing updated and the last checkpoint as it was.
//! (`PREFIX_TUNE_OVERLAP=0` turns it off, for comparison; the CPU never needs it.)

use super::*;

/// Where a step stands in the data, for its record and its error.
#[derive(Debug, Clone, Copy)]
pub(super) struct StepAt {
    pub step: usize,
    pub epoch: usize,
    pub batch: usize,
}

/// An optimizer step whose numbers are still on the device.
pub(super) struct Pending {
    pub at: StepAt,
    pub lr: f64,
    /// Each micro-batch's loss, `[1]`.
    pub losses: Vec<Tensor<1>>,
    /// `[1]`: a gradient held a NaN or an infinity (its update was called off).
    pub non_finite: Option<Tensor<1, Bool>>,
    /// `[1]`: the gradient norm before clipping, when clipping.
    pub grad_norm: Option<Tensor<1>>,
    pub total_steps: usize,
}

/// Whether a run on `device` goes ahead of its checks: on a GPU, unless
/// `PREFIX_TUNE_OVERLAP=0`.
pub(super) fn overlaps(device: &Device) -> bool {
    prefix_tune_model::backend::is_gpu(device) && std::env::var("PREFIX_TUNE_OVERLAP").map_or(true, |v| v != "0")
}

impl<M: PrefixModel> Trainer<M> {
    /// Reads the pending step, if any, in one read back: a non-finite loss or gradient stops the
    /// run (its update was called off on the device); otherwise the step is recorded.
    pub(super) fn settle(&mut self, stats: &mut RunStats) -> Result<(), TrainError> {
        let Some(pending) = self.pending.take() else { return Ok(()) };
        let count = pending.losses.len();
        let device = pending.losses[0].device();
        let mut values = pending.losses;
        values.push(pending.non_finite.map_or_else(|| Tensor::zeros([1], &device), |flag| flag.float()));
        values.push(pending.grad_norm.clone().unwrap_or_else(|| Tensor::zeros([1], &device)));
        let read = to_f32s(Tensor::cat(values, 0));
        let losses = &read[..count];
        if let Some(&bad) = losses.iter().find(|l| !l.is_finite()) {
            return Err(self.diverged_at(&format!("loss is {bad}"), pending.at));
        }
        if read[count] != 0.0 {
            return Err(self.diverged_at("a gradient of the trainable parameters is not finite (NaN or inf)", pending.at));
        }
        let loss = losses.iter().map(|&l| l as f64).sum::<f64>() / count as f64;
        let grad_norm = pending.grad_norm.map(|_| read[count + 1] as f64);
        self.record(pending.at, loss, pending.lr, grad_norm, pending.total_steps, stats)
    }

    /// A finished step's line in `metrics.jsonl` and the progress line.
    pub(super) fn record(&mut self, at: StepAt, loss: f64, lr: f64, grad_norm: Option<f64>, total_steps: usize, stats: &mut RunStats) -> Result<(), TrainError> {
        stats.first_loss.get_or_insert(loss);
        stats.last_loss = Some(loss);
        let tokens_per_second = stats.tokens_per_second();
        self.append_metrics(&serde_json::json!({
            "step": at.step,
            "epoch": at.epoch,
            "loss": loss,
            "lr": lr,
            "grad_norm": grad_norm,
            "tokens_per_second": tokens_per_second,
        }))?;
        self.report_progress(loss, tokens_per_second, stats.started.elapsed().as_secs_f64(), total_steps);
        Ok(())
    }
}
