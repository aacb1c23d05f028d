//! The options of `prefix-tune train`, typed: what clap parses and what a run records in its
//! `config.json` to be resumed from.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use clap::Args;
use prefix_tune_data::e2e::TargetStyle;
use prefix_tune_data::Task;
use prefix_tune_model::backend::DeviceArgs;
use prefix_tune_prefix::{Placement, ReparamKind};
use prefix_tune_train::{Method, Objective, OptimizerKind, Schedule};
use serde::{Deserialize, Serialize};

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
    /// Dev data, same format (evaluated every epoch or --eval-every steps, and at the last step;
    /// best prefix kept).
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
    /// Evaluate on --dev every N optimizer steps instead of every epoch.
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
    #[command(flatten)]
    #[serde(flatten)]
    pub device: DeviceArgs,
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


/// `--init`: where a new prefix's values come from.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum InitArg {
    #[default]
    Random,
    Zero,
    /// The activations of these words (P becomes their token count).
    Text(String),
}

/// A value of `--init` that is none of its forms.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not random, zero or text:\"...\"")]
pub struct InitParseError(String);

impl FromStr for InitArg {
    type Err = InitParseError;

    fn from_str(text: &str) -> std::result::Result<Self, InitParseError> {
        match text {
            "random" => Ok(Self::Random),
            "zero" => Ok(Self::Zero),
            _ => match text.strip_prefix("text:") {
                Some(words) => Ok(Self::Text(words.trim_matches('"').to_string())),
                None => Err(InitParseError(text.to_string())),
            },
        }
    }
}

impl TryFrom<String> for InitArg {
    type Error = InitParseError;

    fn try_from(text: String) -> std::result::Result<Self, InitParseError> {
        text.parse()
    }
}

impl fmt::Display for InitArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Random => f.write_str("random"),
            Self::Zero => f.write_str("zero"),
            Self::Text(words) => write!(f, "text:{words}"),
        }
    }
}

impl From<InitArg> for String {
    fn from(init: InitArg) -> String {
        init.to_string()
    }
}

/// A dropout probability that would drop every activation, or is no number.
#[derive(Debug, thiserror::Error)]
pub enum DropoutError {
    #[error("`{0}` is not a number")]
    NotANumber(String),
    #[error("{0} is not a dropout probability in [0, 1)")]
    OutOfRange(f64),
}

/// A dropout probability: in [0, 1), since 1 would drop every activation.
fn dropout_probability(text: &str) -> std::result::Result<f64, DropoutError> {
    let p: f64 = text.parse().map_err(|_| DropoutError::NotANumber(text.to_string()))?;
    if (0.0..1.0).contains(&p) {
        Ok(p)
    } else {
        Err(DropoutError::OutOfRange(p))
    }
}

/// The scores a run can pick its best prefix by: higher is better (TER is not), and none needs
/// an external jar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum DevMetricName {
    Bleu,
    Nist,
    #[value(name = "rouge_l")]
    RougeL,
    Cider,
    Rouge1,
    Rouge2,
}

impl DevMetricName {
    /// The field of the task's scores that holds this metric.
    pub fn field(self) -> &'static str {
        match self {
            Self::Bleu => "bleu",
            Self::Nist => "nist",
            Self::RougeL => "rouge_l",
            Self::Cider => "cider",
            Self::Rouge1 => "rouge1",
            Self::Rouge2 => "rouge2",
        }
    }

    /// The metrics `task`'s scorer reports.
    pub fn of(task: Task) -> &'static [DevMetricName] {
        match task {
            Task::E2e => &[Self::Bleu, Self::Nist, Self::RougeL, Self::Cider],
            Task::Webnlg | Task::Dart | Task::Jsonl => &[Self::Bleu],
            Task::Xsum => &[Self::Rouge1, Self::Rouge2, Self::RougeL],
        }
    }
}

impl fmt::Display for DevMetricName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.field())
    }
}

