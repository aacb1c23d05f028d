//! `prefix-tune train`

use std::path::{Path, PathBuf};

use clap::Args;
use prefix_tune_data::e2e::{E2eConfig, TargetStyle};
use prefix_tune_data::{load, task::Split, Gpt2Encoder, LoadConfig, Task};
use prefix_tune_eval::score_groups;
use prefix_tune_model::burn::module::Module;
use prefix_tune_model::burn::tensor::Device;
use prefix_tune_model::generate::GenerateConfig;
use prefix_tune_model::hub::resolve_model;
use prefix_tune_data::Tokenizer;
use prefix_tune_model::bf16::Dtype;
use prefix_tune_model::{backend, load_gpt2, Gpt2, Gpt2Config};
use prefix_tune_prefix::{load_prefix, text_activations, Init, Layout, Placement, Prefix, PrefixConfig, ReparamKind};
use prefix_tune_train::examples::{low_data_split, read_jsonl_lines};
use prefix_tune_train::{check_examples, DevMetric, Example, Limits, TrainError};
use prefix_tune_train::{Method, Objective, OptimizerKind, PrefixModel, Schedule, TrainConfig, Trainer};
use serde::{Deserialize, Serialize};

use crate::error::{CliError, Result};
use crate::models::{self, Architecture};

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
    pub init: String,
    /// Start from an existing prefix (export, training state or PEFT adapter).
    #[arg(long)]
    pub init_from: Option<PathBuf>,
    #[arg(long, default_value_t = 0.0, value_parser = dropout_probability)]
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
    #[arg(long, value_parser = dropout_probability)]
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
    /// Continue the run in this directory from its checkpoint; its options come from the
    /// run's config.json (a flag that contradicts them is refused).
    #[arg(long)]
    #[serde(skip)]
    pub resume: Option<PathBuf>,
    #[arg(long)]
    pub backend: Option<String>,
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

/// Options a resumed run may change: where it runs and how it reports, not what it computes.
const CHANGEABLE_ON_RESUME: [&str; 4] = ["resume", "config", "backend", "log_every"];

/// Turns a TOML/JSON options file into `--flag value` arguments placed before the real ones,
/// so the command line overrides the file.
pub fn config_file_args(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| CliError::io(path, e))?;
    let bad = |reason: String| CliError::usage(format!("{}: {reason}", path.display()));
    let table: serde_json::Map<String, serde_json::Value> = if path.extension().is_some_and(|e| e == "toml") {
        let value: toml::Value = toml::from_str(&text).map_err(|e| bad(e.to_string().lines().next().unwrap_or("invalid TOML").to_string()))?;
        serde_json::to_value(value).map_err(|e| bad(e.to_string()))?.as_object().cloned().unwrap_or_default()
    } else {
        serde_json::from_str(&text).map_err(|e| bad(format!("not a JSON object of options ({e})")))?
    };
    let mut args = Vec::new();
    for (key, value) in table {
        let flag = format!("--{}", key.replace('_', "-"));
        match value {
            serde_json::Value::Bool(true) => args.push(flag),
            serde_json::Value::Bool(false) | serde_json::Value::Null => {}
            serde_json::Value::String(s) => args.extend([flag, s]),
            serde_json::Value::Number(n) => args.extend([flag, n.to_string()]),
            other => return Err(bad(format!("option `{key}` has an unsupported value {other}"))),
        }
    }
    Ok(args)
}

/// `path` in one spelling: resolved when it exists (so `./x` and `/abs/../x` compare equal on
/// resume), else made absolute.
fn absolute(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).or_else(|_| std::path::absolute(path)).unwrap_or_else(|_| path.to_path_buf())
}

/// Paths made absolute, so the recorded run resumes from any working directory.
fn absolute_paths(mut args: TrainArgs) -> TrainArgs {
    for path in [&mut args.data, &mut args.dev, &mut args.init_from, &mut args.out].into_iter().flatten() {
        *path = absolute(path);
    }
    if let Some(model) = args.model.as_mut().filter(|m| Path::new(m.as_str()).is_dir()) {
        *model = absolute(Path::new(model.as_str())).display().to_string();
    }
    args
}

