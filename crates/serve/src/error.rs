//! The errors that stop a server from starting, each one line naming the file, flag or address
//! at fault. Errors of one request are [`crate::api::ApiError`]s, answered over HTTP.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Flags that cannot work, with the flag named.
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Model(#[from] prefix_tune_model::ModelError),
    #[error(transparent)]
    Prefix(#[from] prefix_tune_prefix::PrefixError),
    #[error(transparent)]
    Data(#[from] prefix_tune_data::DataError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("--bind {address}: {source}")]
    Bind { address: SocketAddr, source: std::io::Error },
    #[error("cannot start {what}: {source}")]
    Start { what: &'static str, source: std::io::Error },
}

pub type Result<T, E = ServeError> = std::result::Result<T, E>;

/// The `model_type` of the model in `dir`, if its `config.json` names one.
pub fn model_type(dir: &Path) -> Result<Option<String>> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|source| ServeError::Io { path: path.clone(), source })?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| ServeError::Usage(format!("{}: not valid JSON: {e}", path.display())))?;
    Ok(value.get("model_type").and_then(|v| v.as_str()).map(String::from))
}
