//! Fused operations with a tensor form for every backend and a one-pass CPU kernel on the flex
//! backend, each with its own backward: GPT-2's GELU, LayerNorm with a frozen scale and shift,
//! and the LM head's cross-entropy.

pub mod cross_entropy;
pub mod gelu;
pub mod layer_norm;
