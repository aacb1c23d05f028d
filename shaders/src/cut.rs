//! A run of a one-dimensional tensor as a contiguous tensor of its own shape, without a copy:
//! how a forward pass's dropout masks are cut from its one draw.
//!
//! Burn's slice is a view only where both ends of the run fall on the device's buffer
//! alignment, and a copy (a launch) elsewhere; a buffer binding needs only its start aligned,
//! so here only the start must be (a multiple of [`ALIGN`] elements).

use burn_backend::{Shape, TensorMetadata};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::reshape;
use burn_cubecl::tensor::CubeTensor;

/// Cuts start on a multiple of this many elements: 256 bytes of f32, the largest offset
/// alignment a GPU asks of a buffer binding (WebGPU's limit).
pub const ALIGN: usize = 64;

/// Elements `start..start + shape.num_elements()` of `x` (`[N]`) as a tensor of `shape`: a view
/// of `x`'s buffer where `start` is on the device's alignment, else a copy.
pub fn cut(x: CubeTensor, start: usize, shape: Shape) -> CubeTensor {
    let x = into_contiguous(x);
    let (len, count, size) = (x.shape()[0], shape.num_elements(), x.dtype.size());
    assert!(start + count <= len, "cut {start}..{} of {len} elements", start + count);
    let offset_start = (start * size) as u64;
    if !offset_start.is_multiple_of(x.client.properties().memory.alignment) {
        let run = burn_cubecl::kernel::slice(x, &[start..start + count]);
        return reshape(run, shape);
    }
    let handle = x.handle.clone().offset_start(offset_start).offset_end(((len - start - count) * size) as u64);
    CubeTensor::new_contiguous(x.client.clone(), x.device.clone(), shape, handle, x.dtype)
}