/// The options of the run in `dir`, as recorded when it started. `cli` holds the flags of this
/// command, `given` the ones the user actually typed: those must agree with the run's.
fn resumed_args(dir: &Path, cli: TrainArgs, given: &[String]) -> Result<TrainArgs> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| CliError::usage(format!("--resume: {}: {e} (not a run directory?)", path.display())))?;
    let config: serde_json::Value = serde_json::from_str(&text).map_err(|e| CliError::usage(format!("{}: {e}", path.display())))?;
    let Some(command) = config.get("command") else {
        // A run from before options were recorded: the command line must give them again.
        return Ok(absolute_paths(TrainArgs { resume: Some(dir.to_path_buf()), ..cli }));
    };
    let mut recorded: TrainArgs = serde_json::from_value(command.clone()).map_err(|e| CliError::usage(format!("{}: `command` is not a set of train options ({e})", path.display())))?;
    let cli = absolute_paths(cli);
    let (ours, theirs) = (serde_json::to_value(&cli).expect("options serialise"), serde_json::to_value(&recorded).expect("options serialise"));
    for id in given.iter().filter(|id| !CHANGEABLE_ON_RESUME.contains(&id.as_str())) {
        if ours[id] != theirs[id] {
            return Err(CliError::usage(format!(
                "--{}: the run in {} was started with {}, not {}; a resumed run keeps its options (start a new run with another --out to change them)",
                id.replace('_', "-"),
                dir.display(),
                theirs[id],
                ours[id]
            )));
        }
    }
    if given.iter().any(|id| id == "backend") {
        recorded.backend = cli.backend;
    }
    if given.iter().any(|id| id == "log_every") {
        recorded.log_every = cli.log_every;
    }
    recorded.resume = Some(dir.to_path_buf());
    Ok(recorded)
}

/// The initial values, and for `text:` init the text's token ids (P becomes their count).
/// A dropout probability: in [0, 1), since 1 would drop every activation.
fn dropout_probability(text: &str) -> std::result::Result<f64, String> {
    let p: f64 = text.parse().map_err(|_| format!("`{text}` is not a number"))?;
    if (0.0..1.0).contains(&p) {
        Ok(p)
    } else {
        Err(format!("{p} is not a dropout probability in [0, 1)"))
    }
}

fn parse_init(init: &str, model_dir: &Path) -> Result<(Init, Option<Vec<u32>>)> {
    match init {
        "random" => Ok((Init::Random, None)),
        "zero" => Ok((Init::Zero, None)),
        text if text.starts_with("text:") => {
            let text = text.trim_start_matches("text:").trim_matches('"').to_string();
            let tokenizer = Tokenizer::from_dir(model_dir)?
                .ok_or_else(|| CliError::usage(format!("{}: --init text: needs a tokenizer in the model directory", model_dir.display())))?;
            let ids = tokenizer.encode(&text)?;
            Ok((Init::Text { text }, Some(ids)))
        }
        other => Err(CliError::usage(format!("--init: `{other}` is not random, zero or text:\"...\""))),
    }
}

/// The examples of one data file and where each came from ("FILE line N"), for messages.
pub fn read_examples(args: &TrainArgs, path: &Path, split: Split, model_dir: &Path) -> Result<(Vec<Example>, Vec<String>)> {
    let Some(task) = args.task else {
        let lines = read_jsonl_lines(path)?;
        let origins = lines.iter().map(|(line, _)| format!("{} line {line}", path.display())).collect();
        return Ok((lines.into_iter().map(|(_, e)| e).collect(), origins));
    };
    let config = LoadConfig { split, e2e: E2eConfig { target_style: args.references } };
    let data = load(task, path, &config)?;
    let encoder = Gpt2Encoder::from_file(model_dir)?;
    let mut examples = Vec::with_capacity(data.pairs.len());
    let mut origins = Vec::with_capacity(data.pairs.len());
    for (i, pair) in data.pairs.iter().enumerate() {
        examples.push(encoder.training_example(&pair.source, &pair.target, None)?);
        origins.push(match pair.meta.line {
            Some(line) => format!("{} line {line}", data.path.display()),
            None => format!("{} example {}", data.path.display(), i + 1),
        });
    }
    Ok((examples, origins))
}

