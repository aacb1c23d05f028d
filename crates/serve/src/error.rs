//! The errors that stop a server from starting, each one line naming the file, flag or address
//! at fault. Errors of one request are [`crate::api::ApiError`]s, answered over HTTP.

use std::net::SocketAddr;
use std::path::PathBuf;

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
