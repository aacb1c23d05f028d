//! The training loop.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor};
use prefix_tune_model::gpt2::Gpt2;
use prefix_tune_model::nn::Dropout;
use prefix_tune_model::tensors::to_f32s;
use prefix_tune_model::weights::{save_f32, write_atomic, WeightFiles};
use prefix_tune_prefix::PrefixConfig;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{is_published, publish_dir, recover_dir};
use crate::examples::{epoch_order, Batch, Example};
use crate::loss::Objective;
use crate::model::PrefixModel;
use crate::optim::{self, Accumulated, OptimizerConfig, OptimizerState};
use crate::schedule::Schedule;
use crate::TrainError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Train only the prefix; the LM is frozen (no gradient is even computed for it).
    #[default]
    Prefix,
    /// Train every weight of the LM, no prefix: the baseline users compare against.
    Finetune,
}

/// Everything that defines a run; saved as `config.json` in the run directory.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainConfig {
    pub method: Method,
    pub prefix: PrefixConfig,
    pub lr: f64,
    pub epochs: usize,
    /// Stops after this many optimizer steps (overrides epochs for the schedule's length).
    pub max_steps: Option<usize>,
    pub batch_size: usize,
    pub grad_accum: usize,
    pub warmup_steps: usize,
    pub schedule: Schedule,
    pub optimizer: OptimizerConfig,
    pub objective: Objective,
    /// `None`: the LM's configured dropout; `Some(0.0)` turns it off.
    pub lm_dropout: Option<f64>,
    pub max_grad_norm: Option<f64>,
    pub seed: u64,
    /// Evaluate on dev every N optimizer steps (`None`: at the end of every epoch).
    pub eval_every: Option<usize>,
    /// Stop when the dev loss has not improved for this many evaluations.
    pub patience: Option<usize>,
    /// Write a resumable checkpoint every N optimizer steps (and at every evaluation).
    pub checkpoint_every: Option<usize>,
    /// Token used to pad batches (masked out; GPT-2: EOS).
    pub pad_token_id: u32,
    /// Token between source and target (GPT-2: EOS); where an infix goes.
    #[serde(default = "default_separator")]
    pub separator_token_id: u32,
    /// The model's name or path, recorded in the files written.
    pub base_model: Option<String>,
    /// The command-line options that started the run, kept so that `--resume DIR` alone can
    /// rebuild it (model, data paths, backend, …). Opaque to the learner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<serde_json::Value>,
}

impl TrainConfig {
    pub fn new(prefix: PrefixConfig) -> Self {
        Self {
            method: Method::Prefix,
            prefix,
            lr: 5e-5,
            epochs: 5,
            max_steps: None,
            batch_size: 5,
            grad_accum: 1,
            warmup_steps: 0,
            schedule: Schedule::Linear,
            optimizer: OptimizerConfig::adamw(0.0),
            objective: Objective::Paper,
            lm_dropout: None,
            max_grad_norm: None,
            seed: 42,
            eval_every: None,
            patience: None,
            checkpoint_every: None,
            pad_token_id: 50256,
            separator_token_id: 50256,
            base_model: None,
            command: None,
        }
    }

    fn validate(&self) -> Result<(), TrainError> {
        let bad = |field: &str, reason: &str| Err(TrainError::Config(format!("{field}: {reason}")));
        if self.batch_size == 0 {
            return bad("batch_size", "must be at least 1");
        }
        if self.grad_accum == 0 {
            return bad("grad_accum", "must be at least 1");
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("lr", "must be a positive number");
        }
        if self.epochs == 0 && self.max_steps.is_none() {
            return bad("epochs", "must be at least 1 (or give max_steps)");
        }
        Ok(())
    }
}

fn default_separator() -> u32 {
    50256
}

/// A generation metric on the dev set (BLEU, ROUGE-L, …; higher is better), computed from the
/// model and the current prefix. When set, it decides the best prefix and early stopping.
pub type DevMetric<M = Gpt2> = Box<dyn FnMut(&M, &<M as prefix_tune_prefix::PrefixedModel>::Prefix) -> Result<f64, TrainError>>;