/// Train and dev examples, each checked against the model before the first step (vocabulary,
/// length with the prefix's P positions), over-long sources cut with `--max-length`.
fn load_examples(args: &TrainArgs, model_dir: &Path, model: &Gpt2Config, prefix_length: usize) -> Result<(Vec<Example>, Vec<Example>)> {
    let data = args.data.as_deref().ok_or_else(|| CliError::usage("--data is required"))?;
    let room = model.n_positions.saturating_sub(prefix_length);
    let why = format!("n_positions {} − prefix length {prefix_length}", model.n_positions);
    let max_length = match args.max_length {
        Some(n) if n > room => return Err(CliError::usage(format!("--max-length {n}: at most {room} tokens fit ({why})"))),
        Some(n) => n,
        None => room,
    };
    let limits = Limits { vocab_size: model.vocab_size, max_length, why, truncate: args.max_length.is_some() };
    let (mut train, origins) = read_examples(args, data, Split::Train, model_dir)?;
    let mut cut = check_examples(&mut train, &origins, &limits)?;
    let mut dev = Vec::new();
    if let Some(path) = &args.dev {
        let (examples, origins) = read_examples(args, path, Split::Dev, model_dir)?;
        dev = examples;
        cut += check_examples(&mut dev, &origins, &limits)?;
    }
    if cut > 0 {
        eprintln!("--max-length {max_length}: cut the source of {cut} of {} examples to fit", train.len() + dev.len());
    }
    if let Some(n) = args.train_size {
        let (low, held_out) = low_data_split(&train, n, args.seed);
        train = low;
        if args.dev.is_none() {
            dev = held_out;
        }
    }
    Ok((train, dev))
}

/// Decodes the dev inputs greedily with the current prefix and scores them with the task's
/// official metric named `metric`.
fn dev_metric(args: &TrainArgs, model_dir: &Path, metric: &str) -> Result<DevMetric> {
    let task = args.task.ok_or_else(|| CliError::usage("--eval-metric needs --task"))?;
    let dev = args.dev.as_deref().ok_or_else(|| CliError::usage("--eval-metric needs --dev"))?;
    // Scores where higher is better (TER is not), and that need no external jar.
    let known: &[&str] = match task {
        Task::E2e => &["bleu", "nist", "rouge_l", "cider"],
        Task::Webnlg | Task::Dart | Task::Jsonl => &["bleu"],
        Task::Xsum => &["rouge1", "rouge2", "rouge_l"],
    };
    if !known.contains(&metric) {
        return Err(CliError::usage(format!("--eval-metric: `{metric}` is not one of {} for {task}", known.join(", "))));
    }
    let config = LoadConfig { split: Split::Dev, e2e: E2eConfig { target_style: args.references } };
    let mut groups = load(task, dev, &config)?.groups();
    groups.truncate(args.eval_limit.max(1));
    let encoder = Gpt2Encoder::from_file(model_dir)?;
    let prompts: Vec<Vec<u32>> = groups.iter().map(|g| encoder.prompt_ids(&g.source)).collect::<Result<_, _>>()?;
    let mut generate = GenerateConfig::new(encoder.eos_id());
    generate.max_new_tokens = if task == Task::Xsum { 60 } else { 100 };
    let metric = metric.to_string();
    Ok(Box::new(move |model, prefix| {
        let fail = |e: String| TrainError::Config(format!("--eval-metric: {e}"));
        let mut predictions = Vec::with_capacity(prompts.len());
        for chunk in prompts.chunks(16) {
            predictions.extend(crate::prefixes::predict(model, &encoder, chunk, &[prefix], &generate).map_err(|e| fail(e.to_string()))?);
        }
        let scores = score_groups(task, &groups, &predictions, None).map_err(|e| fail(e.to_string()))?;
        let value = serde_json::to_value(&scores).expect("scores serialise");
        value[&metric].as_f64().ok_or_else(|| fail(format!("`{metric}` is not a score of {task}")))
    }))
}

/// The prefix a new run starts from: fresh (random, zero or fitted to a text's activations)
/// or `--init-from` an existing one.
fn initial_prefix(args: &TrainArgs, prefix_config: &PrefixConfig, text_ids: Option<&[u32]>, model: &Gpt2, device: &Device) -> Result<Prefix> {
    let layout = Layout::gpt2(&model.config);
    if let Some(path) = &args.init_from {
        return Ok(load_prefix(path, Some(layout), device)?.prefix.set_require_grad(true));
    }
    let fresh = prefix_config.init(layout, device)?;
    let Some(ids) = text_ids else { return Ok(fresh) };
    let target = text_activations(model, ids)?;
    let (fitted, mse) = fresh.fit_to(target, 500, 1e-3);
    eprintln!("text init: {} tokens, fit MSE {mse:.2e}", ids.len());
    Ok(fitted.set_require_grad(true))
}

