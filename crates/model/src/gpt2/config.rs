use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::ModelError;

/// GPT-2's `<|endoftext|>`: its end of sequence, and by convention its padding, when a
/// `config.json` names neither.
pub const END_OF_TEXT: u32 = 50256;

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
fn default_eos() -> Option<u32> { Some(END_OF_TEXT) }

pub use crate::nn::Activation;

impl Gpt2Config {
    /// Reads and checks `config.json`.
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let config: Self = crate::hf_config::read(path, "gpt2")?;
        config.validate(path)?;
        Ok(config)
    }

    pub fn validate(&self, path: &Path) -> Result<(), ModelError> {
        crate::hf_config::require_positive(
            path,
            &[
                ("vocab_size", self.vocab_size),
                ("n_positions", self.n_positions),
                ("n_embd", self.n_embd),
                ("n_layer", self.n_layer),
                ("n_head", self.n_head),
                ("n_inner", self.inner_dim()),
            ],
        )?;
        crate::hf_config::require_probability(
            path,
            &[("resid_pdrop", self.resid_pdrop), ("embd_pdrop", self.embd_pdrop), ("attn_pdrop", self.attn_pdrop)],
        )?;
        crate::hf_config::require_epsilon(path, "layer_norm_epsilon", self.layer_norm_epsilon)?;
        if self.n_embd % self.n_head != 0 {
            return Err(ModelError::config(
                path,
                "n_head",
                format!("n_embd = {} is not divisible by n_head = {}", self.n_embd, self.n_head),
            ));
        }
        self.activation().map_err(|e| e.at(path))?;
        Ok(())
    }

    pub fn activation(&self) -> Result<Activation, crate::FieldError> {
        Activation::from_hf(&self.activation_function)
    }

    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// The id that ends a sequence.
    pub fn eos(&self) -> u32 {
        self.eos_token_id.unwrap_or(END_OF_TEXT)
    }

    /// The id rows are padded with (masked out wherever it appears): the config's, else EOS.
    pub fn pad(&self) -> u32 {
        self.pad_token_id.unwrap_or(self.eos())
    }

    pub fn inner_dim(&self) -> usize {
        self.n_inner.unwrap_or(4 * self.n_embd)
    }
}
