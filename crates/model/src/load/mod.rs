//! Reading a model from disk or the hub: Hugging Face `config.json` fields, safetensors weights
//! (sharded or not), and the hub download.

pub(crate) mod hf_config;
pub mod hub;
pub mod weights;
