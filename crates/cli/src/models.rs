//! The model behind `--model`: GPT-2 or BART, told apart by `config.json`'s `model_type`, and
//! the one place a command's work parts for them.

use std::path::Path;

use crate::error::{CliError, Result};
use prefix_tune_model::burn::tensor::Device;
use prefix_tune_model::hub::resolve_model;
use prefix_tune_model::bf16::Dtype;
use prefix_tune_model::{load_bart, load_gpt2};

use crate::arch::Architecture;

/// The architectures `--model` may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    Gpt2,
    Bart,
}

/// Which architecture the model directory holds (a missing `model_type` reads as GPT-2, as
/// the original GPT-2 hub files have none).
pub fn model_kind(dir: &Path) -> Result<ModelKind> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| CliError::io(&path, e))?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| CliError::usage(format!("{}: not valid JSON: {e}", path.display())))?;
    match value.get("model_type").and_then(|v| v.as_str()) {
        None | Some("gpt2") => Ok(ModelKind::Gpt2),
        Some("bart") => Ok(ModelKind::Bart),
        Some(other) => Err(CliError::usage(format!("{}: field `model_type`: `{other}` is not supported (gpt2 or bart)", path.display()))),
    }
}

/// A command's work on the model `--model` names, written once for every [`Architecture`].
pub trait ModelJob {
    type Output;

    fn run<M: Architecture>(self, model: M, dir: &Path) -> Result<Self::Output>;
}

/// Loads the model `name` names (a folder or a hub name), its products in `dtype`, and runs
/// `job` on it: the one place GPT-2 and BART part.
pub fn with_model<J: ModelJob>(name: &str, device: &Device, dtype: Dtype, job: J) -> Result<J::Output> {
    let dir = resolve_model(name)?;
    match model_kind(&dir)? {
        ModelKind::Gpt2 => job.run(in_dtype(load_gpt2(&dir, device)?, dtype)?, &dir),
        ModelKind::Bart => job.run(in_dtype(load_bart(&dir, device)?, dtype)?, &dir),
    }
}

fn in_dtype<M: Architecture>(mut model: M, dtype: Dtype) -> Result<M> {
    if dtype == Dtype::Bf16 {
        model.pack_bf16()?;
    }
    Ok(model)
}
