//! `prefix-tune score`: teacher-forced NLL of given targets, per example, with or without a
//! prefix — perplexity, comparing prefixes, and checking a model from outside.

use std::path::{Path, PathBuf};

use crate::error::{CliError, Result};
use crate::models::{self, Model};
use clap::Args;
use prefix_tune_model::backend;
use prefix_tune_prefix::{load_bart_prefix, load_prefix, BartLayout, Layout};
use prefix_tune_train::{read_jsonl_lines, read_seq2seq_jsonl_lines, score, Example, TrainConfig};

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
    /// wgpu, vulkan, metal, cuda or flex (default: the first compiled in).
    #[arg(long)]
    backend: Option<String>,
    /// bf16: the model's matrix products in bf16 with f32 sums (CPU backend: AMX tiles, else
    /// AVX2+FMA; about 1.5-2x faster decoding).
    #[arg(long, value_enum, default_value_t = prefix_tune_model::bf16::Dtype::F32)]
    dtype: prefix_tune_model::bf16::Dtype,
}

pub fn run(args: ScoreArgs) -> Result<()> {
    let device = backend::device(args.backend.as_deref())?;
    let (_, model) = models::load(&args.model, &device, args.dtype)?;
    let mut config = TrainConfig::new(prefix_tune_prefix::PrefixConfig::new(1));
    let scores = match &model {
        Model::Gpt2(model) => {
            let examples = read_checked(&args.data, false, model.config.vocab_size)?;
            config.pad_token_id = model.config.eos_token_id.unwrap_or(50256);
            let prefix = args.prefix.as_deref().map(|p| load_prefix(p, Some(Layout::gpt2(&model.config)), &device)).transpose()?.map(|l| l.prefix);
            score(model, prefix.as_ref(), &config, &examples)?
        }
        Model::Bart(model) => {
            let examples = read_checked(&args.data, true, model.config.vocab_size)?;
            config.pad_token_id = model.config.pad_token_id.unwrap_or(1);
            let sets = args.prefix.as_deref().map(|p| load_bart_prefix(p, BartLayout::of(&model.config), &device)).transpose()?.map(|l| l.sets);
            score(model, sets.as_ref(), &config, &examples)?
        }
    };
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

/// The examples of `path`, every id inside the vocabulary (the line and field named if not).
fn read_checked(path: &Path, seq2seq: bool, vocab_size: usize) -> Result<Vec<Example>> {
    let lines = if seq2seq { read_seq2seq_jsonl_lines(path)? } else { read_jsonl_lines(path)? };
    for (line, example) in &lines {
        let bad_input = example.input_ids.iter().find(|&&id| id as usize >= vocab_size).map(|&id| ("input_ids", id as i64));
        let bad_label = example.labels.iter().find(|&&l| l >= vocab_size as i64).map(|&l| ("labels", l));
        if let Some((field, id)) = bad_input.or(bad_label) {
            return Err(CliError::usage(format!("{} line {line}: field `{field}`: token id {id} is outside the model's vocabulary of {vocab_size}", path.display())));
        }
    }
    Ok(lines.into_iter().map(|(_, example)| example).collect())
}