/// Where a run stands; saved in `checkpoint/trainer_state.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct Progress {
    epoch: usize,
    /// Batches of `epoch` already consumed.
    batch_in_epoch: usize,
    optimizer_step: usize,
    best_dev_loss: Option<f64>,
    /// Best value of the dev metric, when one is used.
    #[serde(default)]
    best_dev_metric: Option<f64>,
    evaluations_without_improvement: usize,
    stopped_early: bool,
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub steps: usize,
    pub first_loss: Option<f64>,
    pub last_loss: Option<f64>,
    pub best_dev_loss: Option<f64>,
    pub best_dev_metric: Option<f64>,
    pub trainable_params: usize,
    pub total_params: usize,
    pub tokens_per_second: f64,
    pub stopped_early: bool,
    /// The process's peak resident memory (Linux), MiB.
    pub peak_rss_mib: Option<f64>,
}

/// A run: the frozen model, the prefix being trained, the optimizer, the run directory.
pub struct Trainer<M: PrefixModel = Gpt2> {
    pub model: M,
    pub prefix: M::Prefix,
    pub config: TrainConfig,
    pub out: PathBuf,
    state: OptimizerState,
    progress: Progress,
    device: Device,
    /// Quiet: no progress line (tests).
    pub quiet: bool,
    /// When stderr is not a terminal (a log file), a plain progress line every this many steps.
    pub log_every: usize,
    /// Name and function of the dev metric that picks the best prefix (else the dev loss).
    pub dev_metric: Option<(String, DevMetric<M>)>,
    /// The progress bar, on a terminal only.
    bar: Option<ProgressBar>,
}

/// Counters of one call to [`Trainer::train`].
struct RunStats {
    started: Instant,
    tokens: usize,
    first_loss: Option<f64>,
    last_loss: Option<f64>,
}

impl RunStats {
    fn tokens_per_second(&self) -> f64 {
        self.tokens as f64 / self.started.elapsed().as_secs_f64().max(1e-9)
    }
}

/// Counts parameters and whether any frozen one still asks for a gradient.
struct Census {
    trainable: usize,
    frozen: usize,
}

impl ModuleVisitor for Census {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let count = param.val().shape().num_elements();
        if param.val().is_require_grad() {
            self.trainable += count;
        } else {
            self.frozen += count;
        }
    }
}

fn census<M: Module>(module: &M) -> Census {
    let mut census = Census { trainable: 0, frozen: 0 };
    module.visit(&mut census);
    census
}

impl<M: PrefixModel> Trainer<M> {
    /// Starts a run: `model` is frozen here; `prefix` is the starting prefix (fresh, or from
    /// `--init-from`). Both must live on an autodiff device. A new run in an existing
    /// directory starts a new `metrics.jsonl`.
    pub fn new(model: M, prefix: M::Prefix, config: TrainConfig, out: &Path) -> Result<Self, TrainError> {
        let trainer = Self::open(model, prefix, config, out)?;
        write_atomic(&out.join("metrics.jsonl"), b"")?;
        Ok(trainer)
    }

    /// The trainer over `out`, its config written; the run's history left as it is.
    fn open(model: M, prefix: M::Prefix, config: TrainConfig, out: &Path) -> Result<Self, TrainError> {
        config.validate()?;
        let device = model.device();
        let model = match config.method {
            Method::Prefix => model.freeze(),
            Method::Finetune => {
                model.finetune()?;
                model
            }
        };
        let trainer = Trainer {
            model,
            prefix,
            config,
            out: out.to_path_buf(),
            state: OptimizerState::default(),
            progress: Progress::default(),
            device,
            quiet: false,
            log_every: 10,
            dev_metric: None,
            bar: None,
        };
        std::fs::create_dir_all(out).map_err(|e| TrainError::Checkpoint { path: out.into(), reason: e.to_string() })?;
        let config_text = serde_json::to_string_pretty(&trainer.config).expect("config serialises");
        write_atomic(&out.join("config.json"), config_text.as_bytes())?;
        Ok(trainer)
    }

