//! The glue to our CPU kernels (`prefix_tune_kernels`): bf16 products of the frozen weights,
//! decoding's few-row products, and what the CPU backend's custom ops share.

pub mod bf16;
pub mod few_rows;
#[cfg(feature = "flex")]
pub(crate) mod flex;
