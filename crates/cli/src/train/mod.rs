//! `prefix-tune train`: one path for every architecture. The options are checked, the model
//! loaded (the one place GPT-2 and BART part is [`crate::models::with_model`]), and the run
//! built through [`Architecture`]: its data, its prefix's start, its dev metric.

pub mod args;
mod dev_metric;
mod options;

use std::path::Path;

use prefix_tune_model::bf16::Dtype;
use prefix_tune_model::burn::tensor::Device;
use prefix_tune_prefix::PrefixConfig;
use prefix_tune_train::{DevMetric, Example, Method, Objective, PrefixModel, TrainConfig, Trainer};

use crate::arch::Architecture;
use crate::error::{CliError, Result};
use crate::models::{self, ModelJob};
pub use args::TrainArgs;
pub use options::trained_references;

/// Runs `prefix-tune train`. `given`: the options typed on the command line (or in --config),
/// which a resumed run checks against the ones it was started with.
pub fn run(args: TrainArgs, given: &[String]) -> Result<()> {
    let (args, given) = options::with_config_file(args, given)?;
    let given = given.as_slice();
    let args = match args.resume.clone() {
        Some(dir) => options::resumed_args(&dir, args, given)?,
        None => options::absolute_paths(args),
    };
    let device = args.device.device()?.autodiff();
    // Before the first random draw (the prefix's initial values): a seeded run is the same
    // run in every process.
    device.seed(args.seed);
    let model_name = args.model.clone().ok_or_else(|| CliError::usage("--model is required"))?;
    let dtype = frozen_dtype(&args)?;
    let advice = match &args.out {
        Some(out) => format!("lower --batch-size; a run that saved a checkpoint continues with --resume {}", out.display()),
        None => "lower --batch-size".to_string(),
    };
    crate::out_of_memory::guard(Some(args.batch_size), &advice, || {
        models::with_model(&model_name, &device, dtype, TrainJob { args: &args, model_name: &model_name, device: &device })
    })
}

/// `--dtype`, refused in half precision for fine-tuning, whose weights change.
fn frozen_dtype(args: &TrainArgs) -> Result<Dtype> {
    if args.device.dtype != Dtype::F32 && args.method == Method::Finetune {
        return Err(CliError::usage(format!("--dtype {}: the model must stay frozen; it applies to --method prefix only", args.device.dtype.name())));
    }
    Ok(args.device.dtype)
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
