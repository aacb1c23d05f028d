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
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

pub type Result<T, E = CliError> = std::result::Result<T, E>;

impl CliError {
    pub fn usage(message: impl Into<String>) -> Self {
        CliError::Usage(message.into())
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CliError::Io { path: path.into(), source }
    }
}

/// Messages built where no typed error exists (a few library functions return `String`).
impl From<String> for CliError {
    fn from(message: String) -> Self {
        CliError::Usage(message)
    }
}

impl From<&str> for CliError {
    fn from(message: &str) -> Self {
        CliError::Usage(message.to_string())
    }
}
