use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::ModelError;

/// GPT-2's hyper-parameters under Hugging Face's `config.json` names, so the file deserialises
/// unchanged. Defaults are HF's `GPT2Config` defaults for keys a file may leave out.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Gpt2Config {
    #[serde(default = "default_vocab_size")]
    pub vocab_size: usize,
    /// Learned position embeddings: the longest sequence (prefix included) the model can read.
    #[serde(default = "default_n_positions")]
    pub n_positions: usize,
    #[serde(default = "default_n_embd")]
    pub n_embd: usize,
    #[serde(default = "default_n_layer")]
    pub n_layer: usize,
    #[serde(default = "default_n_head")]
    pub n_head: usize,
    /// Width of the MLP; `None` means 4·n_embd.
    #[serde(default)]
    pub n_inner: Option<usize>,
    #[serde(default = "default_activation")]
    pub activation_function: String,
    #[serde(default = "default_dropout")]
    pub resid_pdrop: f64,
    #[serde(default = "default_dropout")]
    pub embd_pdrop: f64,
    #[serde(default = "default_dropout")]
    pub attn_pdrop: f64,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    #[serde(default = "default_true")]
    pub scale_attn_weights: bool,
    #[serde(default)]
    pub scale_attn_by_inverse_layer_idx: bool,
    #[serde(default = "default_eos")]
    pub bos_token_id: Option<u32>,
    #[serde(default = "default_eos")]
    pub eos_token_id: Option<u32>,
    #[serde(default)]
    pub pad_token_id: Option<u32>,
}

fn default_vocab_size() -> usize { 50257 }
fn default_n_positions() -> usize { 1024 }
fn default_n_embd() -> usize { 768 }
fn default_n_layer() -> usize { 12 }
fn default_n_head() -> usize { 12 }
fn default_activation() -> String { "gelu_new".into() }
fn default_dropout() -> f64 { 0.1 }
fn default_eps() -> f64 { 1e-5 }
fn default_true() -> bool { true }
fn default_eos() -> Option<u32> { Some(50256) }

/// The activations GPT-2 checkpoints use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// tanh approximation of GELU (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
    /// exact GELU (`gelu`).
    Gelu,
    Relu,
}

impl Gpt2Config {
    /// Reads and checks `config.json`.
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| ModelError::config(path, "(json)", format!("not valid JSON: {e}")))?;
        if let Some(model_type) = value.get("model_type").and_then(|v| v.as_str()) {
            if model_type != "gpt2" {
                return Err(ModelError::config(path, "model_type", format!("`{model_type}` is not a GPT-2 model")));
            }
        }
        let config: Self = serde_json::from_value(value.clone()).map_err(|e| {
            // Every field has a default, so the one key that fails alone is the culprit.
            let culprit = value.as_object().and_then(|fields| {
                fields.iter().find(|(key, v)| {
                    let alone = serde_json::json!({ key.as_str(): v });
                    serde_json::from_value::<Self>(alone).is_err()
                })
            });
            match culprit {
                Some((key, _)) => ModelError::config(path, key, e.to_string()),
                None => ModelError::config(path, "(fields)", e.to_string()),
            }
        })?;
        config.validate(path)?;
        Ok(config)
    }

    pub fn validate(&self, path: &Path) -> Result<(), ModelError> {
        for (field, value) in [
            ("vocab_size", self.vocab_size),
            ("n_positions", self.n_positions),
            ("n_embd", self.n_embd),
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
        ] {
            if value == 0 {
                return Err(ModelError::config(path, field, "must be positive"));
            }
        }
        if self.n_embd % self.n_head != 0 {
            return Err(ModelError::config(
                path,
                "n_head",
                format!("n_embd = {} is not divisible by n_head = {}", self.n_embd, self.n_head),
            ));
        }
        self.activation().map_err(|reason| ModelError::config(path, "activation_function", reason))?;
        Ok(())
    }

    pub fn activation(&self) -> Result<Activation, String> {
        match self.activation_function.as_str() {
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(Activation::GeluTanh),
            "gelu" => Ok(Activation::Gelu),
            "relu" => Ok(Activation::Relu),
            other => Err(format!("unsupported activation `{other}`")),
        }
    }

    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    pub fn inner_dim(&self) -> usize {
        self.n_inner.unwrap_or(4 * self.n_embd)
    }
}
