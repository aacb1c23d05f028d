//! Attention as one CPU op under autodiff, held to the tensor form: values and the gradients of
//! queries, keys and values, on strided inputs, with a padding-and-causal bias, with and
//! without dropout (the same seed draws the same mask either way).

use burn::tensor::{Distribution, Tensor};
use prefix_tune_model::attention::{attend, attention_bias, composed, KeyValue};
use prefix_tune_model::dropout::Site;
use prefix_tune_model::tensors::to_f32s;
use prefix_tune_model::testing::{device, max_abs_diff};

#[test]
fn fused_attention_equals_the_tensor_form_with_its_gradients() {
    let _draws = prefix_tune_model::testing::random_draws();
    let device = device().autodiff();
    // batch 2, heads 3, 4 new tokens after 7 earlier keys (a prefix), head size 5.
    let (batch, heads, t, s, dh) = (2, 3, 4, 11, 5);
    device.seed(5);
    let random = |shape: [usize; 4]| Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.5), &device).require_grad();
    // Made [B, H, ·, Dh] by a transpose, so the op sees strided inputs as attention does.
    let (q, k, v) = (random([batch, t, heads, dh]), random([batch, s, heads, dh]), random([batch, s, heads, dh]));
    let upstream = Tensor::<3>::random([batch, t, heads * dh], Distribution::Uniform(-1.0, 1.0), &device);
    let mut key_mask = vec![vec![1.0f32; s]; batch];
    key_mask[1][8] = 0.0; // a padded key in the second row
    let bias = attention_bias(&key_mask, t, true, &device);
    for dropout in [0.0, 0.3] {
        let run = |f: &dyn Fn(Tensor<4>, Tensor<4>, Tensor<4>) -> Tensor<3>| {
            device.seed(9);
            let out = f(q.clone().swap_dims(1, 2), k.clone().swap_dims(1, 2), v.clone().swap_dims(1, 2));
            let grads = (out.clone() * upstream.clone()).sum().backward();
            let grad = |x: &Tensor<4>| to_f32s(x.grad(&grads).expect("tracked"));
            (to_f32s(out), [grad(&q), grad(&k), grad(&v)])
        };
        let scale = 1.0 / (dh as f32).sqrt();
        let (fused, fused_grads) = run(&|q, k, v| attend(q, KeyValue { keys: k, values: v }.into(), Some(bias.clone()), scale, Site::rate(dropout)));
        let (tensor_form, tensor_grads) = run(&|q, k, v| composed(q, k, v, Some(bias.clone()), scale, Site::rate(dropout)));
        assert!(max_abs_diff(&fused, &tensor_form) < 2e-6, "dropout {dropout}: values differ by {}", max_abs_diff(&fused, &tensor_form));
        for (name, (a, b)) in ["queries", "keys", "values"].iter().zip(fused_grads.iter().zip(&tensor_grads)) {
            assert!(max_abs_diff(a, b) < 5e-6, "dropout {dropout}: {name}' gradients differ by {}", max_abs_diff(a, b));
        }
        if dropout > 0.0 {
            let undropped = run(&|q, k, v| composed(q, k, v, Some(bias.clone()), scale, Site::rate(0.0))).0;
            assert!(max_abs_diff(&fused, &undropped) > 1e-2, "dropout changed nothing");
        }
    }
}

/// Dropout on the CPU draws its mask on all cores from Burn's seeded generator: the device's
/// seed fixes it, `1 − p` of the values are kept and scaled by `1 / (1 − p)`, and the gradient
/// passes through the same mask.
#[test]
fn dropout_keeps_one_minus_p_scaled_and_follows_the_seed() {
    let _draws = prefix_tune_model::testing::random_draws();
    let device = device().autodiff();
    let p = 0.25;
    let x = Tensor::<3>::ones([4, 50, 300], &device).require_grad();
    let run = |seed: u64| {
        device.seed(seed);
        let y = Site::rate(p).apply(x.clone());
        let grad = x.grad(&(y.clone() * 3.0).sum().backward()).expect("tracked");
        (to_f32s(y), to_f32s(grad))
    };
    let (y, grad) = run(11);
    let kept = y.iter().filter(|&&v| v != 0.0).count() as f64 / y.len() as f64;
    assert!((kept - (1.0 - p)).abs() < 0.01, "kept {kept}");
    assert!(y.iter().all(|&v| v == 0.0 || (v - 1.0 / (1.0 - p) as f32).abs() < 1e-6));
    assert!(y.iter().zip(&grad).all(|(&v, &g)| (g - 3.0 * v).abs() < 1e-5), "the gradient takes the same mask");
    assert_eq!(run(11).0, y, "the same seed draws the same mask");
    assert_ne!(run(12).0, y, "another seed draws another mask");
}

/// The bias built on the device equals the rule it states, entry by entry: ragged rows (a
/// batch of KV-cache rows, end-padded), a padded key, several new tokens, causal and not.
#[test]
fn the_attention_bias_built_on_the_device_follows_its_rule() {
    let device = device();
    let masked = prefix_tune_model::attention::MASKED;
    let key_mask = vec![vec![1.0, 1.0, 0.0, 1.0, 1.0, 1.0], vec![1.0, 1.0, 1.0], vec![0.0, 1.0, 1.0, 1.0, 1.0]];
    let (new_len, total) = (3, 6);
    for causal in [true, false] {
        let bias = to_f32s(attention_bias(&key_mask, new_len, causal, &device));
        assert_eq!(bias.len(), key_mask.len() * new_len * total);
        for (b, row) in key_mask.iter().enumerate() {
            let past = row.len() - new_len;
            for t in 0..new_len {
                for s in 0..total {
                    let seen = row.get(s).is_some_and(|&m| m > 0.5) && (!causal || s <= past + t);
                    assert_eq!(bias[(b * new_len + t) * total + s], if seen { 0.0 } else { masked }, "causal {causal}, row {b}, t {t}, key {s}");
                }
            }
        }
    }
}
