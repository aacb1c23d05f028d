//! The loop: epochs of micro-batches, gradient accumulation, the optimizer step, and the end
//! of a run.

use super::*;

impl<M: PrefixModel> Trainer<M> {
    /// Trains on `train`, evaluating on `dev`. `halt_after`: stop as if killed right after
    /// that optimizer step (a checkpoint has been written if it was due).
    pub fn train(&mut self, train: &[Example], dev: &[Example], halt_after: Option<usize>) -> Result<Summary, TrainError> {
        if train.is_empty() {
            return Err(TrainError::Data("the training set is empty".into()));
        }
        let total_steps = self.total_steps(train.len());
        self.start_progress(train.len(), total_steps);
        let mut stats = RunStats { started: Instant::now(), tokens: 0, first_loss: None, last_loss: None };
        let mut accumulated = Accumulated::default();
        let mut micro_losses = Vec::new();
        let batches_per_epoch = train.len().div_ceil(self.config.batch_size);
        let epochs = if self.config.max_steps.is_some() { usize::MAX } else { self.config.epochs };

        'run: while self.progress.epoch < epochs && !self.progress.stopped_early {
            let order = epoch_order(train.len(), self.config.seed, self.progress.epoch);
            while self.progress.batch_in_epoch < batches_per_epoch {
                if self.progress.optimizer_step >= total_steps {
                    break 'run;
                }
                let start = self.progress.batch_in_epoch * self.config.batch_size;
                let refs: Vec<&Example> = order[start..(start + self.config.batch_size).min(train.len())].iter().map(|&i| &train[i]).collect();
                let batch = self.model.batch(&refs, &self.config);
                let micro_step = self.progress.epoch * batches_per_epoch + self.progress.batch_in_epoch;
                micro_losses.push(self.micro_step(&batch, micro_step, &mut accumulated)?);
                stats.tokens += batch.tokens();
                self.progress.batch_in_epoch += 1;
                let end_of_epoch = self.progress.batch_in_epoch == batches_per_epoch;
                if micro_losses.len() < self.config.grad_accum && !end_of_epoch {
                    continue;
                }
                let step_loss = micro_losses.iter().sum::<f64>() / micro_losses.len() as f64;
                self.optimizer_step(&mut accumulated, micro_losses.len(), step_loss, total_steps, &mut stats)?;
                micro_losses.clear();
                let step = self.progress.optimizer_step;
                let eval_due = self.config.eval_every.is_some_and(|n| step % n == 0) || (self.config.eval_every.is_none() && end_of_epoch);
                if eval_due && !dev.is_empty() {
                    self.evaluate_and_keep_best(dev)?;
                }
                if self.config.checkpoint_every.is_some_and(|n| step % n == 0) || eval_due || halt_after == Some(step) {
                    self.checkpoint()?;
                }
                if halt_after == Some(step) {
                    return Ok(self.summary(&stats));
                }
                if self.progress.stopped_early {
                    break 'run;
                }
            }
            self.progress.epoch += 1;
            self.progress.batch_in_epoch = 0;
        }
        self.finish(dev)?;
        Ok(self.summary(&stats))
    }

    /// Forward and backward of one micro-batch, its gradients added to `accumulated`. Returns
    /// the loss; a non-finite loss stops the run before anything is updated.
    pub(super) fn micro_step(&mut self, batch: &Batch, micro_step: usize, accumulated: &mut Accumulated) -> Result<f64, TrainError> {
        // Dropout masks are drawn from a seed of (run seed, position in the data), so a resumed
        // run draws the same masks as an uninterrupted one.
        self.device.seed(self.config.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(micro_step as u64));
        let (value, _) = self.batch_loss(batch, true)?;
        // The backward pass is queued before the loss is read back, so a GPU is not left idle
        // while the host waits; nothing is updated until the loss has been checked.
        let loss = value.clone().detach();
        let gradients = value.backward();
        let scalar = to_f32s(loss)[0] as f64;
        if !scalar.is_finite() {
            return Err(self.diverged(&format!("loss is {scalar}")));
        }
        match self.config.method {
            Method::Prefix => accumulated.add(&self.prefix, &gradients),
            Method::Finetune => accumulated.add(&self.model, &gradients),
        }
        Ok(scalar)
    }

    /// One optimizer step over `micro_batches` accumulated micro-batches, then its record in
    /// `metrics.jsonl` and the progress line. A NaN or infinite gradient stops the run first,
    /// so neither the prefix nor the last checkpoint is touched.
    pub(super) fn optimizer_step(&mut self, accumulated: &mut Accumulated, micro_batches: usize, step_loss: f64, total_steps: usize, stats: &mut RunStats) -> Result<(), TrainError> {
        if let Some(index) = accumulated.first_non_finite() {
            return Err(self.diverged(&format!("the gradient of trainable parameter #{index} is not finite (NaN or inf)")));
        }
        accumulated.scale(1.0 / micro_batches as f64);
        let grad_norm = self.config.max_grad_norm.map(|max| accumulated.clip(max));
        let lr = self.config.schedule.lr(self.config.lr, self.progress.optimizer_step, self.config.warmup_steps, total_steps);
        self.apply(lr, accumulated);
        self.progress.optimizer_step += 1;
        stats.first_loss.get_or_insert(step_loss);
        stats.last_loss = Some(step_loss);
        let tokens_per_second = stats.tokens_per_second();
        self.append_metrics(&serde_json::json!({
            "step": self.progress.optimizer_step,
            "epoch": self.progress.epoch,
            "loss": step_loss,
            "lr": lr,
            "grad_norm": grad_norm,
            "tokens_per_second": tokens_per_second,
        }))?;
        self.report_progress(step_loss, tokens_per_second, stats.started.elapsed().as_secs_f64(), total_steps);
        Ok(())
    }

    pub(super) fn diverged(&self, what: &str) -> TrainError {
        TrainError::Diverged(format!(
            "{what} at step {} (epoch {}, batch {}): stopping; the last good checkpoint in {} is intact and resumable — lower --lr or set --max-grad-norm",
            self.progress.optimizer_step + 1,
            self.progress.epoch,
            self.progress.batch_in_epoch,
            self.out.join("checkpoint").display()
        ))
    }

    /// The end of a run: the best prefix (when no dev set chose one), the last checkpoint, the chart.
    pub(super) fn finish(&mut self, dev: &[Example]) -> Result<(), TrainError> {
        if dev.is_empty() || (self.progress.best_dev_loss.is_none() && self.progress.best_dev_metric.is_none()) {
            self.save_best()?;
        }
        self.checkpoint()?;
        self.plot()?;
        if let Some(bar) = self.bar.take() {
            bar.finish();
        }
        Ok(())
    }

    pub(super) fn summary(&self, stats: &RunStats) -> Summary {
        let (trainable_params, total_params) = self.param_counts();
        Summary {
            steps: self.progress.optimizer_step,
            first_loss: stats.first_loss,
            last_loss: stats.last_loss,
            best_dev_loss: self.progress.best_dev_loss,
            best_dev_metric: self.progress.best_dev_metric,
            trainable_params,
            total_params,
            tokens_per_second: stats.tokens_per_second(),
            stopped_early: self.progress.stopped_early,
            peak_rss_mib: peak_rss_mib(),
        }
    }

    pub(super) fn apply(&mut self, lr: f64, accumulated: &mut Accumulated) {
        match self.config.method {
            Method::Prefix => {
                let stand_in = M::placeholder_prefix(&self.prefix);
                let prefix = std::mem::replace(&mut self.prefix, stand_in);
                self.prefix = optim::step(prefix, self.config.optimizer, lr, accumulated, &mut self.state);
            }
            Method::Finetune => {
                let stand_in = (self.model.finetune().expect("checked when the run opened").placeholder)(&self.model);
                let model = std::mem::replace(&mut self.model, stand_in);
                self.model = optim::step(model, self.config.optimizer, lr, accumulated, &mut self.state);
            }
        }
        accumulated.grads.clear();
    }
}
