//! LayerNorm with a frozen scale and shift as one CPU op, held to Burn's: values and the input
//! gradient, on a strided input; a trainable scale keeps Burn's path. The GPU kernels are held
//! to the same comparison on wgpu (`shaders.rs`).

use burn::module::{Module, Param};
use burn::tensor::{Device, Distribution, Tensor};
use prefix_tune_model::nn::LayerNorm;
use prefix_tune_model::tensors::to_f32s;
use prefix_tune_model::testing::{device, max_abs_diff};

#[test]
fn frozen_layer_norm_equals_burns_with_the_input_gradient() {
    let _draws = prefix_tune_model::testing::random_draws();
    let (x, weight, bias) = matches_burns_layer_norm(&device().autodiff(), 40, 2e-6);

    // A trainable scale (fine-tuning) gets its gradient from Burn's path.
    let trainable = LayerNorm { weight: Param::from_tensor(weight.require_grad()), bias: Param::from_tensor(bias), eps: 1e-5 };
    let gradients = trainable.forward(x.clone().swap_dims(1, 2)).sum().backward();
    assert!(trainable.weight.val().grad(&gradients).is_some());
}

/// [`LayerNorm`] with a frozen scale and shift on `device` (with autodiff) against Burn's
/// `layer_norm`: values and the input gradient within `tolerance`, on a strided input `[3, 17,
/// dim]`, and without autodiff. Returns the input, scale and shift it drew.
pub fn matches_burns_layer_norm(device: &Device, dim: usize, tolerance: f32) -> (Tensor<3>, Tensor<1>, Tensor<1>) {
    device.seed(23);
    let x: Tensor<3> = Tensor::random([3, dim, 17], Distribution::Normal(0.5, 3.0), device).require_grad();
    let upstream: Tensor<3> = Tensor::random([3, 17, dim], Distribution::Uniform(-1.0, 1.0), device);
    let weight: Tensor<1> = Tensor::random([dim], Distribution::Uniform(0.5, 1.5), device);
    let bias: Tensor<1> = Tensor::random([dim], Distribution::Uniform(-0.5, 0.5), device);
    // Frozen, as the model's are (a parameter is trainable unless told otherwise).
    let norm = LayerNorm { weight: Param::from_tensor(weight.clone()), bias: Param::from_tensor(bias.clone()), eps: 1e-5 }.no_grad();
    let run = |f: &dyn Fn(Tensor<3>) -> Tensor<3>| {
        let y = f(x.clone().swap_dims(1, 2)); // [3, 17, dim], strided
        let grad = x.grad(&(y.clone() * upstream.clone()).sum().backward()).expect("tracked");
        (to_f32s(y), to_f32s(grad))
    };
    let (fused, fused_grad) = run(&|x| norm.forward(x));
    let (burn, burn_grad) = run(&|x| burn::tensor::module::layer_norm(x, weight.clone(), Some(bias.clone()), 1e-5));
    assert!(max_abs_diff(&fused, &burn) < tolerance, "values differ by {}", max_abs_diff(&fused, &burn));
    assert!(max_abs_diff(&fused_grad, &burn_grad) < tolerance, "gradients differ by {}", max_abs_diff(&fused_grad, &burn_grad));
    // Without autodiff (decoding, serving).
    let plain = to_f32s(norm.valid().forward(x.clone().inner().swap_dims(1, 2)));
    assert!(max_abs_diff(&plain, &burn) < tolerance);
    (x, weight, bias)
}
