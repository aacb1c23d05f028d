//! `prefix-tune train`: one path for every architecture. The options are checked, the model
//! loaded (the one place GPT-2 and BART part is [`crate::models::with_model`]), and the run
//! built through [`Architecture`]: its data, its prefix's start, its dev metric.

mod dev_metric;
mod options;

use std::path::{Path, PathBuf};

use clap::Args;
use prefix_tune_data::e2e::TargetStyle;
use prefix_tune_data::Task;
use prefix_tune_model::backend::{self, Backend};
use prefix_tune_model::bf16::Dtype;
use prefix_tune_model::burn::tensor::Device;
use prefix_tune_prefix::{Placement, PrefixConfig, ReparamKind};
use prefix_tune_train::{DevMetric, Example, Method, Objective, OptimizerKind, PrefixModel, Schedule, TrainConfig, Trainer};
use serde::{Deserialize, Serialize};

use crate::arch::Architecture;
use crate::error::{CliError, Result};
use crate::models::{self, ModelJob};
pub use dev_metric::DevMetricName;
pub use options::{config_file_args, trained_references, InitArg};

/// Every option of a run. Recorded in the run's `config.json` (as `command`), so that
/// `--resume DIR` alone rebuilds the run.
#[derive(Args, Debug, Clone, Serialize, Deserialize)]
pub struct TrainArgs {
    /// A TOML or JSON file of options (keys are the flag names); flags given on the command
    /// line win.
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// A model directory or hub name.
    #[arg(long)]
    pub model: Option<String>,
    /// Training data: a JSONL of {"input_ids": [...], "labels": [...]}, or with --task a
    /// data file or the official directory of that task.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Read --data/--dev with the task's loader and linearisation, as
    /// ` {source} <|endoftext|> {target} <|endoftext|>` (jsonl: {"source", "target"} lines).
    #[arg(long, value_enum)]
    pub task: Option<Task>,
    /// Dev data, same format (evaluated every epoch or --eval-every steps; best prefix kept).
    #[arg(long)]
    pub dev: Option<PathBuf>,
    /// E2E targets: punctuation-split like the paper's files (`paper`) or the CSV's own text
    /// (`original`). `eval` of this run scores against the same style by default.
    #[arg(long, value_enum, default_value_t = TargetStyle::PaperSplit)]
    pub references: TargetStyle,
    /// Cut sources (never targets) so every example has at most N tokens, as HF's
    /// max_length; without it an example that does not fit the model is an error.
    #[arg(long)]
    pub max_length: Option<usize>,
    #[arg(long, default_value_t = 10)]
    pub prefix_length: usize,
    /// paper (every set, per-layer blocks as the paper's code) or peft (BART: the decoder set
    /// only, in PEFT's block order and position convention, so `export --format peft` writes
    /// an adapter PEFT loads). GPT-2's layouts are the same.
    #[arg(long, value_enum, default_value_t = PrefixLayout::Paper)]
    #[serde(default)]
    pub prefix_layout: PrefixLayout,
    /// BART: P of the encoder self-attention prefix (default --prefix-length; 0 turns it off).
    #[arg(long)]
    #[serde(default)]
    pub encoder_prefix_length: Option<usize>,
    /// BART: P of the decoder self-attention prefix (default --prefix-length; 0 turns it off).
    #[arg(long)]
    #[serde(default)]
    pub decoder_prefix_length: Option<usize>,
    /// BART: P of the cross-attention prefix (default --prefix-length; 0 turns it off).
    #[arg(long)]
    #[serde(default)]
    pub cross_prefix_length: Option<usize>,
    #[arg(long, value_enum, default_value_t = ReparamKind::Mlp)]
    pub reparam: ReparamKind,
    #[arg(long, default_value_t = 512)]
    pub mlp_hidden: usize,
    /// random, zero, or text:"some words" (P becomes their token count).
    #[arg(long, default_value = "random")]
    pub init: InitArg,
    /// Start from an existing prefix (export, training state or PEFT adapter).
    #[arg(long)]
    pub init_from: Option<PathBuf>,
    #[arg(long, default_value_t = 0.0, value_parser = options::dropout_probability)]
    pub prefix_dropout: f64,
    /// prefix, infix ([x; INFIX; y]) or embedding-only (virtual input embeddings): the
    /// paper's §7 ablations.
    #[arg(long, value_enum, default_value_t = Placement::Prefix)]
    pub placement: Placement,
    /// prefix (train only the prefix) or finetune (train every weight, no prefix).
    #[arg(long, value_enum, default_value_t = Method::Prefix)]
    pub method: Method,
    #[arg(long, default_value_t = 5e-5)]
    pub lr: f64,
    #[arg(long, default_value_t = 5)]
    pub epochs: usize,
    #[arg(long)]
    pub max_steps: Option<usize>,
    #[arg(long, default_value_t = 5)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 1)]
    pub grad_accum: usize,
    #[arg(long, default_value_t = 0)]
    pub warmup_steps: usize,
    #[arg(long, value_enum, default_value_t = Schedule::Linear)]
    pub schedule: Schedule,
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// paper (sum per sequence, mean over batch) or mean (token mean). Default: paper for
    /// GPT-2; mean for BART, as the paper's summarization code.
    #[arg(long, value_enum)]
    pub loss: Option<Objective>,
    #[arg(long, value_enum, default_value_t = OptimizerKind::Adamw)]
    pub optimizer: OptimizerKind,
    /// Override the LM's dropout while training (0 turns it off).
    #[arg(long, value_parser = options::dropout_probability)]
    pub lm_dropout: Option<f64>,
    #[arg(long)]
    pub max_grad_norm: Option<f64>,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Low-data mode: subsample N examples with the seed; 30% of them become the dev split.
    #[arg(long)]
    pub train_size: Option<usize>,
    #[arg(long)]
    pub eval_every: Option<usize>,
    /// Pick the best prefix (and stop early) by a generation metric on --dev instead of the
    /// dev loss (needs --task): e2e bleu|nist|rouge_l|cider, webnlg/dart bleu, xsum
    /// rouge1|rouge2|rouge_l. Dev inputs are decoded greedily, at most --eval-limit of them.
    #[arg(long, value_enum)]
    pub eval_metric: Option<DevMetricName>,
    #[arg(long, default_value_t = 100)]
    pub eval_limit: usize,
    /// Early stopping: evaluations without dev-loss improvement before stopping.
    #[arg(long)]
    pub patience: Option<usize>,
    #[arg(long)]
    pub checkpoint_every: Option<usize>,
    /// Continue the run in this directory from its checkpoint; its options come from the
    /// run's config.json (a flag that contradicts them is refused).
    #[arg(long)]
    #[serde(skip)]
    pub resume: Option<PathBuf>,
    #[arg(long, value_enum)]
    pub backend: Option<Backend>,
    /// bf16: the frozen model's matrix products in bf16 with f32 sums (CPU backend: AMX tiles,
    /// about 3x faster training; else AVX2+FMA, about 1.1x); the prefix, its gradients and optimizer stay f32.
    #[arg(long, value_enum, default_value_t = Dtype::F32)]
    #[serde(default)]
    pub dtype: Dtype,
    /// When stderr is not a terminal, a plain progress line every N steps.
    #[arg(long, default_value_t = 10)]
    pub log_every: usize,
    /// The run directory: config.json, metrics.jsonl, loss.png, checkpoint/, best/.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// How a prefix's matrix maps onto the model's layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PrefixLayout {
    #[default]
    Paper,
    Peft,
}


