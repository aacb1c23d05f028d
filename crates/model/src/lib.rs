//! GPT-2 and BART in Burn, with a slot in attention where a prefix's keys and values
//! go; Hugging Face config + safetensors loading; a KV cache; generation with HF semantics.

pub mod attention;
pub mod backend;
pub mod bart;
mod cpu;
pub mod dropout;
mod error;
pub mod generate;
pub mod gpt2;
pub mod kv;
mod load;
pub mod nn;
mod ops;
pub mod past;
pub mod tensors;
pub mod testing;

// Their historical paths (`prefix_tune_model::bf16`, `::hub`, …), which every caller uses.
#[cfg(feature = "flex")]
use cpu::flex;
pub use ops::layer_norm;
pub use cpu::{bf16, few_rows};
use load::hf_config;
pub use load::{hub, model_kind, weights, ModelKind};
pub use ops::{adamw, cross_entropy, cut, embed, gelu, kv_write, log_softmax, matmul, narrow};

pub use attention::KeyValue;
pub use kv::KvCache;
pub use backend::Backend;
pub use error::{FieldError, ModelError};
pub use bart::{load_bart, Bart, BartConfig, BartPrefix};
pub use gpt2::{load_gpt2, random_gpt2, Gpt2, Gpt2Config};
pub use past::Past;

pub use burn;
