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
                micro_losses.push(self.micro_step(&batch, micro_step, &mut accumulated, &mut stats)?);
                stats.tokens += batch.tokens();
                self.progress.batch_in_epoch += 1;
                let end_of_epoch = self.progress.batch_in_epoch == batches_per_epoch;
                if micro_losses.len() < self.config.grad_accum && !end_of_epoch {
                    continue;
                }
                self.optimizer_step(&mut accumulated, std::mem::take(&mut micro_losses), total_steps, &mut stats)?;
                self.after_step(end_of_epoch, total_steps, halt_after, dev, &mut stats)?;
                if halt_after == Some(self.progress.optimizer_step) {
                    return Ok(self.summary(&stats));
                }
                if self.progress.stopped_early {
                    break 'run;
                }
            }
            self.progress.epoch += 1;
            self.progress.batch_in_epoch = 0;
        }
        self.settle(&mut stats)?;
        self.finish(dev)?;
        Ok(self.summary(&stats))
    }

    /// After an optimizer step: the dev evaluation and the checkpoint, where due. The last step
    /// is evaluated too, so that best/ weighs the prefix the run ends with, wherever
    /// --max-steps or --eval-every leave it; a run that ends here is checkpointed once, by
    /// `finish`, unless it halts (`halt_after`, as if killed) right after.
    fn after_step(&mut self, end_of_epoch: bool, total_steps: usize, halt_after: Option<usize>, dev: &[Example], stats: &mut RunStats) -> Result<(), TrainError> {
        let step = self.progress.optimizer_step;
        let last = step >= total_steps;
        let eval_due = self.config.eval_every.is_some_and(|n| step % n == 0) || (self.config.eval_every.is_none() && end_of_epoch) || last;
        let checkpoint_due = self.config.checkpoint_every.is_some_and(|n| step % n == 0);
        if eval_due || checkpoint_due || halt_after == Some(step) {
            // Whatever reads the prefix, or ends the run, waits for the step's checks.
            self.settle(stats)?;
        }
        if eval_due && !dev.is_empty() {
            self.evaluate_and_keep_best(dev)?;
        }
        let ending = last || self.progress.stopped_early;
        if ((checkpoint_due || eval_due) && !ending) || halt_after == Some(step) {
            self.checkpoint()?;
        }
        Ok(())
    }

    /// Forward and backward of one micro-batch, its gradients added to `accumulated`. Returns
    /// the loss, `[1]` on the device. Checked here, a non-finite loss stops the run before
    /// anything is updated; when the run goes ahead of its checks ([`Trainer::overlap`]) it is
    /// checked with its step's gradients, and the previous step's numbers are read here instead,
    /// once this step's backward pass is queued behind them.
    pub(super) fn micro_step(&mut self, batch: &Batch, micro_step: usize, accumulated: &mut Accumulated, stats: &mut RunStats) -> Result<Tensor<1>, TrainError> {
        // Dropout masks are drawn from a seed of (run seed, position in the data), so a resumed
        // run draws the same masks as an uninterrupted one.
        self.device.seed(self.config.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(micro_step as u64));
        let (value, _) = self.batch_loss(batch, true)?;
        // The backward pass is queued before the loss is read back, so a GPU is not left idle
        // while the host waits; nothing is updated until the loss has been checked.
        let loss = value.clone().detach();
        let gradients = value.backward();
        if self.overlap {
            self.settle(stats)?;
        } else {
            let scalar = to_f32s(loss.clone())[0] as f64;
            if !scalar.is_finite() {
                return Err(self.diverged(&format!("loss is {scalar}")));
            }
        }
        match self.config.method {
            Method::Prefix => accumulated.add(&self.prefix, &gradients),
            Method::Finetune => accumulated.add(&self.model, &gradients),
        }
        Ok(loss)
    }

    /// One optimizer step over the accumulated micro-batches (`losses`), then its record in
    /// `metrics.jsonl` and the progress line. A NaN or infinite gradient stops the run first, so
    /// neither the prefix nor the last checkpoint is touched. A run that goes ahead of its
    /// checks makes the same test on the device, calls the update off there when it fails, and
    /// leaves the step [`Pending`] until [`Trainer::settle`] reads it.
    pub(super) fn optimizer_step(&mut self, accumulated: &mut Accumulated, losses: Vec<Tensor<1>>, total_steps: usize, stats: &mut RunStats) -> Result<(), TrainError> {
        let micro_batches = losses.len();
        let lr = self.config.schedule.lr(self.config.lr, self.progress.optimizer_step, self.config.warmup_steps, total_steps);
        let at = StepAt { step: self.progress.optimizer_step + 1, epoch: self.progress.epoch, batch: self.progress.batch_in_epoch.saturating_sub(1) };
        if self.overlap {
            let unless = accumulated.non_finite_on_device();
            accumulated.scale(1.0 / micro_batches as f64);
            let grad_norm = self.config.max_grad_norm.and_then(|max| accumulated.clip_on_device(max));
            self.apply(lr, accumulated, unless.clone());
            self.progress.optimizer_step += 1;
            self.pending = Some(Pending { at, lr, losses, non_finite: unless, grad_norm, total_steps });
            return Ok(());
        }
        if let Some(index) = accumulated.first_non_finite() {
            return Err(self.diverged(&format!("the gradient of trainable parameter #{index} is not finite (NaN or inf)")));
        }
        accumulated.scale(1.0 / micro_batches as f64);
        let grad_norm = self.config.max_grad_norm.map(|max| accumulated.clip(max));
        self.apply(lr, accumulated, None);
        self.progress.optimizer_step += 1;
        let loss = to_f32s(Tensor::cat(losses, 0)).iter().map(|&l| l as f64).sum::<f64>() / micro_batches as f64;
        self.record(at, loss, lr, grad_norm, total_steps, stats)
    }

    /// The error that stops a run at the step being taken now.
    pub(super) fn diverged(&self, what: &str) -> TrainError {
        self.diverged_at(what, StepAt { step: self.progress.optimizer_step + 1, epoch: self.progress.epoch, batch: self.progress.batch_in_epoch })
    }

    pub(super) fn diverged_at(&self, what: &str, at: StepAt) -> TrainError {
        TrainError::Diverged(format!(
            "{what} at step {} (epoch {}, batch {}): stopping; the last good checkpoint in {} is intact and resumable — lower --lr or set --max-grad-norm",
            at.step,
            at.epoch,
            at.batch,
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

    /// The update, called off on the device where `unless` is true.
    pub(super) fn apply(&mut self, lr: f64, accumulated: &mut Accumulated, unless: Option<Tensor<1, Bool>>) {
        let optimizer = self.config.optimizer;
        match self.config.method {
            Method::Prefix => {
                let stand_in = M::placeholder_prefix(&self.prefix);
                let prefix = std::mem::replace(&mut self.prefix, stand_in);
                self.prefix = update(prefix, optimizer, lr, accumulated, &mut self.state, unless);
            }
            Method::Finetune => {
                let stand_in = (self.model.finetune().expect("checked when the run opened").placeholder)(&self.model);
                let model = std::mem::replace(&mut self.model, stand_in);
                self.model = update(model, optimizer, lr, accumulated, &mut self.state, unless);
            }
        }
        accumulated.grads.clear();
    }
}

/// The optimizer's step of `module`, called off on the device where `unless` is true.
fn update<T: Module>(module: T, optimizer: OptimizerConfig, lr: f64, accumulated: &mut Accumulated, state: &mut OptimizerState, unless: Option<Tensor<1, Bool>>) -> T {
    match unless {
        Some(unless) => optim::step_unless(module, optimizer, lr, accumulated, state, unless),
        None => optim::step(module, optimizer, lr, accumulated, state),
    }
}
