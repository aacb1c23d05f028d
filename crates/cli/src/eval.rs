//! `prefix-tune eval`: decode a split with the paper's settings, write the predictions and
//! the official scores.

use std::path::{Path, PathBuf};

use crate::error::{CliError, Result};
use clap::Args;
use prefix_tune_data::e2e::{E2eConfig, TargetStyle};
use prefix_tune_data::{load, task::Split, LoadConfig, Task};
use prefix_tune_eval::score_groups;
use prefix_tune_model::backend::DeviceArgs;

use crate::arch::{predict, Architecture, TaskText};
use crate::models::{self, ModelJob};

#[derive(Args, Debug)]
pub struct EvalArgs {
    #[arg(long)]
    model: String,
    /// The prefix to evaluate (export, PEFT adapter, training state or run directory).
    #[arg(long)]
    prefix: Option<String>,
    #[arg(long, value_enum)]
    task: Task,
    /// A data file or the official directory.
    #[arg(long)]
    data: PathBuf,
    /// Split to read from a directory.
    #[arg(long, value_enum, default_value_t = Split::Test)]
    split: Split,
    /// E2E references: `original` (the CSV's text, the official scorer's) or `paper`
    /// (punctuation-split). Default: the style the run behind --prefix was trained with, else paper.
    #[arg(long, value_enum)]
    references: Option<TargetStyle>,
    /// Beams (paper: 5 for table-to-text, 6 for XSUM).
    #[arg(long)]
    num_beams: Option<usize>,
    #[arg(long)]
    length_penalty: Option<f32>,
    #[arg(long)]
    max_new_tokens: Option<usize>,
    #[arg(long, default_value_t = 8, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    batch_size: usize,
    /// Evaluate only the first N distinct inputs.
    #[arg(long, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    limit: Option<usize>,
    #[arg(long)]
    meteor_jar: Option<PathBuf>,
    #[command(flatten)]
    device: DeviceArgs,
    /// Writes predictions.txt and scores.json here.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: EvalArgs) -> Result<()> {
    let task = args.task;
    let references = args.references.or_else(|| args.prefix.as_deref().and_then(crate::train::trained_references)).unwrap_or_default();
    let device = args.device.device()?;
    let data = load(task, &args.data, &LoadConfig { split: args.split, e2e: E2eConfig { target_style: references } })?;
    let mut groups = data.groups();
    if let Some(limit) = args.limit {
        groups.truncate(limit);
    }
    let sources: Vec<&str> = groups.iter().map(|g| g.source.as_str()).collect();
    let predictions = crate::out_of_memory::guard(Some(args.batch_size), "lower --batch-size", || {
        models::with_model(&args.model, &device, args.device.dtype, Decode { args: &args, sources: &sources })
    })?;
    std::fs::create_dir_all(&args.out).map_err(|e| CliError::io(&args.out, e))?;
    let predictions_path = args.out.join("predictions.txt");
    std::fs::write(&predictions_path, predictions.join("\n") + "\n").map_err(|e| CliError::io(&predictions_path, e))?;
    let mut scores = score_groups(task, &groups, &predictions, args.meteor_jar.as_deref())?;
    if task == Task::E2e {
        scores.references = Some(references);
    }
    let scores_path = args.out.join("scores.json");
    std::fs::write(&scores_path, serde_json::to_string_pretty(&scores).expect("scores serialise")).map_err(|e| CliError::io(&scores_path, e))?;
    crate::metrics::print_scores(&scores, true);
    Ok(())
}

/// Runs `decode` over `sources` in batches of `--batch-size`, with a progress bar on a terminal.
fn in_batches(args: &EvalArgs, sources: &[&str], mut decode: impl FnMut(&[&str]) -> Result<Vec<String>>) -> Result<Vec<String>> {
    let mut predictions = Vec::with_capacity(sources.len());
    // Drawn on a terminal only; a log file gets no carriage-return noise.
    let bar = indicatif::ProgressBar::new(sources.len() as u64);
    for chunk in sources.chunks(args.batch_size) {
        predictions.extend(decode(chunk)?);
        bar.set_position(predictions.len() as u64);
    }
    bar.finish_and_clear();
    Ok(predictions)
}

/// The predictions for `sources` with `--prefix` (or none), decoded as the paper did.
struct Decode<'a> {
    args: &'a EvalArgs,
    sources: &'a [&'a str],
}

impl ModelJob for Decode<'_> {
    type Output = Vec<String>;

    fn run<M: Architecture>(self, model: M, dir: &Path) -> Result<Vec<String>> {
        let args = self.args;
        let text = model.task_text(dir, None)?;
        let mut config = model.paper_decoding(dir, &text, args.task)?;
        config.num_beams = args.num_beams.unwrap_or(config.num_beams);
        config.length_penalty = args.length_penalty.unwrap_or(config.length_penalty);
        config.max_new_tokens = args.max_new_tokens.unwrap_or(config.max_new_tokens);
        let prefix = args.prefix.as_deref().map(|path| model.load_prefix(Path::new(path))).transpose()?.map(|loaded| loaded.prefix);
        let prefixes: Vec<&M::Prefix> = prefix.iter().collect();
        in_batches(args, self.sources, |chunk| {
            let prompts: Vec<Vec<u32>> = chunk.iter().map(|s| text.prompt(s)).collect::<Result<_>>()?;
            predict(&model, &text, &prompts, &prefixes, &config)
        })
    }
}
