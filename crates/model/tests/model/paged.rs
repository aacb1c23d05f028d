//! Decoding's attention over a KV cache read where it lies (`Memory::Paged`): each key through
//! its pool row, against the keys gathered first and the tensor form.

use burn::tensor::{Device, Distribution, Tensor};
use prefix_tune_model::attention::{self, attend, attention_bias, composed, KeyValue, Memory, Pages};
use prefix_tune_model::dropout::Site;
use prefix_tune_model::tensors::{ints, to_f32s};
use prefix_tune_model::testing::max_abs_diff;

/// On `device`, a GPU's without autodiff (run by the shader tests' child): rows of different
/// lengths at scattered slots, padded at their ends with slots whose keys are huge (a kernel
/// that read them unmasked, or read the wrong row, would be far off), one and three new tokens.
pub fn on_gpu(device: &Device) {
    let (heads, head_dim, capacity, lengths) = (3, 5, 16, [7usize, 4, 9]);
    let (batch, longest) = (lengths.len(), 9);
    let normal = Distribution::Normal(0.0, 1.0);
    device.seed(59);
    let pool = || Tensor::<2>::random([heads * capacity, head_dim], normal, device);
    let (keys, values) = (pool(), pool());
    // Row b's key s sits in slot 1 + (5·b + 3·s) mod 15 of every head; slot 0 holds 1e4s, read
    // by nothing but padding.
    let slot = |b: usize, s: usize| 1 + (5 * b + 3 * s) % (capacity - 1);
    let pad = 0;
    let padding = Tensor::<2>::full([heads, head_dim], 1e4, device);
    let pad_rows = ints((0..heads).map(|h| (h * capacity + pad) as i64).collect(), [heads], device);
    let (keys, values) = (keys.select_assign(0, pad_rows.clone(), padding.clone(), burn::tensor::IndexingUpdateOp::Assign), values.select_assign(0, pad_rows, padding, burn::tensor::IndexingUpdateOp::Assign));
    let rows: Vec<i64> = (0..batch)
        .flat_map(|b| (0..heads).flat_map(move |h| (0..longest).map(move |s| (h * capacity + if s < lengths[b] { slot(b, s) } else { pad }) as i64)))
        .collect();
    let pages = Pages { keys, values, rows: ints(rows, [batch, heads, longest], device) };
    let key_mask: Vec<Vec<f32>> = lengths.iter().map(|&len| (0..longest).map(|s| if s < len { 1.0 } else { 0.0 }).collect()).collect();
    for t in [1, 3] {
        let queries = Tensor::<4>::random([batch, t, heads, head_dim], normal, device).swap_dims(1, 2); // [B, H, T, Dh], strided
        let bias = attention_bias(&key_mask, t, true, device);
        let scale = 1.0 / (head_dim as f32).sqrt();
        let paged = attend(queries.clone(), Memory::Paged(pages.clone()), Some(bias.clone()), scale, Site::rate(0.0));
        let KeyValue { keys, values } = pages.clone().gathered();
        let tensor_form = composed(queries, keys, values, Some(bias), scale, Site::rate(0.0));
        let (paged, tensor_form) = (to_f32s(paged), to_f32s(tensor_form));
        assert!(max_abs_diff(&paged, &tensor_form) < 2e-5, "paged attention differs by {} (T {t})", max_abs_diff(&paged, &tensor_form));
        assert!(paged.iter().all(|v| v.abs() < 100.0), "a padding key was read (T {t})");
    }
    // A decoding step that writes its own keys and values as it attends
    // (`attention::attend_written`: one kernel on a GPU, `forward_step`): each row's last real
    // key is the step's own, at the slot it is written to. The same bits as the write and the
    // paged attention apart, the same pools after, and the pools it was given (still held here)
    // left as they were.
    let queries = Tensor::<4>::random([batch, 1, heads, head_dim], normal, device).swap_dims(1, 2); // [B, H, 1, Dh]
    let current = KeyValue {
        keys: Tensor::<4>::random([batch, 1, heads, head_dim], normal, device).swap_dims(1, 2),
        values: Tensor::<4>::random([batch, 1, heads, head_dim], normal, device).swap_dims(1, 2),
    };
    let writes: Vec<i64> = (0..batch).flat_map(|b| (0..heads).map(move |h| (h * capacity + slot(b, lengths[b] - 1)) as i64)).collect();
    let writes = ints(writes, [batch * heads], device);
    let bias = attention_bias(&key_mask, 1, true, device);
    let scale = 1.0 / (head_dim as f32).sqrt();
    let before = to_f32s(pages.keys.clone());
    let pools = (pages.keys.clone(), pages.values.clone());
    let (out, (keys, values)) = attention::attend_written(queries.clone(), current.clone(), pools.clone(), pages.rows.clone(), &writes, Some(bias.clone()), scale, Site::rate(0.0));
    let (written_keys, written_values) = prefix_tune_model::kv_write::write(pools, &writes, current);
    let apart = attend(queries, Memory::Paged(Pages { keys: written_keys.clone(), values: written_values.clone(), rows: pages.rows.clone() }), Some(bias), scale, Site::rate(0.0));
    assert_eq!(to_f32s(out), to_f32s(apart), "the step's kernel gives the write and the paged attention's bits");
    assert_eq!((to_f32s(keys), to_f32s(values)), (to_f32s(written_keys), to_f32s(written_values)), "the step's keys and values written where the write puts them");
    assert_eq!(to_f32s(pages.keys), before, "pools another tensor holds are left as they were");
    println!("paged attention = gathered keys and the tensor form on wgpu (rows of 7, 4 and 9 keys at scattered slots, 1 and 3 new tokens); a step writing its own keys as it attends = the write, then the paged attention, bit for bit");
}