/// Runs `prefix-tune train`. `given`: the options typed on the command line (or in --config),
/// which a resumed run checks against the ones it was started with.
pub fn run(args: TrainArgs, given: &[String]) -> Result<()> {
    let args = match args.resume.clone() {
        Some(dir) => options::resumed_args(&dir, args, given)?,
        None => options::absolute_paths(args),
    };
    let device = backend::device_for(args.backend)?.autodiff();
    // Before the first random draw (the prefix's initial values): a seeded run is the same
    // run in every process.
    device.seed(args.seed);
    let model_name = args.model.clone().ok_or_else(|| CliError::usage("--model is required"))?;
    let dtype = frozen_dtype(&args)?;
    models::with_model(&model_name, &device, dtype, TrainJob { args: &args, model_name: &model_name, device: &device })
}

/// `--dtype`, refused in bf16 for fine-tuning, whose weights change.
fn frozen_dtype(args: &TrainArgs) -> Result<Dtype> {
    if args.dtype == Dtype::Bf16 && args.method == Method::Finetune {
        return Err(CliError::usage("--dtype bf16: the model must stay frozen; it applies to --method prefix only"));
    }
    Ok(args.dtype)
}

/// One training run, on whichever model `--model` holds.
struct TrainJob<'a> {
    args: &'a TrainArgs,
    model_name: &'a str,
    device: &'a Device,
}