    /// Continues the run in `out` from its checkpoint: the prefix (MLP included), optimizer
    /// moments and position in the data come back exactly.
    pub fn resume(model: M, out: &Path) -> Result<Self, TrainError> {
        if !has_checkpoint(out) {
            return Err(TrainError::Checkpoint { path: out.join("checkpoint"), reason: "no checkpoint to resume from".into() });
        }
        let config_path = out.join("config.json");
        let text = std::fs::read_to_string(&config_path).map_err(|e| TrainError::Checkpoint { path: config_path.clone(), reason: e.to_string() })?;
        let config: TrainConfig = serde_json::from_str(&text).map_err(|e| TrainError::Checkpoint { path: config_path, reason: e.to_string() })?;
        let device = model.device();
        // A run killed while publishing a checkpoint left the previous one aside: take it back.
        let checkpoint = out.join("checkpoint");
        recover_dir(&checkpoint)?;
        recover_dir(&out.join("best"))?;
        // The fine-tuning baseline resumes from its own weights, not the base model's.
        let model = match config.method {
            Method::Prefix => model,
            Method::Finetune => (model.finetune()?.load)(&checkpoint.join("model"), &device)?,
        };
        let prefix = model.load_state(&checkpoint)?.set_require_grad(true);
        let state_path = checkpoint.join("trainer_state.json");
        let text = std::fs::read_to_string(&state_path).map_err(|e| TrainError::Checkpoint { path: state_path.clone(), reason: e.to_string() })?;
        let progress: Progress = serde_json::from_str(&text).map_err(|e| TrainError::Checkpoint { path: state_path, reason: e.to_string() })?;
        let optimizer_path = checkpoint.join("optimizer.safetensors");
        let files = WeightFiles::open(vec![optimizer_path])?;
        let mut tensors = Vec::new();
        for name in files.names().map(String::from).collect::<Vec<_>>() {
            let values = files.view(&name, |_, v| prefix_tune_model::weights::to_f32(v))?.unwrap_or_default();
            tensors.push((name, values));
        }
        let inner = inner_device(&device);
        let state = OptimizerState::from_host(progress.optimizer_step, &tensors, &inner);
        let mut trainer = Trainer::open(model, prefix, config, out)?;
        trainer.state = state;
        trainer.progress = progress;
        trainer.forget_metrics_after_checkpoint()?;
        Ok(trainer)
    }

    /// Trainable parameters, and all parameters (frozen LM included).
    pub fn param_counts(&self) -> (usize, usize) {
        let model = census(&self.model);
        let prefix = census(&self.prefix);
        match self.config.method {
            Method::Prefix => (prefix.trainable, prefix.trainable + model.frozen + model.trainable),
            Method::Finetune => (model.trainable, model.trainable + model.frozen),
        }
    }

    fn total_steps(&self, train_len: usize) -> usize {
        if let Some(steps) = self.config.max_steps {
            return steps;
        }
        let batches = train_len.div_ceil(self.config.batch_size);
        batches.div_ceil(self.config.grad_accum) * self.config.epochs
    }

    fn dropout(&self) -> Dropout {
        match self.config.lm_dropout {
            Some(p) => Dropout::uniform(p),
            None => self.model.configured_dropout(),
        }
    }

    /// The loss of one batch with gradients tracked (training mode).
    pub fn batch_loss(&self, batch: &Batch, train: bool) -> Result<(Tensor<1>, usize), TrainError> {
        let dropout = if train { self.dropout() } else { Dropout::default() };
        batch_loss(&self.model, &self.prefix, &self.config, batch, train, dropout)
    }

