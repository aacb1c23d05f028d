//! Dropout on a GPU: a forward pass cuts every mask from one draw of keep masks per rate, each
//! cut a run of that draw of its own.

use burn::tensor::{Device, Distribution, Shape, Tensor};
use prefix_tune_model::dropout::{Draws, Dropout};
use prefix_tune_model::tensors::to_f32s;
use prefix_tune_model::testing::fixtures;
use prefix_tune_model::{cut, load_gpt2};

/// The checks of this file on `device`, a GPU's with autodiff (run by the shader tests' child).
pub fn on_gpu(device: &Device) {
    cuts_are_runs_of_the_draw(device);
    sites_cut_their_masks_from_one_draw(device);
    a_gpt2_pass_draws_once(device);
}

/// A cut is elements `start..start + n` of the tensor, shaped: a view where `start` is on the
/// alignment, a copy where it is not.
fn cuts_are_runs_of_the_draw(device: &Device) {
    let numbers = Tensor::<1>::random([1000], Distribution::Default, device);
    let host = to_f32s(numbers.clone());
    for (start, shape) in [(0, [10, 100]), (64, [7, 11]), (128, [2, 5]), (10, [3, 9]), (999, [1, 1])] {
        let run: Tensor<2> = cut::cut(numbers.clone(), start, Shape::new(shape));
        assert_eq!(run.dims(), shape);
        assert_eq!(to_f32s(run), host[start..start + shape[0] * shape[1]], "cut at {start}");
    }
    println!("cuts = runs of the draw on wgpu (aligned views and an unaligned copy)");
}

/// Masks cut from one draw: `1 − p` kept and scaled by `1 / (1 − p)`, the gradient through the
/// same mask, every site a run of its own, the same seed the same masks.
fn sites_cut_their_masks_from_one_draw(device: &Device) {
    let p = 0.25;
    let x = Tensor::<3>::ones([4, 50, 300], device).require_grad();
    let run = |seed: u64| {
        device.seed(seed);
        let draws = Draws::new(&[(p, 2 * 60_000 + 64)], device);
        let dropout = Dropout::uniform(p).with(Some(&draws));
        let (residual, attention) = (dropout.residual().apply(x.clone()), dropout.attention().apply(x.clone()));
        let grad = x.grad(&(residual.clone() * 3.0).sum().backward()).expect("tracked");
        assert_eq!(draws.draws(), 1, "both masks from one draw");
        (to_f32s(residual), to_f32s(attention), to_f32s(grad))
    };
    let (residual, attention, grad) = run(11);
    let kept = residual.iter().filter(|&&v| v != 0.0).count() as f64 / residual.len() as f64;
    assert!((kept - (1.0 - p)).abs() < 0.01, "kept {kept}");
    assert!(residual.iter().all(|&v| v == 0.0 || (v - 1.0 / (1.0 - p) as f32).abs() < 1e-6));
    assert!(residual.iter().zip(&grad).all(|(&v, &g)| (g - 3.0 * v).abs() < 1e-5), "the gradient takes the same mask");
    assert_ne!(residual, attention, "each site cuts a run of its own");
    assert_eq!(run(11).0, residual, "the same seed cuts the same masks");
    assert_ne!(run(12).0, residual, "another seed, other masks");
    println!("dropout masks cut from one draw on wgpu: kept {kept:.3} at p {p}, scaled, the gradient through the mask");
}

/// A training pass of GPT-2 after a prefix draws its masks once, as much as the model says
/// it masks, and every site takes its mask from them.
fn a_gpt2_pass_draws_once(device: &Device) {
    let model = load_gpt2(&fixtures().join("gpt2-a"), device).unwrap();
    let (batch, prefix, len) = (2, 3, 5);
    let (_, past) = model.forward_tokens(&vec![vec![7, 8, 9]; batch], &vec![vec![1.0; prefix]; batch], None, Dropout::default()).unwrap();
    let ids: Vec<Vec<u32>> = (0..batch).map(|b| (0..len as u32).map(|t| 11 + t + b as u32).collect()).collect();
    let dropout = Dropout::uniform(0.1);
    let draws = dropout.draws_for(model.masked(batch, len, prefix + len), device).expect("a GPU draws at once");
    let hidden = model.hidden_states(&ids, &vec![vec![1.0; len]; batch], Some(past), dropout.with(Some(&draws))).unwrap();
    let config = &model.config;
    let (layers, width, heads) = (config.n_layer, config.n_embd, config.n_head);
    // Embeddings, then per layer: the attention weights and two residual branches.
    let masked = batch * len * width + layers * (batch * heads * len * (prefix + len) + 2 * batch * len * width);
    assert_eq!(draws.draws(), 1, "one draw serves the pass");
    assert!((masked..masked + (1 + 3 * layers) * 64).contains(&draws.used()), "the pass cut {} values, masks {masked}", draws.used());
    assert!(to_f32s(hidden).iter().all(|v| v.is_finite()));
    println!("a GPT-2 training pass on wgpu cut its {} dropout masks ({masked} values) from one draw", 1 + 3 * layers);
}
