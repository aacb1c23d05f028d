//! Softmax attention with the prefix's keys in front: forward in one kernel, backward in two.
//!
//! The causal and padding mask reaches the kernel the way it reaches the tensor form
//! ([`prefix_tune_model::attention::composed`]): an additive bias `[B|1, H|1, T|1, S|1]` that
//! is 0 where a query may look and very negative where it may not (the prefix's columns always
//! visible). The keys and values come in two parts, read where each lies: the front (a prefix,
//! `[B|1, H, P, Dh]`, or nothing) and the rest (`[B, H, S − P, Dh]`); key row s is the front's
//! row s when s < P, else the rest's row s − P. The tensor form concatenates them, a copy of
//! every key and value per layer, and a prefix shared by the batch's rows (`[1, H, P, Dh]`) is
//! broadcast first, its gradient then summed over the batch by one more launch per key and
//! value; here the key kernel sums it. One cube per query row holds that row's scores in shared
//! memory: scores, bias, softmax, dropout and the product with the values in one pass. The
//! softmax (before dropout) is kept for the backward pass, `[B, H, T, S]`, as the tensor form
//! keeps it too.
//!
//! Queries, keys, values and the output's gradient are read through their strides: they are
//! views of the projections split into heads, and copying them into order cost a launch each,
//! forward and back. The output is written with its heads merged (`[B, T, H·Dh]`, as the output
//! projection reads it), the gradients of queries, keys and values as `[B, T, H, Dh]`. GPT-2's
//! queries, keys and values may also come packed in its one projection (`[B, T, 3·H, Dh]`,
//! [`Projections::Packed`]), read in place through head offsets ([`Heads`]), and their gradient
//! is then written packed too: one tensor for the projection's backward, where three slices of
//! it took a zero-padded copy each and two additions.
//!
//! A decoding step's front may instead be a KV cache's pools (`[H·capacity, Dh]`), each key read
//! through its pool row ([`forward_paged`]): the cache is never gathered into order. With one
//! new token per row, [`forward_step`] also writes that token's key and value into the pools.
//!
//! Backward, with `P` the softmax, `K` the dropout's keep mask and `k = 1/(1 − p)`:
//! - per query row: `dP = (dO · Vᵀ) ∘ K · k`, `dS = P ∘ (dP − rowsum(P ∘ dP)) · scale`, and
//!   `dQ = dS · K`;
//! - per key row: `dK = dSᵀ · Q` and `dV = (P ∘ K · k)ᵀ · dO`, over every batch row that reads
//!   it (one for the rest, all for a shared front).

use burn_backend::{Shape, TensorMetadata};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::{permute, reshape};
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use crate::rows::{cube_max, cube_row, cube_sum, elements, empty_like, row_cubes, row_threads, ROW_THREADS};

mod inputs;
mod keys;
mod step;
pub use inputs::{KeysValues, ProjectionGrads, Projections};
pub use step::forward_step;
use inputs::{front_args, Inputs};
use keys::backward_keys_kernel;

/// Threads of a cube in the per-key backward kernel: they stride over the head dimension
/// (64 in GPT-2 and BART), not over a long row.
const KEY_ROW_THREADS: u32 = 64;

/// The most keys a row may have: the scores of one row live in shared memory (32 KB of f32).
pub const MAX_KEYS: usize = 8192;

/// Where the bias of (b, h, t, s) is: a dimension of size 1 is broadcast.
#[cube]
fn bias_index<F: Float>(bias: &Tensor<F>, b: usize, h: usize, t: usize, s: usize) -> usize {
    let mut index = 0;
    if bias.shape(0) > 1 {
        index += b * bias.stride(0);
    }
    if bias.shape(1) > 1 {
        index += h * bias.stride(1);
    }
    if bias.shape(2) > 1 {
        index += t * bias.stride(2);
    }
    if bias.shape(3) > 1 {
        index += s * bias.stride(3);
    }
    index
}

