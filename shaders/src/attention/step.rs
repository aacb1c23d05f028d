//! A decoding step's attention over a KV cache that also writes the step's own key and value
//! into the cache's pools: one launch where the write ([`crate::kv::write`]) and the paged
//! attention ([`super::forward_paged`]) were two, per layer and new token.
//!
//! One query per (row, head), one cube each. Its keys are the pool rows `slots[b, h, ·]`; the
//! step's own key sits at the pool row `writes[b·H + h]`, which no cube reads from the pool in
//! this launch: the cube takes that key and value from the step's tensors and writes them into
//! the pools for later steps. The sums are [`super::forward_paged`]'s, in its order, so the two
//! launches and this one give the same bits.

use burn_backend::{Shape, TensorMetadata};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use super::{bias_index, dot, exponentiate, out_row_start, query_row_threads, row_capacity, row_start, split_heads, Heads, HeadsLaunch, Inputs, KeysValues};
use crate::rows::{cube_row, elements, empty_like, row_cubes};

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn step_kernel<F: Float, I: Numeric>(
    queries: &Tensor<F>,         // [B, H, 1, Dh], rows contiguous
    keys: &Tensor<F>,            // [B, H, 1, Dh], the step's
    values: &Tensor<F>,          // [B, H, 1, Dh]
    pool_keys: &mut Tensor<F>,   // [H·capacity, Dh]
    pool_values: &mut Tensor<F>, // [H·capacity, Dh]
    slots: &Tensor<I>,           // [B, H, S]: the pool row of each key
    writes: &Tensor<I>,          // [B·H]: the pool row of the step's own key
    bias: &Tensor<F>,            // [B|1, H|1, 1, S|1]
    out: &mut Tensor<F>,         // [B, H, 1, Dh]
    heads_at: Heads,
    scale: f32,
    #[comptime] threads: u32,
    #[comptime] max_keys: u32,
    #[define(F, I)] _dtypes: [ElemType; 2],
) {
    let bh = cube_row(); // (b, h)
    let (heads, dh, s_len) = (queries.shape(1), queries.shape(3), slots.shape(2));
    if bh >= writes.len() {
        terminate!();
    }
    let (b, h) = (bh / heads, bh % heads);
    let own = usize::cast_from(writes[bh]);
    let q_start = row_start::<F>(queries, b, heads_at.queries + h, 0);
    let (key_start, value_start) = (row_start::<F>(keys, b, heads_at.keys + h, 0), row_start::<F>(values, b, heads_at.values + h, 0));
    let pool_stride = pool_keys.stride(0);
    let mut d = UNIT_POS_X as usize;
    while d < dh {
        pool_keys[own * pool_stride + d] = keys[key_start + d];
        pool_values[own * pool_stride + d] = values[value_start + d];
        d += CUBE_DIM_X as usize;
    }
    let slot_start = b * slots.stride(0) + h * slots.stride(1);
    let mut weights = Shared::<[F]>::new_slice(max_keys as usize);
    let mut local_max = F::min_value();
    let mut s = UNIT_POS_X as usize;
    while s < s_len {
        let slot = usize::cast_from(slots[slot_start + s * slots.stride(2)]);
        let product = if slot == own { dot::<F>(queries, q_start, keys, key_start, dh) } else { pool_dot::<F>(queries, q_start, pool_keys, slot * pool_stride, dh) };
        let score = product * F::cast_from(scale) + bias[bias_index::<F>(bias, b, h, 0, s)];
        weights[s] = score;
        if score > local_max {
            local_max = score;
        }
        s += CUBE_DIM_X as usize;
    }
    let sum = exponentiate::<F>(&mut weights, s_len, local_max, threads);
    let mut s = UNIT_POS_X as usize;
    while s < s_len {
        weights[s] = weights[s] / sum;
        s += CUBE_DIM_X as usize;
    }
    sync_cube();
    let out_start = out_row_start::<F>(out, b, h, 0);
    let mut d = UNIT_POS_X as usize;
    while d < dh {
        let mut acc = F::new(0.0);
        for s in 0..s_len {
            let slot = usize::cast_from(slots[slot_start + s * slots.stride(2)]);
            let value = if slot == own { values[value_start + d] } else { pool_values[slot * pool_stride + d] };
            acc += weights[s] * value;
        }
        out[out_start + d] = acc;
        d += CUBE_DIM_X as usize;
    }
}

/// [`dot`] against a row of a pool this kernel also writes.
#[cube]
fn pool_dot<F: Float>(a: &Tensor<F>, a_start: usize, pool: &mut Tensor<F>, pool_start: usize, dh: usize) -> F {
    let mut sum = F::new(0.0);
    for d in 0..dh {
        sum += a[a_start + d] * pool[pool_start + d];
    }
    sum
}

/// Attention of one new query per row (`queries` `[B, H, 1, Dh]`) over a KV cache's pools
/// (`[H·capacity, Dh]` each, key s of (b, h) at pool row `slots[b, h, s]`, `slots` `[B, H, S]`),
/// the step's own key and value (`current`, `[B, H, 1, Dh]`) among them at pool rows `writes`
/// (`[B·H]`), which are written there too. Returns the output with its heads merged
/// (`[B, 1, H·Dh]`) and the pools, written in place where nothing else holds them (else
/// copied first).
pub fn forward_step(queries: CubeTensor, current: KeysValues, pools: KeysValues, slots: CubeTensor, writes: CubeTensor, bias: CubeTensor, scale: f32) -> (CubeTensor, KeysValues) {
    let owned = |pool: CubeTensor| if pool.can_mut() && pool.is_contiguous() { pool } else { into_contiguous(pool.copy()) };
    let (pool_keys, pool_values) = (owned(pools.keys), owned(pools.values));
    let (slots, writes) = (into_contiguous(slots), into_contiguous(writes));
    let inputs = Inputs::new(super::Projections::Apart { queries, current });
    let [batch, heads, t_len, head_dim] = inputs.queries.shape().dims::<4>();
    assert_eq!(t_len, 1, "forward_step: one new token per row");
    assert_eq!(writes.shape().num_elements(), batch * heads, "forward_step: a write slot per (row, head)");
    let s_len = slots.shape()[2];
    let threads = query_row_threads(s_len, head_dim);
    let client = inputs.queries.client.clone();
    let merged = empty_like(&inputs.queries, Shape::new([batch, 1, heads * head_dim]));
    let out = split_heads(merged.clone(), heads);
    let dtypes = [elements(&inputs.queries), elements(&slots)];
    let heads_at: HeadsLaunch = inputs.heads_arg();
    step_kernel::launch(
        &client,
        row_cubes(batch * heads),
        CubeDim::new_1d(threads),
        inputs.queries.into_tensor_arg(),
        inputs.current.keys.into_tensor_arg(),
        inputs.current.values.into_tensor_arg(),
        pool_keys.clone().into_tensor_arg(),
        pool_values.clone().into_tensor_arg(),
        slots.into_tensor_arg(),
        writes.into_tensor_arg(),
        bias.into_tensor_arg(),
        out.into_tensor_arg(),
        heads_at,
        scale,
        threads,
        row_capacity(s_len),
        dtypes,
    );
    (merged, KeysValues { keys: pool_keys, values: pool_values })
}