    /// Mean loss over `examples`. No backward pass follows, so it runs on plain (non-autodiff)
    /// views of the model and prefix: no graph is recorded and memory stays flat however large
    /// the dev set (an autodiff graph that is never backpropagated is never freed).
    pub fn evaluate(&self, examples: &[Example]) -> Result<f64, TrainError> {
        let (model, prefix) = (self.model.valid(), self.prefix.valid());
        let mut total = 0.0;
        let mut weight = 0.0;
        for chunk in examples.chunks(self.config.batch_size) {
            let refs: Vec<&Example> = chunk.iter().collect();
            let batch = self.model.batch(&refs, &self.config);
            let (value, count) = batch_loss(&model, &prefix, &self.config, &batch, false, Dropout::default())?;
            let w = match self.config.objective {
                Objective::Paper => chunk.len() as f64,
                Objective::Mean => count as f64,
            };
            total += to_f32s(value)[0] as f64 * w;
            weight += w;
        }
        Ok(total / weight.max(1.0))
    }

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
    fn micro_step(&mut self, batch: &Batch, micro_step: usize, accumulated: &mut Accumulated) -> Result<f64, TrainError> {
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
    fn optimizer_step(&mut self, accumulated: &mut Accumulated, micro_batches: usize, step_loss: f64, total_steps: usize, stats: &mut RunStats) -> Result<(), TrainError> {
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

    fn diverged(&self, what: &str) -> TrainError {
        TrainError::Diverged(format!(
            "{what} at step {} (epoch {}, batch {}): stopping; the last good checkpoint in {} is intact and resumable — lower --lr or set --max-grad-norm",
            self.progress.optimizer_step + 1,
            self.progress.epoch,
            self.progress.batch_in_epoch,
            self.out.join("checkpoint").display()
        ))
    }

    /// The end of a run: the best prefix (when no dev set chose one), the last checkpoint, the chart.
    fn finish(&mut self, dev: &[Example]) -> Result<(), TrainError> {
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

    fn summary(&self, stats: &RunStats) -> Summary {
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

    fn apply(&mut self, lr: f64, accumulated: &mut Accumulated) {
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

    fn evaluate_and_keep_best(&mut self, dev: &[Example]) -> Result<(), TrainError> {
        let dev_loss = self.evaluate(dev)?;
        let mut record = serde_json::json!({ "step": self.progress.optimizer_step, "dev_loss": dev_loss });
        let improved = match &mut self.dev_metric {
            Some((name, metric)) => {
                // Decoding needs no graph either: plain views, as in `evaluate`.
                let value = metric(&self.model.valid(), &self.prefix.valid())?;
                record[format!("dev_{name}")] = value.into();
                let improved = self.progress.best_dev_metric.is_none_or(|best| value > best);
                if improved {
                    self.progress.best_dev_metric = Some(value);
                }
                improved
            }
            None => self.progress.best_dev_loss.is_none_or(|best| dev_loss < best),
        };
        if self.progress.best_dev_loss.is_none_or(|best| dev_loss < best) {
            self.progress.best_dev_loss = Some(dev_loss);
        }
        if improved {
            self.progress.evaluations_without_improvement = 0;
            self.save_best()?;
        } else {
            self.progress.evaluations_without_improvement += 1;
            if self.config.patience.is_some_and(|p| self.progress.evaluations_without_improvement >= p) {
                self.progress.stopped_early = true;
            }
        }
        record["best"] = improved.into();
        record["peak_rss_mib"] = peak_rss_mib().into();
        self.log_line(&format!("step {}: dev loss {dev_loss:.4}{}", self.progress.optimizer_step, if improved { " (best so far)" } else { "" }));
        self.append_metrics(&record)
    }

    /// `best/`: the prefix as an export, or for the fine-tuning baseline the whole model in
    /// Hugging Face layout. Swapped in whole, like the checkpoint.
    fn save_best(&self) -> Result<(), TrainError> {
        publish_dir(&self.out.join("best"), |dir| match self.config.method {
            Method::Prefix => M::save_export(&self.prefix, self.config.base_model.as_deref(), dir),
            Method::Finetune => (self.model.finetune()?.save)(&self.model, dir),
        })
    }

    /// Writes `checkpoint/`: the prefix's full parameterisation, optimizer moments, progress.
    /// The files go to a staging directory that then replaces the old checkpoint, so a kill at
    /// any instant leaves one complete checkpoint (see [`publish_dir`]).
    pub fn checkpoint(&self) -> Result<(), TrainError> {
        publish_dir(&self.out.join("checkpoint"), |dir| self.write_checkpoint(dir))
    }

    fn write_checkpoint(&self, dir: &Path) -> Result<(), TrainError> {
        M::save_state(&self.prefix, &self.config, dir)?;
        if self.config.method == Method::Finetune {
            // What the baseline trains is the model: it goes into the checkpoint.
            (self.model.finetune()?.save)(&self.model, &dir.join("model"))?;
        }
        let moments: Vec<(String, Vec<usize>, Vec<f32>)> = self
            .state
            .to_host()
            .into_iter()
            .map(|(name, values)| {
                let len = values.len();
                (name, vec![len], values)
            })
            .collect();
        save_f32(&dir.join("optimizer.safetensors"), &moments)?;
        let text = serde_json::to_string_pretty(&self.progress).expect("progress serialises");
        write_atomic(&dir.join("trainer_state.json"), text.as_bytes())?;
        Ok(())
    }

    /// On resume: `metrics.jsonl` may hold records of steps after the checkpoint (and a torn
    /// last line) from the run that was killed. Those steps run again, so their old records go.
    fn forget_metrics_after_checkpoint(&self) -> Result<(), TrainError> {
        let path = self.out.join("metrics.jsonl");
        let Ok(text) = std::fs::read_to_string(&path) else { return Ok(()) };
        let kept: String = text
            .lines()
            .filter(|line| {
                serde_json::from_str::<serde_json::Value>(line).ok().and_then(|r| r["step"].as_u64()).is_some_and(|step| step as usize <= self.progress.optimizer_step)
            })
            .map(|line| format!("{line}\n"))
            .collect();
        Ok(write_atomic(&path, kept.as_bytes())?)
    }

    /// `loss.png` from `metrics.jsonl` (the whole run, resumed parts included).
    fn plot(&self) -> Result<(), TrainError> {
        let text = std::fs::read_to_string(self.out.join("metrics.jsonl")).unwrap_or_default();
        let metric_key = self.dev_metric.as_ref().map(|(name, _)| format!("dev_{name}"));
        let (mut train, mut dev, mut metric) = (Vec::new(), Vec::new(), Vec::new());
        for record in text.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()) {
            let step = record["step"].as_f64().unwrap_or(0.0);
            let push = |key: &str, into: &mut Vec<(f64, f64)>| {
                if let Some(value) = record[key].as_f64() {
                    into.push((step, value));
                }
            };
            push("loss", &mut train);
            push("dev_loss", &mut dev);
            if let Some(key) = &metric_key {
                push(key, &mut metric);
            }
        }
        let title = format!("prefix-tune: {}", self.out.display());
        let curves = crate::plot::Curves {
            title: &title,
            train_loss: &train,
            dev_loss: &dev,
            dev_metric: self.dev_metric.as_ref().map(|(name, _)| (name.as_str(), metric.as_slice())),
        };
        let path = self.out.join("loss.png");
        crate::plot::plot_run(&path, &curves).map_err(|reason| TrainError::Checkpoint { path, reason })
    }

    fn append_metrics(&self, record: &serde_json::Value) -> Result<(), TrainError> {
        let path = self.out.join("metrics.jsonl");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| TrainError::Checkpoint { path: path.clone(), reason: e.to_string() })?;
        writeln!(file, "{record}").map_err(|e| TrainError::Checkpoint { path, reason: e.to_string() })
    }

    fn log_line(&self, line: &str) {
        match (&self.bar, self.quiet) {
            (_, true) => {}
            (Some(bar), false) => bar.println(line),
            (None, false) => eprintln!("{line}"),
        }
    }

    /// The opening line, and a progress bar when stderr is a terminal.
    fn start_progress(&mut self, examples: usize, total_steps: usize) {
        let (trainable, total) = self.param_counts();
        self.log_line(&format!(
            "training {trainable} parameters of {total} ({:.4}% of the model); {examples} examples, {total_steps} steps",
            100.0 * trainable as f64 / total as f64,
        ));
        if self.quiet || !std::io::stderr().is_terminal() {
            return;
        }
        let bar = ProgressBar::new(total_steps as u64).with_position(self.progress.optimizer_step as u64);
        if let Ok(style) = ProgressStyle::with_template("{bar:30.cyan/blue} {pos}/{len} steps  {msg}  {elapsed} elapsed, ETA {eta}") {
            bar.set_style(style.progress_chars("=> "));
        }
        self.bar = Some(bar);
    }

    fn report_progress(&self, loss: f64, tokens_per_second: f64, elapsed: f64, total_steps: usize) {
        if self.quiet {
            return;
        }
        let step = self.progress.optimizer_step;
        let message = format!("loss {loss:.4}  {tokens_per_second:.0} tok/s");
        match &self.bar {
            Some(bar) => {
                bar.set_position(step as u64);
                bar.set_message(message);
            }
            // A log file gets whole lines, not carriage returns.
            None if step % self.log_every.max(1) == 0 || step == total_steps => {
                let eta = elapsed / step.max(1) as f64 * total_steps.saturating_sub(step) as f64;
                eprintln!("step {step}/{total_steps}  {message}  ETA {eta:.0}s");
            }
            None => {}
        }
    }
}

/// The loss of `batch` under `model` and `prefix` (autodiff or plain views alike).
fn batch_loss<M: PrefixModel>(model: &M, prefix: &M::Prefix, config: &TrainConfig, batch: &Batch, train: bool, dropout: Dropout) -> Result<(Tensor<1>, usize), TrainError> {
    let prefix = (config.method == Method::Prefix).then_some(prefix);
    model.loss(prefix, config, batch, train, dropout)
}

/// Whether the run in `out` has written a checkpoint (one a kill may have left aside counts).
pub fn has_checkpoint(out: &Path) -> bool {
    is_published(&out.join("checkpoint"), "trainer_state.json")
}

/// The process's peak resident set size in MiB (`VmHWM`; Linux only).
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The device tensors live on once lifted out of autodiff (where optimizer state lives).
fn inner_device(device: &Device) -> Device {
    Tensor::<1>::zeros([1], device).inner().device()
}