/// Where each head's rows start in the queries, keys and values, counted in heads: 0 for tensors
/// of their own; 0, H and 2H for one projection `[B, T, 3·H, Dh]` read as `[B, 3·H, T, Dh]`
/// (GPT-2's), whose gradient the kernels then write packed the same way.
#[derive(CubeType, CubeLaunch)]
pub struct Heads {
    queries: usize,
    keys: usize,
    values: usize,
}

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn forward_kernel<F: Float, I: Numeric>(
    queries: &Tensor<F>,      // [B, H, T, Dh]
    front_keys: &Tensor<F>,   // [B|1, H, P, Dh], read when P > 0
    front_values: &Tensor<F>, // [B|1, H, P, Dh]
    keys: &Tensor<F>,         // [B, H, S − P, Dh]
    values: &Tensor<F>,       // [B, H, S − P, Dh]
    bias: &Tensor<F>,         // [B|1, H|1, T|1, S|1]
    keep: &Tensor<F>,         // [B, H, T, S], read with dropout
    slots: &Tensor<I>,        // [B, H, S], read when paged: the front's row of each key
    out: &mut Tensor<F>,      // [B, H, T, Dh]
    probs: &mut Tensor<F>,    // [B, H, T, S], the softmax before dropout
    front_len: usize,
    heads_at: Heads,
    scale: f32,
    keep_scale: f32,
    #[comptime] dropout: bool,
    #[comptime] paged: bool,
    #[comptime] threads: u32,
    #[comptime] max_keys: u32,
    #[define(F, I)] _dtypes: [ElemType; 2],
) {
    let row = cube_row(); // (b, h, t)
    let (heads, t_len, dh) = (probs.shape(1), probs.shape(2), queries.shape(3));
    let s_len = probs.shape(3);
    if row * s_len >= probs.len() {
        terminate!();
    }
    let t = row % t_len;
    let bh = row / t_len;
    let (b, h) = (bh / heads, bh % heads);
    let q_start = row_start::<F>(queries, b, heads_at.queries + h, t);
    let (out_start, p_start) = (out_row_start::<F>(out, b, h, t), row * s_len);
    let mut weights = Shared::<[F]>::new_slice(max_keys as usize);
    let mut local_max = F::min_value();
    let mut s = UNIT_POS_X as usize;
    while s < s_len {
        let score = key_dot::<F, I>(queries, q_start, front_keys, keys, slots, b, h, heads_at.keys + h, s, front_len, dh, paged) * F::cast_from(scale) + bias[bias_index::<F>(bias, b, h, t, s)];
        weights[s] = score;
        if score > local_max {
            local_max = score;
        }
        s += CUBE_DIM_X as usize;
    }
    let sum = exponentiate::<F>(&mut weights, s_len, local_max, threads);
    let mut s = UNIT_POS_X as usize;
    while s < s_len {
        let p = weights[s] / sum;
        probs[p_start + s] = p;
        if comptime!(dropout) {
            weights[s] = p * keep[p_start + s] * F::cast_from(keep_scale);
        } else {
            weights[s] = p;
        }
        s += CUBE_DIM_X as usize;
    }
    sync_cube();
    weighted_rows::<F, I>(&weights, front_values, values, slots, b, h, heads_at.values + h, front_len, s_len, dh, out, out_start, paged);
}

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn backward_rows_kernel<F: Float>(
    front_keys: &Tensor<F>,        // [B|1, H, P, Dh], read when P > 0
    front_values: &Tensor<F>,      // [B|1, H, P, Dh]
    keys: &Tensor<F>,              // [B, H, S − P, Dh]
    values: &Tensor<F>,            // [B, H, S − P, Dh]
    probs: &Tensor<F>,             // [B, H, T, S]
    keep: &Tensor<F>,              // [B, H, T, S], read with dropout
    grad_out: &Tensor<F>,          // [B, H, T, Dh]
    grad_queries: &mut Tensor<F>,  // [B, H, T, Dh]
    grad_scores: &mut Tensor<F>,   // [B, H, T, S], dS · scale
    front_len: usize,
    heads_at: Heads,
    scale: f32,
    keep_scale: f32,
    #[comptime] dropout: bool,
    #[comptime] threads: u32,
    #[comptime] max_keys: u32,
    #[define(F)] _dtype: ElemType,
) {
    let row = cube_row(); // (b, h, t)
    let (heads, t_len, s_len, dh) = (probs.shape(1), probs.shape(2), probs.shape(3), keys.shape(3));
    if row * s_len >= probs.len() {
        terminate!();
    }
    let t = row % t_len;
    let bh = row / t_len;
    let (b, h) = (bh / heads, bh % heads);
    let out_grad_start = row_start::<F>(grad_out, b, h, t);
    let p_start = row * s_len;
    let mut row_grad = Shared::<[F]>::new_slice(max_keys as usize);
    let mut local = F::new(0.0);
    let mut s = UNIT_POS_X as usize;
    while s < s_len {
        let mut grad_p = key_dot::<F, F>(grad_out, out_grad_start, front_values, values, probs, b, h, heads_at.values + h, s, front_len, dh, false);
        if comptime!(dropout) {
            grad_p = grad_p * keep[p_start + s] * F::cast_from(keep_scale);
        }
        row_grad[s] = grad_p;
        local += probs[p_start + s] * grad_p;
        s += CUBE_DIM_X as usize;
    }
    let row_dot = cube_sum::<F>(local, threads);
    let mut s = UNIT_POS_X as usize;
    while s < s_len {
        let ds = probs[p_start + s] * (row_grad[s] - row_dot) * F::cast_from(scale);
        grad_scores[p_start + s] = ds;
        row_grad[s] = ds;
        s += CUBE_DIM_X as usize;
    }
    sync_cube();
    let query_grad_start = out_row_start::<F>(grad_queries, b, heads_at.queries + h, t);
    weighted_rows::<F, F>(&row_grad, front_keys, keys, probs, b, h, heads_at.keys + h, front_len, s_len, dh, grad_queries, query_grad_start, false);
}

