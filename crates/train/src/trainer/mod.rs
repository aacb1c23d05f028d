//! The learner: a run's settings, its state, and the trainer that holds them. The loop, the
//! dev evaluation, checkpoints and reporting live in the files beside this one.

mod checkpoints;
mod evaluation;
mod logging;
mod pending;
mod run;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Bool, Device, Tensor};
use prefix_tune_model::gpt2::{Gpt2, END_OF_TEXT};
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
use pending::{Pending, StepAt};
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
            pad_token_id: END_OF_TEXT,
            separator_token_id: END_OF_TEXT,
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
        let (OptimizerConfig::AdamW { weight_decay, .. } | OptimizerConfig::Sgd { weight_decay }) = self.optimizer;
        if !(weight_decay.is_finite() && weight_decay >= 0.0) {
            return bad("weight_decay", "must be 0 or more, as PyTorch's AdamW and SGD require");
        }
        if self.epochs == 0 && self.max_steps.is_none() {
            return bad("epochs", "must be at least 1 (or give max_steps)");
        }
        Ok(())
    }
}

/// Runs recorded before the separator was: GPT-2's `<|endoftext|>`.
fn default_separator() -> u32 {
    END_OF_TEXT
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
    /// Whether the run goes ahead of its checks (a GPU; see `pending.rs`): a step's loss and
    /// gradient test are read once the next step is queued.
    pub overlap: bool,
    /// The last optimizer step, while its numbers are still on the device.
    pending: Option<pending::Pending>,
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
        let overlap = pending::overlaps(&device);
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
            overlap,
            pending: None,
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

    fn dropout(&self) -> Dropout<'static> {
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
