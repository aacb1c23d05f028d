//! `--dtype bf16`'s frozen products through Burn: a `Linear` with its weight packed computes
//! bf16-rounded inputs times the bf16-rounded weight with f32 sums, and its input gradient is
//! the bf16-rounded upstream gradient times the rounded weight's transpose.

use burn::module::Param;
use burn::tensor::{Distribution, Tensor};
use prefix_tune_model::nn::Linear;
use prefix_tune_model::tensors::{floats, to_f32s};
use prefix_tune_model::testing::{device, max_abs_diff};

/// The tensor with every value rounded to bf16 (ties to even), as f32.
fn rounded<const D: usize>(t: Tensor<D>) -> Tensor<D> {
    let dims = t.dims();
    let values = to_f32s(t).into_iter().map(|v| half::bf16::from_f32(v).to_f32()).collect();
    floats(values, dims, &device())
}

#[test]
fn a_packed_linear_multiplies_bf16_values_and_returns_the_input_gradient() {
    let _draws = prefix_tune_model::testing::random_draws();
    let device = device().autodiff();
    if let Some(why) = prefix_tune_model::bf16::unavailable(&device, prefix_tune_model::bf16::Dtype::Bf16) {
        eprintln!("skipped: {why}");
        return;
    }
    let normal = Distribution::Normal(0.0, 1.0);
    let x: Tensor<3> = Tensor::random([2, 21, 40], normal, &device).require_grad();
    let weight: Tensor<2> = Tensor::random([40, 56], normal, &device);
    let bias: Tensor<1> = Tensor::random([56], normal, &device);
    let upstream: Tensor<3> = Tensor::random([2, 21, 56], normal, &device);
    let mut linear = Linear { weight: Param::from_tensor(weight.clone()), bias: Param::from_tensor(bias.clone()), half: None };
    let in_f32 = to_f32s(linear.forward(x.clone()));
    linear.use_half(prefix_tune_model::bf16::Dtype::Bf16);
    let y = linear.forward(x.clone());
    let grad = to_f32s(x.grad(&(y.clone() * upstream.clone()).sum().backward()).expect("tracked"));
    let y = to_f32s(y);

    let w = rounded(weight.inner());
    let want = to_f32s(rounded(x.clone().inner()).matmul(w.clone().unsqueeze::<3>()) + bias.inner().unsqueeze::<3>());
    let want_grad = to_f32s(rounded(upstream.inner()).matmul(w.transpose().unsqueeze::<3>()));
    // Exact bf16 products; only the f32 sums (40 or 56 terms) may round differently.
    assert!(max_abs_diff(&y, &want) < 2e-5, "values differ by {}", max_abs_diff(&y, &want));
    assert!(max_abs_diff(&grad, &want_grad) < 2e-5, "gradients differ by {}", max_abs_diff(&grad, &want_grad));
    assert!(max_abs_diff(&y, &in_f32) > 1e-3, "the packed layer computed in f32");
    // Without autodiff (dev loss, decoding) it is the same product.
    let plain = to_f32s(linear.forward(x.inner()));
    assert_eq!(plain, y);
}
