//! Reading `--prefix` arguments for a model.

use std::path::Path;

use prefix_tune_model::burn::tensor::{Device, Tensor};
use prefix_tune_model::{Gpt2, Past};
use prefix_tune_prefix::{load_prefix, Layout};

/// The past for `prompts` rows from zero, one (shared) or one-per-prompt `--prefix` paths.
pub fn prefix_past(model: &Gpt2, paths: &[String], prompts: usize, device: &Device) -> Result<Option<Past>, String> {
    if paths.is_empty() {
        return Ok(None);
    }
    let layout = Layout::gpt2(&model.config);
    let activations: Vec<Tensor<2>> = paths
        .iter()
        .map(|path| load_prefix(Path::new(path), Some(layout), device).map(|loaded| loaded.prefix.activations()).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    match activations.len() {
        1 => Ok(Some(layout.past(activations[0].clone(), prompts))),
        n if n == prompts => Ok(Some(layout.stack(&activations))),
        n => Err(format!("{n} --prefix for {prompts} prompts: give one prefix for all, or one per prompt")),
    }
}
