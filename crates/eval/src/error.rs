//! Errors of the scorers; each renders as one line naming the file (and counts or line).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Data(#[from] prefix_tune_data::DataError),

    #[error("{file}: cannot read predictions: {source}")]
    Io { file: PathBuf, #[source] source: std::io::Error },

    #[error("{file}: {found} prediction lines, expected {expected} (one per distinct input of {data})")]
    LineCount { file: PathBuf, found: usize, expected: usize, data: PathBuf },

    #[error("meteor: {jar}: {message}")]
    Meteor { jar: PathBuf, message: String },
}
