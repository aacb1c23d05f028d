//! GPT-2 for the commands: prompts continued after ` {source} <|endoftext|>`, one prefix per
//! row (any placement), text init, and the fine-tuning baseline.

use std::path::Path;

use prefix_tune_data::e2e::E2eConfig;
use prefix_tune_data::{load, task::Split, Gpt2Encoder, LoadConfig, Task, Tokenizer};
use prefix_tune_model::burn::module::Module;
use prefix_tune_model::burn::tensor::Device;
use prefix_tune_model::generate::GenerateConfig;
use prefix_tune_model::Gpt2;
use prefix_tune_prefix::{text_activations, Init, Placement, Prefix, PrefixConfig, PrefixedModel};
use prefix_tune_train::examples::{low_data_split, read_jsonl_lines};
use prefix_tune_train::{check_examples, Example, Limits, Objective};

use super::{Architecture, PrefixStart, TaskText};
use crate::error::{CliError, Result};
use crate::train::args::{InitArg, TrainArgs};

impl TaskText for Gpt2Encoder {
    fn prompt(&self, source: &str) -> Result<Vec<u32>> {
        Ok(self.prompt_ids(source)?)
    }

    fn answer(&self, ids: &[u32]) -> Result<String> {
        let ids: Vec<u32> = ids.iter().copied().filter(|&id| id != self.eos_id()).collect();
        Ok(self.decode(&ids)?.trim().replace('\n', " "))
    }
}

impl Architecture for Gpt2 {
    type Text = Gpt2Encoder;
    const DEFAULT_OBJECTIVE: Objective = Objective::Paper;

    fn task_text(&self, dir: &Path, _max_source: Option<usize>) -> Result<Gpt2Encoder> {
        Ok(Gpt2Encoder::from_file(dir)?)
    }

    fn prompt_ids(tokenizer: &Tokenizer, text: &str) -> Result<Vec<u32>> {
        Ok(tokenizer.encode(text)?)
    }

    fn decoding_defaults(&self, _dir: &Path) -> Result<GenerateConfig> {
        let tokens = self.special_tokens();
        Ok(GenerateConfig { pad_token_id: tokens.pad, ..GenerateConfig::new(tokens.eos) })
    }

    fn paper_decoding(&self, dir: &Path, text: &Gpt2Encoder, task: Task) -> Result<GenerateConfig> {
        let (num_beams, length_penalty, max_new_tokens) = match task {
            Task::Xsum => (6, 0.8, 60),
            _ => (5, 1.0, 100),
        };
        Ok(GenerateConfig { num_beams, length_penalty, max_new_tokens, ..self.dev_decoding(dir, text, task)? })
    }

    fn dev_decoding(&self, _dir: &Path, text: &Gpt2Encoder, task: Task) -> Result<GenerateConfig> {
        // The separator the prompts end with is the tokenizer's <|endoftext|>.
        let eos = text.eos_id();
        let max_new_tokens = if task == Task::Xsum { 60 } else { 100 };
        Ok(GenerateConfig { pad_token_id: eos, max_new_tokens, ..GenerateConfig::new(eos) })
    }

    fn fit_new_tokens(&self, longest_prompt: usize, prefixes: &[&Prefix], config: &GenerateConfig) -> Result<GenerateConfig> {
        let longest = longest_prompt + prefixes.iter().map(|p| p.length()).max().unwrap_or(0);
        let room = self.config.n_positions.saturating_sub(longest);
        if room == 0 {
            return Err(CliError::usage(format!("an input of {longest} tokens (prefix included) leaves no room to generate within n_positions = {}", self.config.n_positions)));
        }
        Ok(GenerateConfig { max_new_tokens: config.max_new_tokens.min(room), ..config.clone() })
    }

