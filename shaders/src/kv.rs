//! A decoding step's keys and values written into the KV cache's pools in one launch, read where
//! they lie: views of the projection split into heads (`[B, H, T, Dh]` of a `[B, T, 3·H, Dh]`
//! tensor). As tensor operations each of keys and values was copied into order first (its rows
//! do not merge into `[B·H·T, Dh]` in place), then written: four launches per layer and step.

use burn_backend::TensorMetadata;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use crate::rows::{cube_element, elements, row_cubes, ROW_THREADS};

/// `pool[slots[r]][d] = current[b, h, t][d]` for keys and values, r = (b·H + h)·T + t.
#[cube(launch)]
fn write_kernel<F: Float, I: Numeric>(
    pool_keys: &mut Tensor<F>,   // [H·capacity, Dh]
    pool_values: &mut Tensor<F>, // [H·capacity, Dh]
    slots: &Tensor<I>,           // [B·H·T]
    keys: &Tensor<F>,            // [B, H, T, Dh], any strides
    values: &Tensor<F>,          // [B, H, T, Dh]
    #[define(F, I)] _dtypes: [ElemType; 2],
) {
    let i = cube_element();
    let (heads, t_len, dh) = (keys.shape(1), keys.shape(2), keys.shape(3));
    if i >= slots.len() * dh {
        terminate!();
    }
    let (row, d) = (i / dh, i % dh);
    let t = row % t_len;
    let bh = row / t_len;
    let (b, h) = (bh / heads, bh % heads);
    let at = usize::cast_from(slots[row]) * dh + d;
    pool_keys[at] = keys[b * keys.stride(0) + h * keys.stride(1) + t * keys.stride(2) + d * keys.stride(3)];
    pool_values[at] = values[b * values.stride(0) + h * values.stride(1) + t * values.stride(2) + d * values.stride(3)];
}

/// The pools with `keys` and `values` (`[B, H, T, Dh]`) written at rows `slots` (`[B·H·T]`),
/// in place where no other tensor holds them.
pub fn write(pool_keys: CubeTensor, pool_values: CubeTensor, slots: CubeTensor, keys: CubeTensor, values: CubeTensor) -> (CubeTensor, CubeTensor) {
    let owned = |pool: CubeTensor| if pool.can_mut() && pool.is_contiguous() { pool } else { copy(pool) };
    let (pool_keys, pool_values, slots) = (owned(pool_keys), owned(pool_values), into_contiguous(slots));
    let count = slots.shape().num_elements() * keys.shape()[3];
    let client = pool_keys.client.clone();
    let dtypes = [elements(&pool_keys), elements(&slots)];
    write_kernel::launch(
        &client,
        row_cubes(count.div_ceil(ROW_THREADS as usize)),
        CubeDim::new_1d(ROW_THREADS),
        pool_keys.clone().into_tensor_arg(),
        pool_values.clone().into_tensor_arg(),
        slots.into_tensor_arg(),
        keys.into_tensor_arg(),
        values.into_tensor_arg(),
        dtypes,
    );
    (pool_keys, pool_values)
}

/// A pool another tensor still holds, copied so that writing it leaves that one as it was.
fn copy(pool: CubeTensor) -> CubeTensor {
    into_contiguous(pool.copy())
}
