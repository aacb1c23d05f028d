//! The prefix of Prefix-Tuning (Li & Liang, 2021): per-layer keys and values that every real
//! token attends to, flat or MLP-reparameterised, and the files it lives in.

mod bart;
mod bart_files;
mod files;
mod infix;
mod layout;
mod prefix;
mod text_init;
mod decode;
mod seam;

pub use bart::{BartLayout, BartPrefixSets, Stack};
pub use bart_files::{load_bart_prefix, save_bart_export, save_bart_peft, LoadedBartPrefix};
pub use files::{load_prefix, load_state_dir, save_export, save_peft, save_state, Loaded, LoadedPrefix, PrefixFileConfig};
pub use seam::{PrefixFormat, PrefixedModel, SpecialTokens};
pub use layout::{stack_pasts, BlockOrder, Layout};
pub use decode::{generate_prefixed, prefixed_past};
pub use infix::{infix_forward, InfixDecoder};
pub use prefix::{Init, Placement, Prefix, PrefixConfig, PrefixMlp, Reparam, ReparamKind};
pub use text_init::text_activations;

use std::path::PathBuf;

use prefix_tune_model::ModelError;

/// One-line errors naming the file and the field at fault.
#[derive(Debug, thiserror::Error)]
pub enum PrefixError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("{path}: field `{field}`: {reason}")]
    File { path: PathBuf, field: String, reason: String },
    #[error("{0}")]
    Input(String),
    #[error("prefix length P must be at least 1")]
    EmptyPrefix,
    #[error("the prefix MLP's hidden width (mlp_hidden) must be at least 1")]
    EmptyMlp,
    /// One of BART's three sets, named.
    #[error("{set} prefix: {source}")]
    Set { set: &'static str, source: Box<PrefixError> },
}