/// A row's scores in `weights` (`s_len` of them; this thread's largest `local_max`) made
/// `exp(score − max)` in place; returns their sum over the row, the softmax's denominator.
#[cube]
fn exponentiate<F: Float>(weights: &mut Shared<[F]>, s_len: usize, local_max: F, #[comptime] threads: u32) -> F {
    let max = cube_max::<F>(local_max, threads);
    let mut local_sum = F::new(0.0);
    let mut s = UNIT_POS_X as usize;
    while s < s_len {
        let e = (weights[s] - max).exp();
        weights[s] = e;
        local_sum += e;
        s += CUBE_DIM_X as usize;
    }
    cube_sum::<F>(local_sum, threads)
}

/// The batch row of a front `[B|1, H, P, Dh]` that batch row `b` reads: a front of one row is
/// shared by every row.
#[cube]
fn front_row<F: Float>(front: &Tensor<F>, b: usize) -> usize {
    if front.shape(0) == 1 { 0usize } else { b }
}

/// Where key row s of (b, h) starts in the front: paged, at the pool row `slots[b, h, s]` of a
/// pool `[H·capacity, Dh]` (a KV cache's keys or values, read where they lie); else at row s of
/// (b, h) of a front `[B|1, H, P, Dh]`.
#[cube]
fn front_start<F: Float, I: Numeric>(front: &Tensor<F>, slots: &Tensor<I>, b: usize, h: usize, s: usize, #[comptime] paged: bool) -> usize {
    if comptime!(paged) {
        usize::cast_from(slots[b * slots.stride(0) + h * slots.stride(1) + s * slots.stride(2)]) * front.stride(0)
    } else {
        row_start::<F>(front, front_row::<F>(front, b), h, s)
    }
}

/// `a[a_start..+dh] · key row s` of (b, h): the front's row s when s < `front_len`
/// ([`front_start`]), else row s − `front_len` of the rest's head `rest_h`. A query row against
/// a key, or an output gradient against a value.
#[cube]
#[allow(clippy::too_many_arguments)]
fn key_dot<F: Float, I: Numeric>(a: &Tensor<F>, a_start: usize, front: &Tensor<F>, rest: &Tensor<F>, slots: &Tensor<I>, b: usize, h: usize, rest_h: usize, s: usize, front_len: usize, dh: usize, #[comptime] paged: bool) -> F {
    if s < front_len {
        dot::<F>(a, a_start, front, front_start::<F, I>(front, slots, b, h, s, paged), dh)
    } else {
        dot::<F>(a, a_start, rest, row_start::<F>(rest, b, rest_h, s - front_len), dh)
    }
}

