//! The fused cross-entropy of the CPU backend, held to log-softmax + gather: values and
//! gradients, on a strided input, with and without autodiff. The GPU kernel is held to the
//! same comparison on wgpu (`shaders.rs`).

use burn::tensor::{Device, Distribution, Tensor};
use prefix_tune_model::cross_entropy;
use prefix_tune_model::tensors::to_f32s;
use prefix_tune_model::testing::{device, max_abs_diff};

#[test]
fn fused_cross_entropy_equals_log_softmax_and_gather_with_gradients() {
    let _draws = prefix_tune_model::testing::random_draws();
    matches_log_softmax_and_gather(&device().autodiff(), 1e-5);
}

/// [`cross_entropy::nll`] on `device` (with autodiff) against [`cross_entropy::composed`]: values
/// within `value_tolerance`, gradients within 4e-6, and without autodiff.
pub fn matches_log_softmax_and_gather(device: &Device, value_tolerance: f32) {
    device.seed(17);
    // Logits of a trained model reach tens; a vocabulary that is not a multiple of 16 (nor of a
    // GPU row's 256 threads).
    let logits: Tensor<2> = Tensor::random([1003, 9], Distribution::Normal(0.0, 8.0), device).require_grad();
    let targets: Vec<usize> = (0..9).map(|r| (r * 389 + 5) % 1003).collect();
    let weights: Tensor<1> = Tensor::random([9], Distribution::Uniform(0.5, 2.0), device);
    let run = |f: fn(Tensor<2>, &[usize]) -> Tensor<1>| {
        let nll = f(logits.clone().transpose(), &targets); // a strided view: [9, 1003]
        let grad = logits.grad(&(nll.clone() * weights.clone()).sum().backward()).expect("tracked");
        (to_f32s(nll), to_f32s(grad))
    };
    let (fused, fused_grad) = run(cross_entropy::nll);
    let (composed, composed_grad) = run(cross_entropy::composed);
    assert!(max_abs_diff(&fused, &composed) < value_tolerance, "values differ by {}", max_abs_diff(&fused, &composed));
    // Both are f32: e^(x − lse) has a few ulp of rounding either way, times weights up to 2.
    assert!(max_abs_diff(&fused_grad, &composed_grad) < 4e-6, "gradients differ by {}", max_abs_diff(&fused_grad, &composed_grad));
    assert!(fused.iter().all(|&v| v > 0.0) && fused.iter().cloned().fold(0.0, f32::max) > 5.0);
    let plain = to_f32s(cross_entropy::nll(logits.inner().transpose(), &targets));
    assert!(max_abs_diff(&plain, &composed) < value_tolerance);
}
