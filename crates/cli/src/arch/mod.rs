//! What the commands need of each architecture beyond [`PrefixModel`]: how its text becomes
//! prompts and its answers become text, its decoding defaults, and how a training run reads its
//! data and starts its prefix. GPT-2 ([`gpt2`]) and BART ([`bart`]) implement [`Architecture`];
//! the commands are written once over it, and neither implementation knows the other.

mod bart;
mod gpt2;

use std::path::Path;

use prefix_tune_data::Task;
use prefix_tune_model::burn::tensor::Device;
use prefix_tune_model::generate::GenerateConfig;
use prefix_tune_prefix::{Init, PrefixConfig};
use prefix_tune_train::{Example, Objective, PrefixModel};

use crate::error::Result;
use crate::train::args::TrainArgs;

/// A model's text: task sources as prompts, generated ids as one line of text.
pub trait TaskText: 'static {
    /// The prompt for a data set's source (GPT-2: ` {source} <|endoftext|>`; BART: the
    /// document as `<s> … </s>`, cut to the encoder's positions).
    fn prompt(&self, source: &str) -> Result<Vec<u32>>;

    /// The text of an answer, special tokens dropped, on one line.
    fn answer(&self, ids: &[u32]) -> Result<String>;
}

/// How a new run's prefix starts: its initial values and its length P (a text init's token
/// count, else `--prefix-length`).
pub struct PrefixStart {
    pub init: Init,
    pub text_ids: Option<Vec<u32>>,
    pub length: usize,
}

/// A frozen model the commands run: GPT-2 or BART.
pub trait Architecture: PrefixModel {
    type Text: TaskText;

    /// What the training loss averages over unless `--loss` says otherwise.
    const DEFAULT_OBJECTIVE: Objective;

    /// The reader of task text for the model in `dir`; `max_source` cuts a BART document
    /// (`--max-length`; GPT-2 prompts are never cut).
    fn task_text(&self, dir: &Path, max_source: Option<usize>) -> Result<Self::Text>;

    /// A `--prompt` as token ids (BART: with its `<s> … </s>`).
    fn prompt_ids(tokenizer: &prefix_tune_data::Tokenizer, text: &str) -> Result<Vec<u32>>;

    /// `generate`'s defaults before its flags: HF's, or a BART checkpoint's.
    fn decoding_defaults(&self, dir: &Path) -> Result<GenerateConfig>;

    /// The paper's decoding for `task` (beam 5 for table-to-text; beam 6, length penalty 0.8
    /// for XSUM), before `eval`'s flags.
    fn paper_decoding(&self, dir: &Path, text: &Self::Text, task: Task) -> Result<GenerateConfig>;

    /// Greedy decoding of dev inputs, for a `--eval-metric`.
    fn dev_decoding(&self, dir: &Path, text: &Self::Text, task: Task) -> Result<GenerateConfig>;

    /// `config` with its new tokens capped to what fits the model after the prompts and
    /// prefixes (GPT-2's positions hold both; BART's encoder and decoder are apart).
    fn fit_new_tokens(&self, _longest_prompt: usize, _prefixes: &[&Self::Prefix], config: &GenerateConfig) -> Result<GenerateConfig> {
        Ok(config.clone())
    }

    /// Refuses what this architecture cannot train, before anything is read; how the prefix
    /// starts.
    fn prefix_start(args: &TrainArgs, dir: &Path) -> Result<PrefixStart>;

    /// A new run's prefix: fresh from `config` and `start`, or `--init-from` a file.
    fn initial_prefix(&self, args: &TrainArgs, config: &PrefixConfig, start: &PrefixStart, device: &Device) -> Result<Self::Prefix>;

    /// The train (and dev) examples of a run, checked against the model before the first step.
    fn run_examples(&self, args: &TrainArgs, dir: &Path, prefix_length: usize) -> Result<(Vec<Example>, Vec<Example>)>;

    /// Refuses a dev metric this architecture cannot score for `task`.
    fn check_dev_task(_task: Task) -> Result<()> {
        Ok(())
    }

    /// Teacher-forced scoring's examples of a JSONL file, with their line numbers.
    fn read_scored(path: &Path) -> Result<Vec<(usize, Example)>>;
}

/// Answers to `prompts` (one batch) with `prefixes` (none, one, or one per prompt), as text.
pub fn predict<M: Architecture>(model: &M, text: &M::Text, prompts: &[Vec<u32>], prefixes: &[&M::Prefix], config: &GenerateConfig) -> Result<Vec<String>> {
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let config = model.fit_new_tokens(longest, prefixes, config)?;
    model.generate(prompts, prefixes, &config)?.iter().map(|output| text.answer(&output.ids)).collect()
}
