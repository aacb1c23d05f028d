//! The seam between the commands and the models: what training, generation, evaluation,
//! scoring, export and serving ask of a frozen model and of the prefix it takes. GPT-2 takes
//! one [`Prefix`]; BART three sets ([`BartPrefixSets`]). Code above this trait is written once
//! for both; the one `match` on the architecture is where a model is loaded.

use std::path::Path;

use burn::module::Module;
use burn::tensor::Device;
use prefix_tune_model::bart::generate_bart;
use prefix_tune_model::bf16::Dtype;
use prefix_tune_model::generate::{GenerateConfig, Generated};
use prefix_tune_model::{Bart, Gpt2, ModelError};

use crate::{
    generate_prefixed, load_bart_prefix, load_prefix, save_bart_export, save_bart_peft, save_export, save_peft, BartLayout, BartPrefixSets, Layout, Loaded, Prefix,
    PrefixError,
};

/// The files a prefix is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PrefixFormat {
    /// `prefix_config.json` + `prefix.safetensors`.
    Native,
    /// A PEFT prefix-tuning adapter: `adapter_config.json` + `adapter_model.safetensors`.
    Peft,
}

/// The ids a model ends and pads sequences with, from its `config.json` (named defaults where
/// the file has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialTokens {
    pub eos: u32,
    pub pad: u32,
}

/// A frozen language model and the prefix it takes.
pub trait PrefixedModel: Module + Sized {
    /// The trainable part: a [`Prefix`], or BART's [`BartPrefixSets`].
    type Prefix: Module + Sized;

    /// The name written in prefix files.
    const ARCHITECTURE: &'static str;

    /// An encoder-decoder reads its prompt as a document (`<s> … </s>`), not as text to continue.
    const ENCODER_DECODER: bool;

    /// Whether one batch may hold a prefix per row.
    const MIXED_PREFIXES: bool;

    fn device(&self) -> Device;

    fn vocab_size(&self) -> usize;

    fn special_tokens(&self) -> SpecialTokens;

    /// The longest sequence the model reads, prefix included where it takes positions.
    fn max_positions(&self) -> usize;

    /// `--dtype bf16` or `f16`: the frozen products in half precision with f32 sums from now on.
    fn use_half(&mut self, dtype: Dtype) -> Result<(), ModelError>;

    /// Reads a prefix for this model from any file layout we read (export, training state,
    /// PEFT adapter, run directory), checked against the model's shapes.
    fn load_prefix(&self, path: &Path) -> Result<Loaded<Self::Prefix>, PrefixError>;

    /// Writes `prefix`'s activations (an MLP is dropped) in `format`.
    fn save_prefix(prefix: &Self::Prefix, format: PrefixFormat, base_model: Option<&str>, dir: &Path) -> Result<(), PrefixError>;

    /// The virtual tokens of `prefix`, over every set.
    fn prefix_tokens(prefix: &Self::Prefix) -> usize;

    /// Continues (GPT-2) or answers (BART) `prompts`, with no prefix, one for all, or one per
    /// prompt.
    fn generate(&self, prompts: &[Vec<u32>], prefixes: &[&Self::Prefix], config: &GenerateConfig) -> Result<Vec<Generated>, PrefixError>;
}

impl PrefixedModel for Gpt2 {
    type Prefix = Prefix;
    const ARCHITECTURE: &'static str = "gpt2";
    const ENCODER_DECODER: bool = false;
    const MIXED_PREFIXES: bool = true;

    fn device(&self) -> Device {
        self.wte.val().device()
    }

    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }

    fn special_tokens(&self) -> SpecialTokens {
        SpecialTokens { eos: self.config.eos(), pad: self.config.pad() }
    }

    fn max_positions(&self) -> usize {
        self.config.n_positions
    }

    fn use_half(&mut self, dtype: Dtype) -> Result<(), ModelError> {
        Gpt2::use_half(self, dtype)
    }

    fn load_prefix(&self, path: &Path) -> Result<Loaded<Prefix>, PrefixError> {
        load_prefix(path, Some(Layout::gpt2(&self.config)), &PrefixedModel::device(self))
    }

    fn save_prefix(prefix: &Prefix, format: PrefixFormat, base_model: Option<&str>, dir: &Path) -> Result<(), PrefixError> {
        let prefix = prefix.materialize();
        match format {
            PrefixFormat::Native => save_export(&prefix, base_model, Self::ARCHITECTURE, dir),
            PrefixFormat::Peft => save_peft(&prefix, base_model, dir),
        }
    }

    fn prefix_tokens(prefix: &Prefix) -> usize {
        prefix.length()
    }

    fn generate(&self, prompts: &[Vec<u32>], prefixes: &[&Prefix], config: &GenerateConfig) -> Result<Vec<Generated>, PrefixError> {
        generate_prefixed(self, prompts, prefixes, config)
    }
}

impl PrefixedModel for Bart {
    type Prefix = BartPrefixSets;
    const ARCHITECTURE: &'static str = "bart";
    const ENCODER_DECODER: bool = true;
    const MIXED_PREFIXES: bool = false;

    fn device(&self) -> Device {
        Bart::device(self)
    }

    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }

    fn special_tokens(&self) -> SpecialTokens {
        SpecialTokens { eos: self.config.eos(), pad: self.config.pad() }
    }

    fn max_positions(&self) -> usize {
        self.config.max_position_embeddings
    }

    fn use_half(&mut self, dtype: Dtype) -> Result<(), ModelError> {
        Bart::use_half(self, dtype)
    }

    fn load_prefix(&self, path: &Path) -> Result<Loaded<BartPrefixSets>, PrefixError> {
        load_bart_prefix(path, BartLayout::of(&self.config), &Bart::device(self))
    }

    fn save_prefix(sets: &BartPrefixSets, format: PrefixFormat, base_model: Option<&str>, dir: &Path) -> Result<(), PrefixError> {
        let sets = sets.materialize();
        match format {
            PrefixFormat::Native => save_bart_export(&sets, base_model, dir),
            PrefixFormat::Peft => save_bart_peft(&sets, base_model, dir),
        }
    }

    fn prefix_tokens(sets: &BartPrefixSets) -> usize {
        sets.lengths().iter().sum()
    }

    /// One set of prefixes for the whole batch: each row's encoder, decoder and cross prefix
    /// of its own is not built yet.
    fn generate(&self, prompts: &[Vec<u32>], prefixes: &[&BartPrefixSets], config: &GenerateConfig) -> Result<Vec<Generated>, PrefixError> {
        let (past, offset) = match prefixes {
            [] => (Default::default(), 0),
            [sets] => (sets.past(prompts.len(), false), sets.decoder_offset()),
            _ => return Err(PrefixError::Input("BART takes one prefix for the whole batch (mixed-prefix batches are GPT-2 only)".into())),
        };
        Ok(generate_bart(self, prompts, &past, offset, config)?)
    }
}
