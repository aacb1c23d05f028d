use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::nn::Activation;
use crate::ModelError;

/// BART's hyper-parameters under Hugging Face's `config.json` names; defaults are HF's
/// `BartConfig` defaults (bart-large) for keys a file may leave out.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BartConfig {
    #[serde(default = "default_vocab_size")]
    pub vocab_size: usize,
    #[serde(default = "default_d_model")]
    pub d_model: usize,
    #[serde(default = "default_layers")]
    pub encoder_layers: usize,
    #[serde(default = "default_layers")]
    pub decoder_layers: usize,
    #[serde(default = "default_heads")]
    pub encoder_attention_heads: usize,
    #[serde(default = "default_heads")]
    pub decoder_attention_heads: usize,
    #[serde(default = "default_ffn")]
    pub encoder_ffn_dim: usize,
    #[serde(default = "default_ffn")]
    pub decoder_ffn_dim: usize,
    #[serde(default = "default_activation")]
    pub activation_function: String,
    /// Learned positions: the longest encoder input, and the longest decoder sequence (start
    /// token included). A prefix takes no positions.
    #[serde(default = "default_positions")]
    pub max_position_embeddings: usize,
    /// Token embeddings are multiplied by √d_model (bart-large: false).
    #[serde(default)]
    pub scale_embedding: bool,
    #[serde(default = "default_dropout")]
    pub dropout: f64,
    #[serde(default)]
    pub attention_dropout: f64,
    #[serde(default)]
    pub activation_dropout: f64,
    #[serde(default = "default_pad")]
    pub pad_token_id: Option<u32>,
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    #[serde(default = "default_eos")]
    pub eos_token_id: Option<u32>,
    #[serde(default = "default_eos")]
    pub decoder_start_token_id: Option<u32>,
    #[serde(default)]
    pub forced_bos_token_id: Option<u32>,
    #[serde(default = "default_eos")]
    pub forced_eos_token_id: Option<u32>,
    /// mBART's pre-LayerNorm blocks; BART is post-LayerNorm. Refused when true.
    #[serde(default)]
    pub normalize_before: bool,
    #[serde(default)]
    pub add_final_layer_norm: bool,
}

fn default_vocab_size() -> usize { 50265 }
fn default_d_model() -> usize { 1024 }
fn default_layers() -> usize { 12 }
fn default_heads() -> usize { 16 }
fn default_ffn() -> usize { 4096 }
fn default_activation() -> String { "gelu".into() }
fn default_positions() -> usize { 1024 }
fn default_dropout() -> f64 { 0.1 }
fn default_pad() -> Option<u32> { Some(PAD) }
fn default_eos() -> Option<u32> { Some(END_OF_SEQUENCE) }

/// BART's `<pad>` and `</s>` (also its decoder start), when a `config.json` names none.
pub const PAD: u32 = 1;
pub const END_OF_SEQUENCE: u32 = 2;

/// BART's learned position tables have two extra rows in front (fairseq's padding offset).
pub const POSITION_OFFSET: usize = 2;

impl BartConfig {
    /// The id that ends a sequence.
    pub fn eos(&self) -> u32 {
        self.eos_token_id.unwrap_or(END_OF_SEQUENCE)
    }

    /// The id rows are padded with.
    pub fn pad(&self) -> u32 {
        self.pad_token_id.unwrap_or(PAD)
    }

    /// The first token of every decoder input.
    pub fn decoder_start(&self) -> u32 {
        self.decoder_start_token_id.unwrap_or(END_OF_SEQUENCE)
    }

    /// Reads and checks `config.json`.
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let config: Self = crate::hf_config::read(path, "bart")?;
        config.validate(path)?;
        Ok(config)
    }

    pub fn validate(&self, path: &Path) -> Result<(), ModelError> {
        crate::hf_config::require_positive(
            path,
            &[
                ("vocab_size", self.vocab_size),
                ("d_model", self.d_model),
                ("encoder_layers", self.encoder_layers),
                ("decoder_layers", self.decoder_layers),
                ("encoder_attention_heads", self.encoder_attention_heads),
                ("decoder_attention_heads", self.decoder_attention_heads),
                ("encoder_ffn_dim", self.encoder_ffn_dim),
                ("decoder_ffn_dim", self.decoder_ffn_dim),
                ("max_position_embeddings", self.max_position_embeddings),
            ],
        )?;
        crate::hf_config::require_probability(
            path,
            &[("dropout", self.dropout), ("attention_dropout", self.attention_dropout), ("activation_dropout", self.activation_dropout)],
        )?;
        for (field, heads) in [("encoder_attention_heads", self.encoder_attention_heads), ("decoder_attention_heads", self.decoder_attention_heads)] {
            if self.d_model % heads != 0 {
                return Err(ModelError::config(path, field, format!("d_model = {} is not divisible by {heads} heads", self.d_model)));
            }
        }
        if self.normalize_before || self.add_final_layer_norm {
            let field = if self.normalize_before { "normalize_before" } else { "add_final_layer_norm" };
            return Err(ModelError::config(path, field, "pre-LayerNorm blocks (mBART) are not supported; BART is post-LayerNorm"));
        }
        Activation::from_hf(&self.activation_function).map_err(|e| e.at(path))?;
        Ok(())
    }

    pub fn activation(&self) -> Activation {
        Activation::from_hf(&self.activation_function).expect("validated")
    }

    pub fn encoder_head_dim(&self) -> usize {
        self.d_model / self.encoder_attention_heads
    }

    pub fn decoder_head_dim(&self) -> usize {
        self.d_model / self.decoder_attention_heads
    }

    /// The factor on token embeddings: √d_model with `scale_embedding`, else 1.
    pub fn embed_scale(&self) -> f32 {
        if self.scale_embedding {
            (self.d_model as f32).sqrt()
        } else {
            1.0
        }
    }
}
