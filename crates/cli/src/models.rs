//! The model behind `--model`: GPT-2 or BART, told apart by `config.json`'s `model_type`, and
//! the one place a command's work parts for them.

use std::path::Path;

use crate::error::Result;
use prefix_tune_model::burn::tensor::Device;
use prefix_tune_model::hub::resolve_model;
use prefix_tune_model::bf16::Dtype;
use prefix_tune_model::{load_bart, load_gpt2, model_kind, ModelKind};

use crate::arch::Architecture;

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
    if dtype != Dtype::F32 {
        model.use_half(dtype)?;
    }
    Ok(model)
}
