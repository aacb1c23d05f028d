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

/// Exact GELU (`gelu`, BART's activation) and its gradient against the formula in f64, over
/// [−6, 6] in steps of 0.01, on the backend the tests run on (`parity_with_hf_holds_on_wgpu`
/// runs it on wgpu). Burn differentiates `gelu` exactly only on the CPU backend; elsewhere its
/// backward pass is the tanh approximation's derivative, up to ~1e-3 off, far outside the
/// 1e-6 allowed here.
#[test]
fn exact_gelu_and_its_gradient_equal_the_formula() {
    use std::f64::consts::{PI, SQRT_2};
    let device = device().autodiff();
    let xs: Vec<f32> = (0..=1200).map(|i| i as f32 / 100.0 - 6.0).collect();
    let x: Tensor<1> = prefix_tune_model::tensors::floats(xs.clone(), [xs.len()], &device).require_grad();
    let y = gelu::gelu_erf(x.clone());
    let slopes = to_f32s(x.grad(&y.clone().sum().backward()).expect("tracked"));
    let (values, mut worst) = (to_f32s(y), (0.0f64, 0.0f64));
    for ((&x, &value), &slope) in xs.iter().zip(&values).zip(&slopes) {
        let x = x as f64;
        let cdf = 0.5 * (1.0 + libm::erf(x / SQRT_2));
        let exact = (x * cdf, cdf + x * (-0.5 * x * x).exp() / (2.0 * PI).sqrt());
        worst = (worst.0.max((value as f64 - exact.0).abs()), worst.1.max((slope as f64 - exact.1).abs()));
        assert!((value as f64 - exact.0).abs() < 1e-6 * (1.0 + x.abs()), "gelu({x}) = {value}, exactly {}", exact.0);
        assert!((slope as f64 - exact.1).abs() < 1e-6, "gelu'({x}) = {slope}, exactly {}", exact.1);
    }
    println!("exact GELU: values within {:.1e}, gradient within {:.1e} of the formula", worst.0, worst.1);
}
