//! Reading a Hugging Face `config.json` into a typed config, with one-line errors that name the
//! file and the field.

use std::path::Path;

use serde::de::DeserializeOwned;

use crate::ModelError;

pub fn read_json(path: &Path) -> Result<serde_json::Value, ModelError> {
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| ModelError::config(path, "(json)", format!("not valid JSON: {e}")))
}

/// Refuses a config whose `model_type` names another architecture.
pub fn expect_model_type(path: &Path, value: &serde_json::Value, expected: &str) -> Result<(), ModelError> {
    match value.get("model_type").and_then(|v| v.as_str()) {
        Some(found) if found != expected => {
            Err(ModelError::config(path, "model_type", format!("`{found}` is not a {expected} model")))
        }
        _ => Ok(()),
    }
}

/// Deserialises `value`; every field has a default, so the one key that fails alone is named.
pub fn deserialize<T: DeserializeOwned>(path: &Path, value: serde_json::Value) -> Result<T, ModelError> {
    serde_json::from_value(value.clone()).map_err(|e| {
        let culprit = value.as_object().and_then(|fields| {
            fields.iter().find(|(key, v)| serde_json::from_value::<T>(serde_json::json!({ key.as_str(): v })).is_err())
        });
        match culprit {
            Some((key, _)) => ModelError::config(path, key, e.to_string()),
            None => ModelError::config(path, "(fields)", e.to_string()),
        }
    })
}

/// `config.json` of a `model_type` model as `T` (checked by the caller's `validate`).
pub fn read<T: DeserializeOwned>(path: &Path, model_type: &str) -> Result<T, ModelError> {
    let value = read_json(path)?;
    expect_model_type(path, &value, model_type)?;
    deserialize(path, value)
}

/// Refuses the first of `fields` that is zero, naming it.
pub fn require_positive(path: &Path, fields: &[(&str, usize)]) -> Result<(), ModelError> {
    match fields.iter().find(|(_, value)| *value == 0) {
        Some((field, _)) => Err(ModelError::config(path, field, "must be positive")),
        None => Ok(()),
    }
}

/// Refuses the first of `fields` that is not a dropout probability in [0, 1), naming it: 1 would
/// drop everything (a NaN loss in training), and anything past it is no probability.
pub fn require_probability(path: &Path, fields: &[(&str, f64)]) -> Result<(), ModelError> {
    match fields.iter().find(|(_, p)| !(0.0..1.0).contains(p)) {
        Some((field, p)) => Err(ModelError::config(path, field, format!("{p} is not a dropout probability in [0, 1)"))),
        None => Ok(()),
    }
}

/// Refuses a LayerNorm epsilon that is not a positive finite number (0 divides by zero on a
/// constant row).
pub fn require_epsilon(path: &Path, field: &str, eps: f64) -> Result<(), ModelError> {
    if eps.is_finite() && eps > 0.0 {
        Ok(())
    } else {
        Err(ModelError::config(path, field, format!("{eps} is not a positive LayerNorm epsilon")))
    }
}
