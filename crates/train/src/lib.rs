//! The learner: trains a prefix on a frozen language model (or, as the baseline, the whole
//! model), resumes bit-exactly, and never writes the frozen model to disk.

pub mod checkpoint;
pub mod examples;
pub mod loss;
pub mod model;
pub mod optim;
pub mod plot;
pub mod schedule;
mod trainer;

pub use examples::{check_examples, read_jsonl, read_jsonl_lines, read_seq2seq_jsonl_lines, Batch, Example, Limits};
pub use loss::{head_loss, loss, seq2seq_head_loss, Objective};
pub use model::{score, PrefixModel};
pub use optim::{OptimizerConfig, OptimizerKind, OptimizerState};
pub use schedule::Schedule;
pub use trainer::{has_checkpoint, peak_rss_mib, DevMetric, Method, Summary, TrainConfig, Trainer};

/// One-line errors: the file and line, or what stopped the run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Model(#[from] prefix_tune_model::ModelError),
    #[error(transparent)]
    Prefix(#[from] prefix_tune_prefix::PrefixError),
    #[error("{0}")]
    Data(String),
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Diverged(String),
    #[error(transparent)]
    Plot(#[from] plot::PlotError),
    #[error("{path}: {reason}")]
    Checkpoint { path: std::path::PathBuf, reason: String },
}