    fn prefix_start(args: &TrainArgs, dir: &Path) -> Result<PrefixStart> {
        let (init, text_ids) = match &args.init {
            InitArg::Random => (Init::Random, None),
            InitArg::Zero => (Init::Zero, None),
            InitArg::Text(text) => {
                let tokenizer = Tokenizer::from_dir(dir)?.ok_or_else(|| CliError::usage(format!("{}: --init text: needs a tokenizer in the model directory", dir.display())))?;
                (Init::Text { text: text.clone() }, Some(tokenizer.encode(text)?))
            }
        };
        if args.placement == Placement::EmbeddingOnly && text_ids.is_some() {
            return Err(CliError::usage("--init text: applies to keys/values; use random or zero with --placement embedding-only"));
        }
        let length = text_ids.as_ref().map_or(args.prefix_length, Vec::len);
        Ok(PrefixStart { init, text_ids, length })
    }

    /// Fresh (random, zero or fitted to a text's activations) or `--init-from` an existing one.
    fn initial_prefix(&self, args: &TrainArgs, config: &PrefixConfig, start: &PrefixStart, device: &Device) -> Result<Prefix> {
        if let Some(path) = &args.init_from {
            return Ok(self.load_prefix(path)?.prefix.set_require_grad(true));
        }
        let fresh = config.init(prefix_tune_prefix::Layout::gpt2(&self.config), device)?;
        let Some(ids) = &start.text_ids else { return Ok(fresh) };
        let target = text_activations(self, ids)?;
        let (fitted, mse) = fresh.fit_to(target, 500, 1e-3);
        eprintln!("text init: {} tokens, fit MSE {mse:.2e}", ids.len());
        Ok(fitted.set_require_grad(true))
    }

    /// Each checked for the vocabulary and for the length with the prefix's P positions,
    /// over-long sources cut with `--max-length`.
    fn run_examples(&self, args: &TrainArgs, dir: &Path, prefix_length: usize) -> Result<(Vec<Example>, Vec<Example>)> {
        let data = args.data.as_deref().ok_or_else(|| CliError::usage("--data is required"))?;
        let limits = limits(args, self, prefix_length)?;
        let (mut train, origins) = read_examples(args, data, Split::Train, dir)?;
        let mut cut = check_examples(&mut train, &origins, &limits)?;
        let mut dev = Vec::new();
        if let Some(path) = &args.dev {
            let (examples, origins) = read_examples(args, path, Split::Dev, dir)?;
            dev = examples;
            cut += check_examples(&mut dev, &origins, &limits)?;
        }
        if cut > 0 {
            eprintln!("--max-length {}: cut the source of {cut} of {} examples to fit", limits.max_length, train.len() + dev.len());
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

    fn read_scored(path: &Path) -> Result<Vec<(usize, Example)>> {
        Ok(read_jsonl_lines(path)?)
    }
}

/// What an example may hold: the vocabulary, and `--max-length` within the positions left
/// after the prefix.
fn limits(args: &TrainArgs, model: &Gpt2, prefix_length: usize) -> Result<Limits> {
    let positions = model.config.n_positions;
    let room = positions.saturating_sub(prefix_length);
    let why = format!("n_positions {positions} − prefix length {prefix_length}");
    let max_length = match args.max_length {
        Some(n) if n > room => return Err(CliError::usage(format!("--max-length {n}: at most {room} tokens fit ({why})"))),
        Some(n) => n,
        None => room,
    };
    Ok(Limits { vocab_size: model.config.vocab_size, max_length, why, truncate: args.max_length.is_some() })
}

/// The examples of one data file and where each came from ("FILE line N"), for messages.
fn read_examples(args: &TrainArgs, path: &Path, split: Split, model_dir: &Path) -> Result<(Vec<Example>, Vec<String>)> {
    let Some(task) = args.task else {
        let lines = read_jsonl_lines(path)?;
        let origins = lines.iter().map(|(line, _)| format!("{} line {line}", path.display())).collect();
        return Ok((lines.into_iter().map(|(_, e)| e).collect(), origins));
    };
    let data = load(task, path, &LoadConfig { split, e2e: E2eConfig { target_style: args.references } })?;
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