/// Where row `x` of head `h` of batch row `b` of a `[B, H, X, Dh]` tensor starts, whatever its
/// strides: queries, keys and values are views of the projections (`[B, X, H, Dh]` swapped),
/// read in place. Its `Dh` values are neighbours (the host makes sure of it).
#[cube]
fn row_start<F: Float>(tensor: &Tensor<F>, b: usize, h: usize, x: usize) -> usize {
    b * tensor.stride(0) + h * tensor.stride(1) + x * tensor.stride(2)
}

/// [`row_start`] in an output.
#[cube]
fn out_row_start<F: Float>(tensor: &mut Tensor<F>, b: usize, h: usize, x: usize) -> usize {
    b * tensor.stride(0) + h * tensor.stride(1) + x * tensor.stride(2)
}

/// `Σ_d a[a_start + d] · b[b_start + d]` over `dh` values: a query (or output gradient) row
/// against one key (or value) row.
#[cube]
fn dot<F: Float>(a: &Tensor<F>, a_start: usize, b: &Tensor<F>, b_start: usize, dh: usize) -> F {
    let mut sum = F::new(0.0);
    for d in 0..dh {
        sum += a[a_start + d] * b[b_start + d];
    }
    sum
}

/// `out[out_start..+dh] = weights[..s_len] · rows`, the `s_len` key (or value) rows of (b, h)
/// being the front's first `front_len` ([`front_start`]) then the rest's (its head `rest_h`),
/// each thread taking every `CUBE_DIM_X`-th column: probabilities times values forward, score
/// gradients times keys back. One sum in key order, as over the concatenated rows.
#[cube]
#[allow(clippy::too_many_arguments)]
fn weighted_rows<F: Float, I: Numeric>(
    weights: &Shared<[F]>,
    front: &Tensor<F>,
    rest: &Tensor<F>,
    slots: &Tensor<I>,
    b: usize,
    h: usize,
    rest_h: usize,
    front_len: usize,
    s_len: usize,
    dh: usize,
    out: &mut Tensor<F>,
    out_start: usize,
    #[comptime] paged: bool,
) {
    let (rest_start, rest_stride) = (row_start::<F>(rest, b, rest_h, 0), rest.stride(2));
    let mut d = UNIT_POS_X as usize;
    while d < dh {
        let mut acc = F::new(0.0);
        for s in 0..front_len {
            acc += weights[s] * front[front_start::<F, I>(front, slots, b, h, s, paged) + d];
        }
        for s in front_len..s_len {
            acc += weights[s] * rest[rest_start + (s - front_len) * rest_stride + d];
        }
        out[out_start + d] = acc;
        d += CUBE_DIM_X as usize;
    }
}

/// Shared memory for a row of `keys` scores: a power of two, so few variants compile.
fn row_capacity(keys: usize) -> u32 {
    assert!(keys <= MAX_KEYS, "attention kernel: {keys} keys exceed {MAX_KEYS}");
    keys.next_power_of_two().max(ROW_THREADS as usize) as u32
}

/// Threads of a per-query cube: they stride over the row's keys, then over the head dimension.
fn query_row_threads(keys: usize, head_dim: usize) -> u32 {
    row_threads(keys.max(head_dim))
}

/// `[B, H, X, Dh]` as the kernels read it: any strides, with each row's `Dh` values neighbours
/// (a view of a projection, split into heads and swapped, is read where it is).
fn rows_in_place(tensor: CubeTensor) -> CubeTensor {
    if tensor.meta.strides()[3] == 1 { tensor } else { into_contiguous(tensor) }
}