impl ModelJob for TrainJob<'_> {
    type Output = ();

    fn run<M: Architecture>(self, model: M, dir: &Path) -> Result<()> {
        let args = self.args;
        let start = M::prefix_start(args, dir)?;
        // Options are checked before the data is read: a typo fails at once.
        let metric = match args.eval_metric {
            Some(name) => Some((name.to_string(), dev_metric::build(args, dir, &model, name)?)),
            None => None,
        };
        let (train, dev) = model.run_examples(args, dir, start.length)?;
        let fresh = |model: M| -> Result<(M, M::Prefix, TrainConfig)> {
            let reparam = args.reparam.with_hidden(args.mlp_hidden);
            let prefix_config = PrefixConfig { length: start.length, reparam, dropout: args.prefix_dropout, init: start.init.clone(), placement: args.placement };
            let prefix = model.initial_prefix(args, &prefix_config, &start, self.device)?;
            let tokens = model.special_tokens();
            let mut config = train_config(args, prefix_config, tokens.pad, tokens.eos, self.model_name);
            config.objective = args.loss.unwrap_or(M::DEFAULT_OBJECTIVE);
            Ok((model, prefix, config))
        };
        run_trainer(args, model, fresh, metric, &train, &dev)
    }
}

/// The learner's settings from the options; `command` records the options themselves.
fn train_config(args: &TrainArgs, prefix: PrefixConfig, pad: u32, separator: u32, model_name: &str) -> TrainConfig {
    TrainConfig {
        method: args.method,
        lr: args.lr,
        epochs: args.epochs,
        max_steps: args.max_steps,
        batch_size: args.batch_size,
        grad_accum: args.grad_accum,
        warmup_steps: args.warmup_steps,
        schedule: args.schedule,
        optimizer: args.optimizer.with_weight_decay(args.weight_decay),
        objective: args.loss.unwrap_or(Objective::Paper),
        lm_dropout: args.lm_dropout,
        max_grad_norm: args.max_grad_norm,
        seed: args.seed,
        eval_every: args.eval_every,
        patience: args.patience,
        checkpoint_every: args.checkpoint_every,
        pad_token_id: pad,
        separator_token_id: separator,
        base_model: Some(model_name.to_string()),
        command: Some(serde_json::to_value(args).expect("options serialise")),
        ..TrainConfig::new(prefix)
    }
}

/// Resumes the run or starts it (`fresh` builds its prefix and config), trains, prints the
/// summary.
fn run_trainer<M: PrefixModel>(
    args: &TrainArgs,
    model: M,
    fresh: impl FnOnce(M) -> Result<(M, M::Prefix, TrainConfig)>,
    metric: Option<(String, DevMetric<M>)>,
    train: &[Example],
    dev: &[Example],
) -> Result<()> {
    let mut trainer = match &args.resume {
        Some(run_dir) if prefix_tune_train::has_checkpoint(run_dir) => Trainer::resume(model, run_dir)?,
        // Killed before its first checkpoint: the run starts again from its recorded options.
        _ => {
            let out = args.resume.clone().or_else(|| args.out.clone()).ok_or_else(|| CliError::usage("--out is required"))?;
            let (model, prefix, config) = fresh(model)?;
            Trainer::new(model, prefix, config, &out)?
        }
    };
    trainer.log_every = args.log_every;
    trainer.dev_metric = metric;
    let summary = trainer.train(train, dev, None)?;
    println!("{}", serde_json::to_string(&summary).expect("summary serialises"));
    Ok(())
}
