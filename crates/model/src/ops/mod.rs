//! Fused operations with a tensor form for every backend, a one-pass CPU kernel on the flex
//! backend (`crates/kernels`) and, for some, a GPU kernel (`shaders/`), each with its own
//! backward: GPT-2's GELU, LayerNorm with a frozen scale and shift, the LM head's
//! cross-entropy, and AdamW's step.

pub mod adamw;
pub mod cross_entropy;
pub mod gelu;
pub mod layer_norm;
