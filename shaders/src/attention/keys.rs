//! The attention's backward pass per key row: `dK = dSᵀ · Q` and `dV = (P ∘ K · k)ᵀ · dO`, over
//! every batch row that reads the key (its own for the current keys, all of them for a front
//! the batch shares).

use cubecl::prelude::*;

use super::{out_row_start, row_start, Heads};
use crate::rows::cube_row;

/// Key row `s`'s gradients, `dK = Σ dSᵀ · Q` and `dV = Σ (P ∘ K · k)ᵀ · dO` over the batch rows
/// `b_first..b_end` of head `h` (the queries' head `q_h`), written to row `out_s` of batch row
/// `out_b` of the outputs, heads `k_h` and `v_h`: packed, both into `grad_keys`.
#[cube]
#[allow(clippy::too_many_arguments)]
fn key_row_grads<F: Float>(
    queries: &Tensor<F>,
    probs: &Tensor<F>,
    keep: &Tensor<F>,
    grad_out: &Tensor<F>,
    grad_scores: &Tensor<F>,
    b_first: usize,
    b_end: usize,
    h: usize,
    q_h: usize,
    s: usize,
    grad_keys: &mut Tensor<F>,
    grad_values: &mut Tensor<F>,
    out_b: usize,
    k_h: usize,
    v_h: usize,
    out_s: usize,
    keep_scale: f32,
    #[comptime] dropout: bool,
    #[comptime] packed: bool,
) {
    let (heads, t_len, s_len, dh) = (probs.shape(1), probs.shape(2), probs.shape(3), queries.shape(3));
    let dk_start = out_row_start::<F>(grad_keys, out_b, k_h, out_s);
    let dv_start = if comptime!(packed) { out_row_start::<F>(grad_keys, out_b, v_h, out_s) } else { out_row_start::<F>(grad_values, out_b, v_h, out_s) };
    let mut d = UNIT_POS_X as usize;
    while d < dh {
        let mut dk = F::new(0.0);
        let mut dv = F::new(0.0);
        for b in b_first..b_end {
            let bh = b * heads + h;
            let (q_start, q_stride) = (row_start::<F>(queries, b, q_h, 0), queries.stride(2));
            let (g_start, g_stride) = (row_start::<F>(grad_out, b, h, 0), grad_out.stride(2));
            for t in 0..t_len {
                let p = (bh * t_len + t) * s_len + s;
                let mut weight = probs[p];
                if comptime!(dropout) {
                    weight = weight * keep[p] * F::cast_from(keep_scale);
                }
                dk += grad_scores[p] * queries[q_start + t * q_stride + d];
                dv += weight * grad_out[g_start + t * g_stride + d];
            }
        }
        grad_keys[dk_start + d] = dk;
        if comptime!(packed) {
            grad_keys[dv_start + d] = dv;
        } else {
            grad_values[dv_start + d] = dv;
        }
        d += CUBE_DIM_X as usize;
    }
}

/// One cube per key row: first the rest's `B·H·(S − P)` rows, each read by its own batch row,
/// then the front's `B|1·H·P`, a shared front's summed over every batch row. `packed`: the
/// queries, keys and values are one projection (see [`Heads`]) and so is their gradient, whose
/// queries' part the rows kernel writes and whose keys and values' this one does, into
/// `grad_keys` (`grad_values` is then a stand-in).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub(super) fn backward_keys_kernel<F: Float>(
    queries: &Tensor<F>,               // [B, H, T, Dh], or the packed projection
    probs: &Tensor<F>,                 // [B, H, T, S]
    keep: &Tensor<F>,                  // [B, H, T, S], read with dropout
    grad_out: &Tensor<F>,              // [B, H, T, Dh]
    grad_scores: &Tensor<F>,           // [B, H, T, S]
    grad_keys: &mut Tensor<F>,         // [B, H, S − P, Dh], or the packed gradient
    grad_values: &mut Tensor<F>,       // [B, H, S − P, Dh]
    grad_front_keys: &mut Tensor<F>,   // [B|1, H, P, Dh], written when P > 0
    grad_front_values: &mut Tensor<F>, // [B|1, H, P, Dh]
    front_len: usize,
    heads_at: Heads,
    keep_scale: f32,
    #[comptime] dropout: bool,
    #[comptime] packed: bool,
    #[define(F)] _dtype: ElemType,
) {
    let row = cube_row();
    let (batch, heads, s_len) = (probs.shape(0), probs.shape(1), probs.shape(3));
    let rest_len = s_len - front_len;
    let rest_rows = batch * heads * rest_len;
    if row < rest_rows {
        let bh = row / rest_len;
        let (b, h, s) = (bh / heads, bh % heads, row % rest_len);
        let (q_h, k_h, v_h) = (heads_at.queries + h, heads_at.keys + h, heads_at.values + h);
        key_row_grads::<F>(queries, probs, keep, grad_out, grad_scores, b, b + 1, h, q_h, front_len + s, grad_keys, grad_values, b, k_h, v_h, s, keep_scale, dropout, packed);
    } else {
        let front_batch = grad_front_keys.shape(0);
        let row = row - rest_rows;
        if row >= front_batch * heads * front_len {
            terminate!();
        }
        let bh = row / front_len;
        let (b, h, s) = (bh / heads, bh % heads, row % front_len);
        let (mut first, mut end) = (b, b + 1);
        if front_batch == 1 {
            first = 0;
            end = batch;
        }
        key_row_grads::<F>(queries, probs, keep, grad_out, grad_scores, first, end, h, heads_at.queries + h, s, grad_front_keys, grad_front_values, b, h, h, s, keep_scale, dropout, false);
    }
}
