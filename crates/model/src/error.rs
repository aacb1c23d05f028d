use std::path::PathBuf;

/// Every failure of the model crate, each a single line that names the file and the field or
/// tensor at fault, so a user can fix their input without reading a backtrace.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },

    #[error("{path}: not a readable safetensors file ({reason})")]
    Safetensors { path: PathBuf, reason: String },

    #[error("{path}: missing tensor `{name}`")]
    MissingTensor { path: PathBuf, name: String },

    #[error("{path}: tensor `{name}` has shape {found:?}, expected {expected:?} ({why})")]
    ShapeMismatch { path: PathBuf, name: String, found: Vec<usize>, expected: Vec<usize>, why: String },

    #[error("{path}: tensor `{name}` has unsupported dtype {dtype} (expected F32, F16 or BF16)")]
    Dtype { path: PathBuf, name: String, dtype: String },

    #[error("{path}: field `{field}`: {reason}")]
    Config { path: PathBuf, field: String, reason: String },

    #[error("{path}: PyTorch pickle checkpoints are refused (unpickling can run arbitrary code); convert it to model.safetensors first, e.g. with `transformers`' save_pretrained(safe_serialization=True)")]
    PickleRefused { path: PathBuf },

    #[error("{path}: no model weights found (expected model.safetensors or model.safetensors.index.json)")]
    NoWeights { path: PathBuf },

    #[error("{0}")]
    Input(String),

    #[error("{0}")]
    Backend(String),

    #[error("{0}")]
    Hub(String),

    #[error("sampling: no token has a finite, positive probability (the model's scores are NaN or infinite, or every token is banned)")]
    NothingToDraw,

    #[error("beam search: prompt {prompt} ended with no hypothesis of finite score (the model's log-probabilities are NaN: NaN weights, or an overflow in half precision)")]
    NonFiniteScores { prompt: usize },

}

/// A field of a config file (or of generation kwargs) with a value we cannot use; the caller
/// knows the file and names it with [`FieldError::at`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("field `{field}`: {reason}")]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

impl FieldError {
    pub fn new(field: &str, reason: impl Into<String>) -> Self {
        Self { field: field.into(), reason: reason.into() }
    }

    /// The error of the file at `path`.
    pub fn at(self, path: impl Into<PathBuf>) -> ModelError {
        ModelError::Config { path: path.into(), field: self.field, reason: self.reason }
    }
}

impl ModelError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }

    pub(crate) fn config(path: impl Into<PathBuf>, field: &str, reason: impl Into<String>) -> Self {
        Self::Config { path: path.into(), field: field.into(), reason: reason.into() }
    }
}
