//! GPT-2 and BART in Burn, with a slot in attention where a prefix's keys and values
//! go; Hugging Face config + safetensors loading; a KV cache; generation with HF semantics.

pub mod attention;
pub mod bart;
pub mod bf16;
pub mod few_rows;
#[cfg(feature = "flex")]
mod flex;
pub mod cross_entropy;
pub mod gelu;
pub mod backend;
mod error;
mod hf_config;
pub mod generate;
pub mod gpt2;
pub mod hub;
#[cfg(feature = "flex")]
pub mod layer_norm;
pub mod nn;
pub mod past;
pub mod tensors;
pub mod testing;
pub mod weights;

pub use attention::KeyValue;
pub use backend::Backend;
pub use error::{FieldError, ModelError};
pub use bart::{load_bart, Bart, BartConfig, BartPrefix};
pub use gpt2::{load_gpt2, random_gpt2, Gpt2, Gpt2Config};
pub use past::Past;

pub use burn;
