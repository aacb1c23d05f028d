//! The errors that stop a server from starting, each one line naming the file, flag or address
//! at fault, and why the batch failed one request ([`Failure`]). Errors of one request are
//! [`crate::api::ApiError`]s, answered over HTTP.

use std::net::SocketAddr;
use std::path::PathBuf;

use prefix_tune_model::ModelError;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Flags that cannot work, with the flag named.
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Model(#[from] ModelError),
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

/// Why a request ended without its completion, and whose fault that is: the client is answered
/// 400 for its own request, 500 for the server's model or device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// What the request asks cannot be done (it does not fit the KV cache, its prompt is
    /// longer than the model's positions).
    Request(String),
    /// The served model or its device failed it: NaN or infinite scores, a backend error.
    Server(String),
}

impl From<ModelError> for Failure {
    fn from(error: ModelError) -> Self {
        match error {
            ModelError::Input(_) => Failure::Request(error.to_string()),
            _ => Failure::Server(error.to_string()),
        }
    }
}
