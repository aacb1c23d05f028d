//! One error type for every loader. Each variant renders as a single line that names the
//! file and the line (or entry/field) so a user can open the file at the right place.

use std::path::PathBuf;

/// Everything that can go wrong while reading a data set. Never a panic: bad input is an `Err`.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{task}: {file}: cannot read: {source}")]
    Io { task: &'static str, file: PathBuf, #[source] source: std::io::Error },

    #[error("{task}: {file} line {line}: missing column \"{column}\"")]
    MissingColumn { task: &'static str, file: PathBuf, line: usize, column: String },

    #[error("{task}: {file} line {line}: {message}")]
    BadLine { task: &'static str, file: PathBuf, line: usize, message: String },

    #[error("{task}: {file} item {item}: {message}")]
    BadItem { task: &'static str, file: PathBuf, item: usize, message: String },

    #[error("{task}: {file} line {line}: malformed XML: {message}")]
    BadXml { task: &'static str, file: PathBuf, line: usize, message: String },

    #[error("{task}: {file} line {line}: not JSON: {message}")]
    BadJson { task: &'static str, file: PathBuf, line: usize, message: String },

    #[error("{task}: {file}: empty split (no usable examples)")]
    EmptySplit { task: &'static str, file: PathBuf },

    #[error("{task}: {file}: no data file found (accepted names: {accepted})")]
    NotFound { task: &'static str, file: PathBuf, accepted: String },

    #[error("tokenizer: {file}: {message}")]
    Tokenizer { file: PathBuf, message: String },

    #[error("unknown task \"{0}\" (expected e2e, webnlg, dart, xsum or jsonl)")]
    UnknownTask(String),
}

impl DataError {
    pub(crate) fn io(task: &'static str, file: &std::path::Path, source: std::io::Error) -> Self {
        DataError::Io { task, file: file.to_path_buf(), source }
    }
}
