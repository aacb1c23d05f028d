//! The one error type of the command line: every failure becomes one line on stderr that names
//! the file and the field (or flag) at fault.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A flag or combination of flags that cannot work, with the flag named.
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Model(#[from] prefix_tune_model::ModelError),
    #[error(transparent)]
    Prefix(#[from] prefix_tune_prefix::PrefixError),
    #[error(transparent)]
    Train(#[from] prefix_tune_train::TrainError),
    #[error(transparent)]
    Data(#[from] prefix_tune_data::DataError),
    #[error(transparent)]
    Eval(#[from] prefix_tune_eval::EvalError),
    #[error(transparent)]
    Serve(#[from] prefix_tune_serve::ServeError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// A GPU allocation failed (Burn panics; [`crate::out_of_memory::guard`] catches it), in
    /// work of `batch_size` rows where it has one.
    #[error("out of GPU memory{} ({detail}): {advice}", batch_size.map(|b| format!(" at batch size {b}")).unwrap_or_default())]
    OutOfMemory { batch_size: Option<usize>, detail: String, advice: String },
}

pub type Result<T, E = CliError> = std::result::Result<T, E>;

impl CliError {
    pub fn usage(message: impl Into<String>) -> Self {
        CliError::Usage(message.into())
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CliError::Io { path: path.into(), source }
    }

    /// The process's exit status: 2 for a command line that cannot work (as clap's own), 1
    /// for a failure while running it (a file missing or malformed, a run that diverged).
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) | CliError::Serve(prefix_tune_serve::ServeError::Usage(_)) => 2,
            _ => 1,
        }
    }
}