/// The learner's settings from the options; `command` records the options themselves.
pub fn train_config(args: &TrainArgs, prefix: PrefixConfig, pad: u32, separator: u32, model_name: &str) -> TrainConfig {
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

/// Runs `prefix-tune train`. `given`: the options typed on the command line (or in --config),
/// which a resumed run checks against the ones it was started with.
pub fn run(args: TrainArgs, given: &[String]) -> Result<()> {
    let args = match args.resume.clone() {
        Some(dir) => resumed_args(&dir, args, given)?,
        None => absolute_paths(args),
    };
    let device = backend::device(args.backend.as_deref())?.autodiff();
    // Before the first random draw (the prefix's initial values): a seeded run is the same
    // run in every process.
    device.seed(args.seed);
    let model_name = args.model.clone().ok_or_else(|| CliError::usage("--model is required"))?;
    let dir = resolve_model(&model_name)?;
    match models::architecture(&dir)? {
        Architecture::Gpt2 => run_gpt2(&args, &dir, &model_name, &device),
        Architecture::Bart => crate::train_bart::run(&args, &dir, &model_name, &device),
    }
}

fn run_gpt2(args: &TrainArgs, dir: &Path, model_name: &str, device: &Device) -> Result<()> {
    let mut model = load_gpt2(dir, device)?;
    if frozen_in_bf16(args)? {
        model.pack_bf16().map_err(CliError::usage)?;
    }
    let (init, text_ids) = parse_init(&args.init, dir)?;
    if args.placement == Placement::EmbeddingOnly && text_ids.is_some() {
        return Err(CliError::usage("--init text: applies to keys/values; use random or zero with --placement embedding-only"));
    }
    // Options are checked before the data is read: a typo fails at once.
    let metric = match &args.eval_metric {
        Some(name) => Some((name.clone(), dev_metric(args, dir, name)?)),
        None => None,
    };
    let length = text_ids.as_ref().map_or(args.prefix_length, Vec::len);
    let (train, dev) = load_examples(args, dir, &model.config, length)?;
    let fresh = |model: Gpt2| -> Result<(Gpt2, Prefix, TrainConfig)> {
        let reparam = args.reparam.with_hidden(args.mlp_hidden);
        let prefix_config = PrefixConfig { length, reparam, dropout: args.prefix_dropout, init, placement: args.placement };
        let prefix = initial_prefix(args, &prefix_config, text_ids.as_deref(), &model, device)?;
        let config = train_config(args, prefix_config, model.config.pad_token_id.or(model.config.eos_token_id).unwrap_or(50256), model.config.eos_token_id.unwrap_or(50256), model_name);
        Ok((model, prefix, config))
    };
    run_trainer(args, model, fresh, metric, &train, &dev)
}

/// Whether the run asks for `--dtype bf16`; refused for fine-tuning, whose weights change.
pub fn frozen_in_bf16(args: &TrainArgs) -> Result<bool> {
    match (args.dtype, args.method) {
        (Dtype::F32, _) => Ok(false),
        (Dtype::Bf16, Method::Finetune) => Err(CliError::usage("--dtype bf16: the model must stay frozen; it applies to --method prefix only")),
        (Dtype::Bf16, _) => Ok(true),
    }
}

/// Resumes the run or starts it (`fresh` builds its prefix and config), trains, prints the
/// summary: the same for every model.
pub fn run_trainer<M: PrefixModel>(
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

/// The E2E reference style the run behind `prefix` (a run directory, or its `best/` or
/// `checkpoint/`) was trained with, if it records one.
pub fn trained_references(prefix: &str) -> Option<TargetStyle> {
    let path = Path::new(prefix);
    [path.join("config.json"), path.parent()?.join("config.json")].iter().find_map(|config| {
        let value: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(config).ok()?).ok()?;
        serde_json::from_value(value["command"]["references"].clone()).ok()
    })
}
