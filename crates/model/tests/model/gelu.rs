//! GPT-2's activation as one fused op on the CPU backend, held to its tensor form: values and
//! gradients, on a strided (transposed) input too.

use burn::tensor::{Distribution, Tensor};
use prefix_tune_model::gelu;
use prefix_tune_model::tensors::to_f32s;
use prefix_tune_model::testing::{device, max_abs_diff};

#[test]
fn fused_gelu_equals_its_tensor_form_with_gradients() {
    let _draws = prefix_tune_model::testing::random_draws();
    let device = device().autodiff();
    // Activations of a real model span a few units; the tails check saturation.
    let x: Tensor<3> = Tensor::random([3, 17, 40], Distribution::Normal(0.0, 3.0), &device).require_grad();
    let upstream: Tensor<3> = Tensor::random([3, 40, 17], Distribution::Uniform(-1.0, 1.0), &device);
    let run = |f: fn(Tensor<3>) -> Tensor<3>| {
        let y = f(x.clone().swap_dims(1, 2)); // a strided view, as attention and reshapes leave them
        let grad = x.grad(&(y.clone() * upstream.clone()).sum().backward()).expect("tracked");
        (to_f32s(y), to_f32s(grad))
    };
    let (fused, fused_grad) = run(gelu::gelu_tanh);
    let (composed, composed_grad) = run(gelu::composed);
    assert!(max_abs_diff(&fused, &composed) < 2e-6, "values differ by {}", max_abs_diff(&fused, &composed));
    assert!(max_abs_diff(&fused_grad, &composed_grad) < 4e-6, "gradients differ by {}", max_abs_diff(&fused_grad, &composed_grad));
    // Without autodiff (decoding) it is the same function.
    let plain = to_f32s(gelu::gelu_tanh(x.clone().inner().swap_dims(1, 2)));
    assert!(max_abs_diff(&plain, &composed) < 2e-6);
}