/// An uninitialised `[B, H, X, Dh]` output that lies in memory as `[B, X, H, Dh]`: the
/// caller swaps it back to the projection's layout and merges the heads (`[B, X, D]`) for free,
/// where a contiguous `[B, H, X, Dh]` would be copied.
fn heads_interleaved(like: &CubeTensor, [batch, heads, rows, head_dim]: [usize; 4]) -> CubeTensor {
    split_heads(empty_like(like, Shape::new([batch, rows, heads * head_dim])), heads)
}

/// `[B, X, H·Dh]` seen as `[B, H, X, Dh]`, in place where its rows are contiguous.
fn split_heads(merged: CubeTensor, heads: usize) -> CubeTensor {
    let [batch, rows, width] = merged.shape().dims::<3>();
    permute(reshape(merged, Shape::new([batch, rows, heads, width / heads])), &[0, 2, 1, 3])
}

/// The keep mask as the kernels read it: contiguous with dropout; without, it is never read and
/// may be any stand-in (the caller passes the bias), left as it is.
fn contiguous_with_dropout(keep: CubeTensor, dropout: f64) -> CubeTensor {
    if dropout > 0.0 { into_contiguous(keep) } else { keep }
}

/// `(softmax(Q·Kᵀ·scale + bias) ∘ keep · 1/(1 − p)) · V` over the keys and values `front`
/// then the current ones, its heads merged (`[B, T, H·Dh]`: the output projection reads it as
/// it lies), and the softmax before dropout. `keep` is read only when `dropout > 0`.
pub fn forward(projections: Projections, front: Option<KeysValues>, bias: CubeTensor, keep: CubeTensor, scale: f32, dropout: f64) -> (CubeTensor, CubeTensor) {
    let inputs = Inputs::new(projections);
    let (front, front_len) = front_args(front, &inputs.current);
    let s_len = front_len + inputs.current.rows();
    launch_forward(inputs, (front, front_len, None), s_len, bias, keep, scale, dropout)
}

/// Decoding's attention over a KV cache's pools (`[H·capacity, Dh]` each) read where they lie:
/// key s of query row (b, h, ·) is pool row `slots[b, h, s]` (`slots` `[B, H, S]`), where
/// gathering every row's keys and values first took two launches and a copy of the cache per
/// layer and step. Its heads merged, `[B, T, H·Dh]`; no dropout, no gradient.
pub fn forward_paged(queries: CubeTensor, pools: KeysValues, slots: CubeTensor, bias: CubeTensor, scale: f32) -> CubeTensor {
    let slots = into_contiguous(slots);
    let s_len = slots.shape()[2];
    let keep = bias.clone(); // not read without dropout
    launch_forward(Inputs::queries_only(queries), (pools, s_len, Some(slots)), s_len, bias, keep, scale, 0.0).0
}

/// The forward kernel over `inputs` after the front (its keys and values, how many keys it
/// holds, and with `slots` the pool row of each), `s_len` keys in all.
#[allow(clippy::too_many_arguments)]
fn launch_forward(inputs: Inputs, (front, front_len, slots): (KeysValues, usize, Option<CubeTensor>), s_len: usize, bias: CubeTensor, keep: CubeTensor, scale: f32, dropout: f64) -> (CubeTensor, CubeTensor) {
    let keep = contiguous_with_dropout(keep, dropout);
    let [batch, _, t_len, head_dim] = inputs.queries.shape().dims::<4>();
    let heads = inputs.heads;
    let threads = query_row_threads(s_len, head_dim);
    let client = inputs.queries.client.clone();
    let merged = empty_like(&inputs.queries, Shape::new([batch, t_len, heads * head_dim]));
    let out = split_heads(merged.clone(), heads);
    let probs = empty_like(&inputs.queries, Shape::new([batch, heads, t_len, s_len]));
    let paged = slots.is_some();
    let slots = slots.unwrap_or_else(|| bias.clone()); // unpaged, a stand-in never read
    let dtypes = [elements(&inputs.queries), elements(&slots)];
    let heads_at = inputs.heads_arg();
    forward_kernel::launch(
        &client,
        row_cubes(batch * heads * t_len),
        CubeDim::new_1d(threads),
        inputs.queries.into_tensor_arg(),
        front.keys.into_tensor_arg(),
        front.values.into_tensor_arg(),
        inputs.current.keys.into_tensor_arg(),
        inputs.current.values.into_tensor_arg(),
        bias.into_tensor_arg(),
        keep.into_tensor_arg(),
        slots.into_tensor_arg(),
        out.into_tensor_arg(),
        probs.clone().into_tensor_arg(),
        front_len,
        heads_at,
        scale,
        (1.0 / (1.0 - dropout)) as f32,
        dropout > 0.0,
        paged,
        threads,
        row_capacity(s_len),
        dtypes,
    );
    (merged, probs)
}

