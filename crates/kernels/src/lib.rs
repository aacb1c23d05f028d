//! CPU kernels for the flex backend. At the top level: matrix products of a few rows by a large
//! weight, for decoding.
//!
//! A decoding step multiplies one row per sequence (or per beam) by every weight matrix of the
//! model, so its time is the time it takes to read the weights from memory: GPT-2 small reads
//! 0.5 GB per token. The general matmul the CPU backend calls (`gemm`) either packs the weight
//! first or reads it on one thread, at about 6 GB/s. These loops read each weight element once
//! for all the rows, split the weight over every core in contiguous runs, and keep the partial
//! sums in L1, so a step runs at memory bandwidth instead.
//!
//! The sums are the same products in another order than `gemm`'s, so results differ from it in
//! the last bits of f32 (about 1e-6 relative), as any two BLAS libraries do.
//!
//! The other modules are the CPU backend's fused operations, each one pass on all cores where
//! Burn's tensor form takes several single-threaded ones:
//! - [`bf16`]: bf16 products with f32 sums for the frozen weights, packed once (`--dtype bf16`),
//!   on [`amx`] tiles, AVX2 or portable loops, whichever the CPU runs;
//! - [`gelu`]: GPT-2's activation and its derivative;
//! - [`layer_norm`]: LayerNorm with a frozen scale and shift, and its input gradient;
//! - [`cross_entropy`]: the LM head's loss and its gradient;
//! - [`attention`]: softmax attention of a training step and its gradients;
//! - [`dropout`]: dropout's keep mask, drawn on all cores from one seed;
//! - [`adamw`]: one AdamW step, bit for bit the tensor form;
//!
//! and [`team`], the threads that run a decoding step's products without a scheduler trip each.

pub mod adamw;
pub mod attention;
pub mod amx;
pub mod bf16;
pub mod cross_entropy;
pub mod dropout;
mod few_rows;
pub mod gelu;
pub mod layer_norm;
pub mod team;

pub use few_rows::{few_rows_matmul, Weight, MAX_ROWS};
