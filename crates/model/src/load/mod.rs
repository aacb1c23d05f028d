//! Reading a model from disk or the hub: Hugging Face `config.json` fields, safetensors weights
//! (sharded or not), and the hub download.

use std::path::Path;

use crate::ModelError;

pub(crate) mod hf_config;
pub mod hub;
pub mod weights;

/// The architectures a model directory may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    Gpt2,
    Bart,
}

/// Which architecture `dir` holds, by its `config.json`'s `model_type` (missing reads as GPT-2:
/// the original GPT-2 hub files have none).
pub fn model_kind(dir: &Path) -> Result<ModelKind, ModelError> {
    let path = dir.join("config.json");
    match hf_config::read_json(&path)?.get("model_type").and_then(|v| v.as_str()) {
        None | Some("gpt2") => Ok(ModelKind::Gpt2),
        Some("bart") => Ok(ModelKind::Bart),
        Some(other) => Err(ModelError::config(path, "model_type", format!("`{other}` is not supported (gpt2 or bart)"))),
    }
}
