//! Reading `--prefix` arguments for a model.

use std::path::Path;

use prefix_tune_model::burn::tensor::Device;
use prefix_tune_model::Gpt2;
use prefix_tune_prefix::{load_prefix, Layout, Prefix};

/// Every `--prefix` (export, PEFT adapter, training state or run directory), checked against
/// the model's layout.
pub fn load_prefixes(model: &Gpt2, paths: &[String], device: &Device) -> Result<Vec<Prefix>, String> {
    let layout = Layout::gpt2(&model.config);
    paths
        .iter()
        .map(|path| load_prefix(Path::new(path), Some(layout), device).map(|loaded| loaded.prefix).map_err(|e| e.to_string()))
        .collect()
}
