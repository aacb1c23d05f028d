//! prefix-tune's GPU kernels, written once in CubeCL and compiled by Burn for every GPU runtime
//! it has: wgpu (Vulkan, Metal, DX12, WGSL or SPIR-V) and CUDA.
//!
//! Each kernel takes and returns Burn's [`CubeTensor`](burn_cubecl::tensor::CubeTensor)s;
//! `crates/model` wires them into its tensor code as Burn backend extensions (with a lazy
//! form under Burn's fusion and a backward pass under autodiff), the way `crates/kernels` is
//! wired in for the CPU backend. Every kernel is held to the tensor-operation form it replaces
//! by a test on wgpu (Mesa's lavapipe in CI).

pub mod adamw;
pub mod attention;
pub mod cross_entropy;
pub mod cut;
pub mod embed;
pub mod epilogue;
pub mod few_rows;
pub mod gelu;
pub mod kv;
pub mod layer_norm;
pub mod matmul;
pub mod pad;
pub mod pick;
mod rows;
pub mod tune;

/// The most elements a tensor given to these kernels may have: CubeCL addresses a kernel's
/// tensors with 32-bit indices. Larger tensors take the tensor form (whose allocation is then
/// what fails, as an out-of-memory error a user can act on).
pub const MAX_ELEMENTS: usize = u32::MAX as usize;

/// Whether tensors of these element counts can all be given to a kernel.
pub fn fits(counts: &[usize]) -> bool {
    counts.iter().all(|&count| count <= MAX_ELEMENTS)
}

pub use burn_cubecl::{tensor::CubeTensor, CubeBackend};
