//! `--model NAME`: a local directory, or a Hugging Face hub repository downloaded and cached.

use std::path::{Path, PathBuf};

use crate::ModelError;

/// The files a model directory may need; optional ones are skipped when the repo lacks them.
const REQUIRED: &[&str] = &["config.json"];
const OPTIONAL: &[&str] = &["tokenizer.json", "vocab.json", "merges.txt", "generation_config.json"];

/// Resolves `--model`: an existing directory is used as is; anything else is a hub repo id
/// (e.g. `gpt2-medium`, `openai-community/gpt2`) fetched into the local HF cache.
pub fn resolve_model(name: &str) -> Result<PathBuf, ModelError> {
    let path = Path::new(name);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    if path.exists() {
        return Err(ModelError::Input(format!("{name}: --model must be a directory (config.json + model.safetensors) or a hub name")));
    }
    if name.starts_with('.') || name.starts_with('/') || name.contains(std::path::MAIN_SEPARATOR) && name.matches('/').count() > 1 {
        return Err(ModelError::Input(format!("{name}: no such model directory")));
    }
    download(name)
}

#[cfg(feature = "hub")]
fn download(repo_id: &str) -> Result<PathBuf, ModelError> {
    use hf_hub::api::sync::ApiBuilder;

    let offline = |e: &dyn std::fmt::Display| {
        ModelError::Hub(format!(
            "{repo_id}: could not download from the Hugging Face hub ({e}); offline, pass a local directory instead: --model ./path/to/{repo_id} (with config.json and model.safetensors)"
        ))
    };
    let api = ApiBuilder::new().with_progress(false).build().map_err(|e| offline(&e))?;
    let repo = api.model(repo_id.to_string());
    let mut dir = None;
    for file in REQUIRED {
        let path = repo.get(file).map_err(|e| offline(&e))?;
        dir = path.parent().map(Path::to_path_buf);
    }
    // Weights: single file, else a sharded index and its shards.
    match repo.get("model.safetensors") {
        Ok(_) => {}
        Err(_) => {
            let index = repo.get("model.safetensors.index.json").map_err(|_| {
                ModelError::Hub(format!("{repo_id}: the repository has no model.safetensors (pickle checkpoints are refused)"))
            })?;
            let text = std::fs::read_to_string(&index).map_err(|e| ModelError::io(&index, e))?;
            let value: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| ModelError::config(&index, "(json)", e.to_string()))?;
            let mut shards: Vec<String> = value["weight_map"]
                .as_object()
                .map(|m| m.values().filter_map(|v| v.as_str().map(String::from)).collect())
                .unwrap_or_default();
            shards.sort();
            shards.dedup();
            for shard in shards {
                repo.get(&shard).map_err(|e| offline(&e))?;
            }
        }
    }
    for file in OPTIONAL {
        let _ = repo.get(file);
    }
    dir.ok_or_else(|| ModelError::Hub(format!("{repo_id}: empty download")))
}

#[cfg(not(feature = "hub"))]
fn download(repo_id: &str) -> Result<PathBuf, ModelError> {
    let _ = (REQUIRED, OPTIONAL);
    Err(ModelError::Hub(format!(
        "{repo_id}: not a directory, and this build has no hub support (feature `hub`); pass a local directory: --model ./path/to/{repo_id}"
    )))
}
