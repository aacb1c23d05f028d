//! The model behind `--model`: GPT-2 or BART, told apart by `config.json`'s `model_type`.

use std::path::{Path, PathBuf};

use crate::error::{CliError, Result};
use prefix_tune_model::burn::tensor::Device;
use prefix_tune_model::generate::GenerateConfig;
use prefix_tune_model::hub::resolve_model;
use prefix_tune_model::bf16::Dtype;
use prefix_tune_model::{load_bart, load_gpt2, Bart, Gpt2};

pub enum Model {
    Gpt2(Gpt2),
    Bart(Bart),
}

/// The architectures `--model` may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    Gpt2,
    Bart,
}

/// Which architecture the model directory holds (a missing `model_type` reads as GPT-2, as
/// the original GPT-2 hub files have none).
pub fn architecture(dir: &Path) -> Result<Architecture> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| CliError::io(&path, e))?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| CliError::usage(format!("{}: not valid JSON: {e}", path.display())))?;
    match value.get("model_type").and_then(|v| v.as_str()) {
        None | Some("gpt2") => Ok(Architecture::Gpt2),
        Some("bart") => Ok(Architecture::Bart),
        Some(other) => Err(CliError::usage(format!("{}: field `model_type`: `{other}` is not supported (gpt2 or bart)", path.display()))),
    }
}

/// The model directory for `--model` (a folder or a hub name) and the model in it, its
/// products in `dtype`.
pub fn load(name: &str, device: &Device, dtype: Dtype) -> Result<(PathBuf, Model)> {
    let dir = resolve_model(name)?;
    let bf16 = dtype == Dtype::Bf16;
    let model = match architecture(&dir)? {
        Architecture::Gpt2 => {
            let mut model = load_gpt2(&dir, device)?;
            if bf16 {
                model.pack_bf16().map_err(CliError::usage)?;
            }
            Model::Gpt2(model)
        }
        Architecture::Bart => {
            let mut model = load_bart(&dir, device)?;
            if bf16 {
                model.pack_bf16().map_err(CliError::usage)?;
            }
            Model::Bart(model)
        }
    };
    Ok((dir, model))
}

/// An encoder-decoder checkpoint's decoding defaults: `config.json` overlaid by
/// `generation_config.json`, with HF's meaning of `max_length`/`min_length`.
pub fn checkpoint_generation(dir: &Path) -> Result<GenerateConfig> {
    let mut merged = serde_json::Map::new();
    for file in ["config.json", "generation_config.json"] {
        let path = dir.join(file);
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| CliError::usage(format!("{}: not valid JSON: {e}", path.display())))?;
        if let Some(fields) = value.as_object() {
            merged.extend(fields.clone());
        }
    }
    GenerateConfig::from_hf(&serde_json::Value::Object(merged), true).map_err(|e| CliError::usage(format!("{}: {e}", dir.join("generation_config.json").display())))
}
