//! `prefix-tune score`: teacher-forced NLL of given targets, per example, with or without a
//! prefix — perplexity, comparing prefixes, and checking a model from outside.

use std::path::{Path, PathBuf};

use crate::error::{CliError, Result};
use crate::arch::Architecture;
use crate::models::{self, ModelJob};
use clap::Args;
use prefix_tune_model::backend::DeviceArgs;
use prefix_tune_train::{score, Example, TrainConfig};

#[derive(Args, Debug)]
pub struct ScoreArgs {
    /// A model directory or hub name (GPT-2 or BART).
    #[arg(long)]
    model: String,
    /// A prefix (export, PEFT adapter, training state or run directory); none scores the model.
    #[arg(long)]
    prefix: Option<PathBuf>,
    /// JSONL, one `{"input_ids": [...], "labels": [...]}` per line. GPT-2: labels align with
    /// input_ids (−100 where nothing is predicted; the model shifts). BART: input_ids is the
    /// encoder input, labels the target.
    #[arg(long)]
    data: PathBuf,
    /// One JSON object per example, `{"nll": sum of target-token NLL, "tokens": count}`;
    /// without it, one `nll tokens` line each and the perplexity on stderr.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    device: DeviceArgs,
}

pub fn run(args: ScoreArgs) -> Result<()> {
    let device = args.device.device()?;
    let scores = models::with_model(&args.model, &device, args.device.dtype, &args)?;
    let (mut total, mut count) = (0.0, 0);
    for (nll, tokens) in &scores {
        if args.json {
            println!("{}", serde_json::json!({ "nll": nll, "tokens": tokens }));
        } else {
            println!("{nll} {tokens}");
        }
        total += nll;
        count += tokens;
    }
    if !args.json {
        eprintln!("{} examples, {count} target tokens, perplexity {:.4}", scores.len(), (total / count.max(1) as f64).exp());
    }
    Ok(())
}

impl ModelJob for &ScoreArgs {
    type Output = Vec<(f64, usize)>;

    fn run<M: Architecture>(self, model: M, _dir: &Path) -> Result<Self::Output> {
        let examples = read_checked::<M>(&self.data, model.vocab_size())?;
        let mut config = TrainConfig::new(prefix_tune_prefix::PrefixConfig::new(1));
        config.pad_token_id = model.special_tokens().pad;
        let prefix = self.prefix.as_deref().map(|path| model.load_prefix(path)).transpose()?.map(|loaded| loaded.prefix);
        Ok(score(&model, prefix.as_ref(), &config, &examples)?)
    }
}

/// The examples of `path`, every id inside the vocabulary (the line and field named if not).
fn read_checked<M: Architecture>(path: &Path, vocab_size: usize) -> Result<Vec<Example>> {
    let lines = M::read_scored(path)?;
    for (line, example) in &lines {
        let bad_input = example.input_ids.iter().find(|&&id| id as usize >= vocab_size).map(|&id| ("input_ids", id as i64));
        let bad_label = example.labels.iter().find(|&&l| l >= vocab_size as i64).map(|&l| ("labels", l));
        if let Some((field, id)) = bad_input.or(bad_label) {
            return Err(CliError::usage(format!("{} line {line}: field `{field}`: token id {id} is outside the model's vocabulary of {vocab_size}", path.display())));
        }
    }
    Ok(lines.into_iter().map(|(_, example)| example).collect())
}
