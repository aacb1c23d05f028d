//! `prefix-tune train`

use std::path::{Path, PathBuf};

use clap::Args;
use prefix_tune_model::burn::module::Module;
use prefix_tune_model::hub::resolve_model;
use prefix_tune_model::tokenizer::Gpt2Tokenizer;
use prefix_tune_model::{backend, load_gpt2};
use prefix_tune_prefix::{load_prefix, text_activations, Init, Layout, Placement, PrefixConfig, Reparam};
use prefix_tune_data::{load, task::Split, Gpt2Encoder, LoadConfig, Task};
use prefix_tune_train::examples::{low_data_split, read_jsonl};
use prefix_tune_eval::score_groups;
use prefix_tune_model::generate::GenerateConfig;
use prefix_tune_train::{DevMetric, Example, TrainError};
use prefix_tune_train::{Method, Objective, OptimizerConfig, Schedule, TrainConfig, Trainer};

#[derive(Args, Debug, Clone)]
pub struct TrainArgs {
    /// A TOML or JSON file of options (keys are the flag names); flags given on the command
    /// line win.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// A model directory or hub name.
    #[arg(long)]
    pub model: Option<String>,
    /// Training data: a JSONL of {"input_ids": [...], "labels": [...]}, or with --task a
    /// data file or the official directory of that task.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// e2e, webnlg, dart, xsum or jsonl ({"source", "target"}): read --data/--dev with the
    /// task's loader and linearisation, as ` {source} <|endoftext|> {target} <|endoftext|>`.
    #[arg(long)]
    pub task: Option<String>,
    /// Dev data, same format (evaluated every epoch or --eval-every steps; best prefix kept).
    #[arg(long)]
    pub dev: Option<PathBuf>,
    #[arg(long, default_value_t = 10)]
    pub prefix_length: usize,
    /// mlp or flat.
    #[arg(long, default_value = "mlp")]
    pub reparam: String,
    #[arg(long, default_value_t = 512)]
    pub mlp_hidden: usize,
    /// random, zero, or text:"some words" (P becomes their token count).
    #[arg(long, default_value = "random")]
    pub init: String,
    /// Start from an existing prefix (export, training state or PEFT adapter).
    #[arg(long)]
    pub init_from: Option<PathBuf>,
    #[arg(long, default_value_t = 0.0)]
    pub prefix_dropout: f64,
    /// prefix, infix ([x; INFIX; y]) or embedding-only (virtual input embeddings): the
    /// paper's §7 ablations.
    #[arg(long, default_value = "prefix")]
    pub placement: String,
    /// prefix (train only the prefix) or finetune (train every weight, no prefix).
    #[arg(long, default_value = "prefix")]
    pub method: String,
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
    /// linear or constant.
    #[arg(long, default_value = "linear")]
    pub schedule: String,
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// paper (sum per sequence, mean over batch) or mean (token mean).
    #[arg(long, default_value = "paper")]
    pub loss: String,
    /// adamw or sgd.
    #[arg(long, default_value = "adamw")]
    pub optimizer: String,
    /// Override the LM's dropout while training (0 turns it off).
    #[arg(long)]
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
    #[arg(long)]
    pub eval_metric: Option<String>,
    #[arg(long, default_value_t = 100)]
    pub eval_limit: usize,
    /// Early stopping: evaluations without dev-loss improvement before stopping.
    #[arg(long)]
    pub patience: Option<usize>,
    #[arg(long)]
    pub checkpoint_every: Option<usize>,
    /// Continue the run in this directory from its checkpoint.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    #[arg(long)]
    pub backend: Option<String>,
    /// The run directory: config.json, metrics.jsonl, checkpoint/, best/.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Turns a TOML/JSON options file into `--flag value` arguments placed before the real ones,
/// so the command line overrides the file.
pub fn config_file_args(path: &Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let table: serde_json::Map<String, serde_json::Value> = if path.extension().is_some_and(|e| e == "toml") {
        let value: toml::Value = toml::from_str(&text).map_err(|e| format!("{}: {}", path.display(), e.to_string().lines().next().unwrap_or("invalid TOML")))?;
        serde_json::to_value(value).map_err(|e| e.to_string())?.as_object().cloned().unwrap_or_default()
    } else {
        serde_json::from_str(&text).map_err(|e| format!("{}: not a JSON object of options ({e})", path.display()))?
    };
    let mut args = Vec::new();
    for (key, value) in table {
        let flag = format!("--{}", key.replace('_', "-"));
        match value {
            serde_json::Value::Bool(true) => args.push(flag),
            serde_json::Value::Bool(false) | serde_json::Value::Null => {}
            serde_json::Value::String(s) => args.extend([flag, s]),
            serde_json::Value::Number(n) => args.extend([flag, n.to_string()]),
            other => return Err(format!("{}: option `{key}` has an unsupported value {other}", path.display())),
        }
    }
    Ok(args)
}

/// Training examples of a task: linearised sources and targets, tokenised with the model's
/// tokenizer, loss on the target only.
fn task_examples(task: &str, path: &Path, split: Split, model_dir: &Path, max_len: usize) -> Result<Vec<Example>, String> {
    let task: Task = task.parse().map_err(|e: prefix_tune_data::DataError| e.to_string())?;
    let data = load(task, path, &LoadConfig { split, ..Default::default() }).map_err(|e| e.to_string())?;
    let encoder = Gpt2Encoder::from_file(model_dir).map_err(|e| e.to_string())?;
    data.pairs
        .iter()
        .map(|pair| {
            let example = encoder.training_example(&pair.source, &pair.target, Some(max_len)).map_err(|e| e.to_string())?;
            Ok(Example { input_ids: example.input_ids, labels: example.labels })
        })
        .collect()
}

/// Decodes the dev inputs greedily with the current prefix and scores them with the task's
/// official metric named `metric`.
fn dev_metric(task: &str, dev: &Path, model_dir: &Path, metric: &str, limit: usize) -> Result<DevMetric, String> {
    let task: Task = task.parse().map_err(|e: prefix_tune_data::DataError| e.to_string())?;
    // Scores where higher is better (TER is not), and that need no external jar.
    let known: &[&str] = match task {
        Task::E2e => &["bleu", "nist", "rouge_l", "cider"],
        Task::Webnlg | Task::Dart | Task::Jsonl => &["bleu"],
        Task::Xsum => &["rouge1", "rouge2", "rouge_l"],
    };
    if !known.contains(&metric) {
        return Err(format!("--eval-metric: `{metric}` is not one of {} for {task}", known.join(", ")));
    }
    let mut groups = load(task, dev, &LoadConfig { split: Split::Dev, ..Default::default() }).map_err(|e| e.to_string())?.groups();
    groups.truncate(limit.max(1));
    let encoder = Gpt2Encoder::from_file(model_dir).map_err(|e| e.to_string())?;
    let prompts: Vec<Vec<u32>> = groups.iter().map(|g| encoder.prompt_ids(&g.source)).collect::<Result<_, _>>().map_err(|e| e.to_string())?;
    let mut config = GenerateConfig::new(encoder.eos_id());
    config.max_new_tokens = if task == Task::Xsum { 60 } else { 100 };
    let metric = metric.to_string();
    Ok(Box::new(move |model, prefix| {
        let fail = |e: String| TrainError::Config(format!("--eval-metric: {e}"));
        let mut predictions = Vec::with_capacity(prompts.len());
        for chunk in prompts.chunks(16) {
            predictions.extend(crate::prefixes::predict(model, &encoder, chunk, &[prefix], &config).map_err(fail)?);
        }
        let scores = score_groups(task, &groups, &predictions, None).map_err(|e| fail(e.to_string()))?;
        let value = serde_json::to_value(&scores).expect("scores serialise");
        value[&metric].as_f64().ok_or_else(|| fail(format!("`{metric}` is not a score of {task} (have: {})", value.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>().join(", ")).unwrap_or_default())))
    }))
}

