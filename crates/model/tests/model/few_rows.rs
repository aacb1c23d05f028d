//! The decoding matmul (`few_rows::matmul`): on the CPU backend it runs the bandwidth kernels
//! through a Burn backend extension; it must give what Burn's own matmul gives for every weight
//! layout the models pass it, and leave autodiff tensors to Burn.

use burn::tensor::{Distribution, Tensor};
use prefix_tune_model::{few_rows, Backend};
use prefix_tune_model::tensors::to_f32s;
use prefix_tune_model::testing::{device, max_abs_diff};

fn random(shape: [usize; 2], device: &burn::tensor::Device) -> Tensor<2> {
    Tensor::random(shape, Distribution::Uniform(-1.0, 1.0), device)
}

fn assert_matches_burn(x: Tensor<2>, w: Tensor<2>, what: &str) {
    // On the CPU backend (CI's), up to 16 rows must take the kernel, not fall back.
    let rows = x.dims()[0];
    assert_eq!(few_rows::takes_the_kernel(&x), Backend::Flex.is_compiled() && rows <= 16, "{what}: {rows} rows");
    let want = to_f32s(x.clone().matmul(w.clone()));
    let got = few_rows::matmul(x, w);
    let diff = max_abs_diff(&to_f32s(got), &want);
    assert!(diff < 1e-4, "{what}: differs from Burn's matmul by {diff}");
}

#[test]
fn few_rows_matmul_equals_burns_for_every_weight_layout() {
    let _draws = prefix_tune_model::testing::random_draws();
    let device = device();
    // A Linear weight [in, out] (row-major), a tied embedding used as the head (its transpose),
    // column and row slices of each (strides wider than the shape), and 1 to 16 rows.
    let linear = random([72, 130], &device);
    let embedding = random([301, 72], &device);
    for rows in [1, 5, 16] {
        let x = random([rows, 72], &device);
        assert_matches_burn(x.clone(), linear.clone(), "row-major");
        assert_matches_burn(x.clone(), embedding.clone().transpose(), "transposed");
        assert_matches_burn(x.clone(), linear.clone().narrow(1, 3, 100), "row-major, column slice");
        assert_matches_burn(x.clone(), embedding.clone().narrow(0, 7, 200).transpose(), "transposed, row slice");
        assert_matches_burn(x.clone().narrow(1, 8, 60), linear.clone().narrow(0, 8, 60), "inner slice");
    }
    // More rows than the kernel takes, and a single column: Burn's matmul or the edge cases.
    assert_matches_burn(random([17, 72], &device), linear.clone(), "17 rows");
    assert_matches_burn(random([3, 72], &device), linear.narrow(1, 0, 1), "one column");
}

#[test]
fn few_rows_matmul_leaves_gradients_to_autodiff() {
    let _draws = prefix_tune_model::testing::random_draws();
    let device = device().autodiff();
    let x = random([2, 6], &device).require_grad();
    let w = random([6, 4], &device);
    assert!(!few_rows::takes_the_kernel(&x));
    let loss = few_rows::matmul(x.clone(), w.clone()).sum();
    let grad = x.grad(&loss.backward()).expect("x is tracked");
    // d(sum(x·w))/dx = 1·wᵀ: every row of the gradient is the row sums of w.
    let row_sums = to_f32s(w.inner().sum_dim(1).reshape([1, 6]));
    let grad = to_f32s(grad);
    assert!(max_abs_diff(&grad[..6], &row_sums) < 1e-5 && max_abs_diff(&grad[6..], &row_sums) < 1e-5);
}

#[test]
fn linear_in_row_blocks_equals_one_matmul_with_its_gradient() {
    let _draws = prefix_tune_model::testing::random_draws();
    use burn::module::Param;
    use prefix_tune_model::nn::Linear;
    let device = device().autodiff();
    let linear = Linear { weight: Param::from_tensor(random([96, 320], &device)), bias: Param::from_tensor(random([1, 320], &device).reshape([320])), half: None };
    // 141 and 275 rows (over 2^22 multiply-adds): two and four blocks on the CPU, the last one
    // padded; 40 rows: below the size where regrouping pays, one matmul per sequence.
    for [batch, seq] in [[3, 47], [5, 55], [2, 20]] {
        let x: Tensor<3> = Tensor::random([batch, seq, 96], Distribution::Uniform(-1.0, 1.0), &device).require_grad();
        let got = linear.forward(x.clone());
        let want = x.clone().matmul(linear.weight.val().unsqueeze::<3>()) + linear.bias.val().unsqueeze::<3>();
        assert!(max_abs_diff(&to_f32s(got.clone()), &to_f32s(want.clone())) < 1e-4, "{batch}×{seq}: values");
        // Weight the outputs so the gradient is not the same in every row.
        let weights: Tensor<3> = Tensor::random([batch, seq, 320], Distribution::Uniform(-1.0, 1.0), &device);
        let got_grad = x.grad(&(got * weights.clone()).sum().backward()).expect("tracked");
        let want_grad = x.grad(&(want * weights).sum().backward()).expect("tracked");
        assert!(max_abs_diff(&to_f32s(got_grad), &to_f32s(want_grad)) < 1e-4, "{batch}×{seq}: gradients");
    }
}