/// The gradients of [`forward`]'s output in the queries and current keys and values, laid out
/// as they came, and in the front's keys and values (summed over the batch where one front row
/// serves them all; `None` without a front), from the upstream gradient `grad_out`
/// (`[B, T, H·Dh]`) and what the forward pass kept (`probs`, and `keep` with dropout).
#[allow(clippy::too_many_arguments)]
pub fn backward(projections: Projections, front: Option<KeysValues>, probs: CubeTensor, keep: CubeTensor, grad_out: CubeTensor, scale: f32, dropout: f64) -> (ProjectionGrads, Option<KeysValues>) {
    let inputs = Inputs::new(projections);
    let has_front = front.is_some();
    let grad_out = rows_in_place(split_heads(grad_out, inputs.heads));
    let (front, front_len) = front_args(front, &inputs.current);
    let probs = into_contiguous(probs);
    let keep = contiguous_with_dropout(keep, dropout);
    let [batch, heads, t_len, s_len] = probs.shape().dims::<4>();
    let head_dim = inputs.queries.shape()[3];
    let threads = query_row_threads(s_len, head_dim);
    let client = inputs.queries.client.clone();
    let grad_scores = empty_like(&inputs.queries, probs.shape());
    let (grads, [grad_queries, grad_keys, grad_values]) = inputs.gradients();
    // Without a front its gradients are never written: one-element stand-ins.
    let grad_front = match has_front {
        true => KeysValues { keys: heads_interleaved(&grad_out, front.keys.shape().dims::<4>()), values: heads_interleaved(&grad_out, front.keys.shape().dims::<4>()) },
        false => KeysValues { keys: empty_like(&grad_out, Shape::new([1, 1, 1, 1])), values: empty_like(&grad_out, Shape::new([1, 1, 1, 1])) },
    };
    let front_rows = if has_front { front.keys.shape()[0] * heads * front_len } else { 0 };
    let (dtype, packed) = (elements(&inputs.queries), inputs.packed());
    let keep_scale = (1.0 / (1.0 - dropout)) as f32;
    backward_rows_kernel::launch(
        &client,
        row_cubes(batch * heads * t_len),
        CubeDim::new_1d(threads),
        front.keys.into_tensor_arg(),
        front.values.into_tensor_arg(),
        inputs.current.keys.clone().into_tensor_arg(),
        inputs.current.values.clone().into_tensor_arg(),
        probs.clone().into_tensor_arg(),
        keep.clone().into_tensor_arg(),
        grad_out.clone().into_tensor_arg(),
        grad_queries.into_tensor_arg(),
        grad_scores.clone().into_tensor_arg(),
        front_len,
        inputs.heads_arg(),
        scale,
        keep_scale,
        dropout > 0.0,
        threads,
        row_capacity(s_len),
        dtype,
    );
    backward_keys_kernel::launch(
        &client,
        row_cubes(batch * heads * (s_len - front_len) + front_rows),
        CubeDim::new_1d(KEY_ROW_THREADS),
        inputs.queries.clone().into_tensor_arg(),
        probs.into_tensor_arg(),
        keep.into_tensor_arg(),
        grad_out.into_tensor_arg(),
        grad_scores.into_tensor_arg(),
        grad_keys.into_tensor_arg(),
        grad_values.into_tensor_arg(),
        grad_front.keys.clone().into_tensor_arg(),
        grad_front.values.clone().into_tensor_arg(),
        front_len,
        inputs.heads_arg(),
        keep_scale,
        dropout > 0.0,
        packed,
        dtype,
    );
    (grads, has_front.then_some(grad_front))
}