fn required<T: Clone>(value: &Option<T>, flag: &str) -> Result<T, String> {
    value.clone().ok_or_else(|| format!("{flag} is required"))
}

pub fn run(args: TrainArgs) -> Result<(), String> {
    let device = backend::device(args.backend.as_deref()).map_err(|e| e.to_string())?.autodiff();
    let model_name = required(&args.model, "--model")?;
    let dir = resolve_model(&model_name).map_err(|e| e.to_string())?;
    let model = load_gpt2(&dir, &device).map_err(|e| e.to_string())?;
    let data_path = required(&args.data, "--data")?;
    let read = |path: &Path, split: Split| -> Result<Vec<Example>, String> {
        match &args.task {
            None => read_jsonl(path).map_err(|e| e.to_string()),
            Some(task) => task_examples(task, path, split, &dir, model.config.n_positions.saturating_sub(args.prefix_length)),
        }
    };
    let mut train = read(&data_path, Split::Train)?;
    let mut dev = match &args.dev {
        Some(path) => read(path, Split::Dev)?,
        None => Vec::new(),
    };
    if let Some(n) = args.train_size {
        let (low, held_out) = low_data_split(&train, n, args.seed);
        train = low;
        if args.dev.is_none() {
            dev = held_out;
        }
    }

    if let Some(run_dir) = &args.resume {
        let mut trainer = Trainer::resume(model, run_dir).map_err(|e| e.to_string())?;
        let summary = trainer.train(&train, &dev, None).map_err(|e| e.to_string())?;
        println!("{}", serde_json::to_string(&summary).expect("summary serialises"));
        return Ok(());
    }

    let out = required(&args.out, "--out")?;
    let eos = model.config.eos_token_id.unwrap_or(50256);
    let layout = Layout::gpt2(&model.config);
    let reparam = match args.reparam.as_str() {
        "mlp" => Reparam::Mlp { hidden: args.mlp_hidden },
        "flat" => Reparam::Flat,
        other => return Err(format!("--reparam: `{other}` is not mlp or flat")),
    };
    let (init, text_ids) = match args.init.as_str() {
        "random" => (Init::Random, None),
        "zero" => (Init::Zero, None),
        text if text.starts_with("text:") => {
            let text = text.trim_start_matches("text:").trim_matches('"').to_string();
            let tokenizer = Gpt2Tokenizer::from_dir(&dir)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("{}: --init text: needs a tokenizer in the model directory", dir.display()))?;
            let ids = tokenizer.encode(&text).map_err(|e| e.to_string())?;
            (Init::Text { text }, Some(ids))
        }
        other => return Err(format!("--init: `{other}` is not random, zero or text:\"...\"")),
    };
    let length = text_ids.as_ref().map_or(args.prefix_length, Vec::len);
    let placement = match args.placement.as_str() {
        "prefix" => Placement::Prefix,
        "infix" => Placement::Infix,
        "embedding-only" => Placement::EmbeddingOnly,
        other => return Err(format!("--placement: `{other}` is not prefix, infix or embedding-only")),
    };
    if placement == Placement::EmbeddingOnly && text_ids.is_some() {
        return Err("--init text: applies to keys/values; use random or zero with --placement embedding-only".into());
    }
    let prefix_config = PrefixConfig { length, reparam, dropout: args.prefix_dropout, init, placement };
    let prefix = match &args.init_from {
        Some(path) => {
            let loaded = load_prefix(path, Some(layout), &device).map_err(|e| e.to_string())?;
            loaded.prefix.set_require_grad(true)
        }
        None => {
            let fresh = prefix_config.init(layout, &device)?;
            match &text_ids {
                Some(ids) => {
                    let target = text_activations(&model, ids).map_err(|e| e.to_string())?;
                    let (fitted, mse) = fresh.fit_to(target, 500, 1e-3);
                    eprintln!("text init: {} tokens, fit MSE {mse:.2e}", ids.len());
                    fitted.set_require_grad(true)
                }
                None => fresh,
            }
        }
    };

    let mut config = TrainConfig::new(prefix_config);
    config.method = match args.method.as_str() {
        "prefix" => Method::Prefix,
        "finetune" => Method::Finetune,
        other => return Err(format!("--method: `{other}` is not prefix or finetune")),
    };
    config.lr = args.lr;
    config.epochs = args.epochs;
    config.max_steps = args.max_steps;
    config.batch_size = args.batch_size;
    config.grad_accum = args.grad_accum;
    config.warmup_steps = args.warmup_steps;
    config.schedule = match args.schedule.as_str() {
        "linear" => Schedule::Linear,
        "constant" => Schedule::Constant,
        other => return Err(format!("--schedule: `{other}` is not linear or constant")),
    };
    config.optimizer = match args.optimizer.as_str() {
        "adamw" => OptimizerConfig::adamw(args.weight_decay),
        "sgd" => OptimizerConfig::Sgd { weight_decay: args.weight_decay },
        other => return Err(format!("--optimizer: `{other}` is not adamw or sgd")),
    };
    config.objective = match args.loss.as_str() {
        "paper" => Objective::Paper,
        "mean" => Objective::Mean,
        other => return Err(format!("--loss: `{other}` is not paper or mean")),
    };
    config.lm_dropout = args.lm_dropout;
    config.max_grad_norm = args.max_grad_norm;
    config.seed = args.seed;
    config.eval_every = args.eval_every;
    config.patience = args.patience;
    config.checkpoint_every = args.checkpoint_every;
    config.pad_token_id = model.config.pad_token_id.unwrap_or(eos);
    config.separator_token_id = eos;
    config.base_model = Some(model_name);
    device.seed(args.seed);

    let mut trainer = Trainer::new(model, prefix, config, &out).map_err(|e| e.to_string())?;
    if let Some(metric) = &args.eval_metric {
        let task = args.task.as_deref().ok_or("--eval-metric needs --task")?;
        let dev_path = args.dev.as_deref().ok_or("--eval-metric needs --dev")?;
        trainer.dev_metric = Some((metric.clone(), dev_metric(task, dev_path, &dir, metric, args.eval_limit)?));
    }
    let summary = trainer.train(&train, &dev, None).map_err(|e| e.to_string())?;
    println!("{}", serde_json::to_string(&summary).expect("summary serialises"));
    Ok(())
}
