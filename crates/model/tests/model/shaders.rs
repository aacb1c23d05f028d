//! The GPU kernels of `shaders/`, each held on wgpu to the tensor operations it replaces: values
//! and gradients, with the tolerance each comparison allows stated where it is made. The kernels
//! run in a child process (this test binary, filtered to the ignored test below) so that a
//! driver crash fails this test only; on a machine without Vulkan the test says it skipped.

use burn::module::{Module, Param};
use burn::tensor::{Device, Distribution, Tensor};
use prefix_tune_model::bf16::Dtype;
use prefix_tune_model::nn::Linear;
use prefix_tune_model::adamw::{self, Coefficients};
use prefix_tune_model::attention;
use prefix_tune_model::cross_entropy;
use prefix_tune_model::dropout::Site;
use prefix_tune_model::tensors::to_f32s;
use prefix_tune_model::testing::{max_abs_diff, random_draws, run_on_vulkan};

#[test]
fn shader_kernels_match_tensor_operations_on_wgpu() {
    if let Some(printed) = run_on_vulkan("shaders::wgpu_shaders_child") {
        print!("{printed}");
    }
}

#[test]
#[ignore = "run by shader_kernels_match_tensor_operations_on_wgpu in a child process"]
fn wgpu_shaders_child() {
    let _draws = random_draws();
    let device = prefix_tune_model::backend::device(Some("wgpu")).unwrap();
    assert!(prefix_tune_model::backend::is_gpu(&device));
    let device = device.autodiff();
    cross_entropy_kernel(&device);
    layer_norm_kernels(&device, 40);
    layer_norm_kernels(&device, 100);
    layer_norm_kernels(&device, 777);
    adamw_kernel(&device.clone().without_autodiff());
    half_precision_linear(&device);
    attention_kernels(&device, 5, 4, 0.0, Layout::Contiguous, Front::Joined);
    attention_kernels(&device, 5, 4, 0.3, Layout::Contiguous, Front::Shared);
    attention_kernels(&device, 300, 10, 0.1, Layout::Contiguous, Front::PerRow);
    attention_kernels(&device, 5, 4, 0.3, Layout::Swapped, Front::PerRow);
    attention_kernels(&device, 33, 6, 0.0, Layout::Swapped, Front::Shared);
    attention_kernels(&device, 33, 6, 0.2, Layout::Swapped, Front::Joined);
    attention_kernels_packed(&device, 5, 4, 0.3, Front::Shared);
    attention_kernels_packed(&device, 40, 3, 0.0, Front::PerRow);
    attention_kernels_packed(&device, 9, 0, 0.1, Front::Joined);
    narrow_kernel(&device);
    super::dropout::on_gpu(&device);
    kv_write_kernel(&device.clone().without_autodiff());
    embed_kernel(&device.clone().without_autodiff());
    log_softmax_kernel(&device.clone().without_autodiff());
    super::paged::on_gpu(&device.clone().without_autodiff());
    matmul_kernel(&device);
    pick_kernel(&device.clone().without_autodiff(), 1000, 40);
    pick_kernel(&device.clone().without_autodiff(), 50_257, 12);
}

/// The tiled matmul kernel (`x · W` and `x · Wᵀ` with a frozen weight, with and without a bias),
/// values and the input's gradient, against the exact products (in f64 on the host), in every
/// block shape with scalar and vector reads, on sizes that fill no block evenly, one over many slices of K, an LM-head-like
/// width, and two whose K is split across cubes (where only the first part may add the bias).
fn matmul_kernel(device: &Device) {
    use prefix_tune_model::matmul::{self, Kernel, Tile};
    // The last two split K across cubes (`matmul::splits`): forward, 3,000 in 11 parts; and the
    // input gradient of 9 × 64 · 64 × 5,000, which sums over 5,000 as the LM head's does.
    let sizes = [(37, 45, 70), (70, 300, 90), (5, 17, 1000), (64, 16, 64), (140, 33, 150), (130, 40, 260), (20, 3000, 40), (9, 64, 5000)];
    // Each size in a block with scalar reads and one with vectors of four (`Tile::ALL[4..]`) and
    // through Burn's matmul as the tuner runs it; three (ragged, split, deep) through the tuner's
    // choice, which times all eight kernels on each product and its input gradient first.
    let tiles = [(0, 4), (1, 5), (2, 6), (3, 4), (0, 6), (3, 5), (3, 6), (1, 4)];
    for (index, ((m, k, n), (scalar, vector))) in sizes.into_iter().zip(tiles).enumerate() {
        let tuned = [0, 6, 7].contains(&index).then_some(Kernel::Tuned);
        let kernels = [Kernel::Block(Tile::ALL[scalar]), Kernel::Block(Tile::ALL[vector]), Kernel::Burn].into_iter().chain(tuned);
        // The few-row kernel takes any rows (8 to a cube), its input gradient too.
        let both_ways = kernels.chain([Kernel::FewRows]).flat_map(|kernel| [(kernel, false), (kernel, true)]);
        for (kernel, transposed) in both_ways {
            let biased = index % 2 == 0;
            let product = |x: &Tensor<2>, weight: &Tensor<2>, bias: Option<&Tensor<1>>| matmul::kernel(x.clone(), weight.clone(), bias.cloned(), transposed, kernel);
            assert!(check_product(device, (m, k, n), transposed, biased, &format!("{kernel:?}"), product), "{kernel:?} runs on wgpu");
            if kernel == Kernel::Tuned {
                // The tuner timed this product and its input gradient, and chose one of its kernels.
                for (m, k, n, transposed, biased) in [(m, k, n, transposed, biased), (m, n, k, !transposed, false)] {
                    let chosen = matmul::tuned_for(m, k, n, transposed, biased).unwrap_or_else(|| panic!("{m}×{k}×{n} transposed {transposed}: not tuned"));
                    let ours = chosen == "shaders_few_rows" || Tile::ALL.iter().any(|t| chosen == format!("shaders_{}", t.name()));
                    assert!(chosen == "burn" || ours, "the tuner chose {chosen}");
                }
            }
        }
    }
    println!("matmul kernel = exact products on wgpu (x·W and x·Wᵀ, values and input gradient, with and without a bias, 8 sizes over 7 block shapes, K split in two, the few-row kernel, Burn's matmul and the tuner's choice)");
    tuned_products(device);
    matmul_epilogues(device);
    few_rows_in_half_precision(&device.clone().without_autodiff());
}

/// What the product kernels do after the bias as they write each output (`matmul::Then`): the
/// residual stream added, exactly as the tensor addition after the plain product would, its
/// gradient the output's and the input's as without it; GELU (tanh and exact) within 2e-6 of
/// the tensor form's over the same product. In the few-row kernel, and in a block with K whole
/// and with K split (where the parts' sum takes the steps); and the few-row kernel's norm.
fn matmul_epilogues(device: &Device) {
    use prefix_tune_model::gelu;
    use prefix_tune_model::matmul::{self, Kernel, Then, Tile};
    use prefix_tune_model::nn::Activation;
    let cases = [(Kernel::FewRows, (5, 64, 40)), (Kernel::Block(Tile::ALL[1]), (37, 45, 70)), (Kernel::Block(Tile::ALL[6]), (20, 3000, 40))];
    for (kernel, (m, k, n)) in cases {
        let what = format!("{kernel:?} {m}×{k}×{n}");
        if let Kernel::Block(tile) = kernel {
            assert_eq!(matmul::splits(m, k, n, tile) > 1, k == 3000, "{what}: K split only in the deep case");
        }
        let normal = |shape: [usize; 2]| Tensor::<2>::random(shape, Distribution::Normal(0.0, 1.0), device);
        let (x, weight, residual, upstream) = (normal([m, k]).require_grad(), normal([k, n]), normal([m, n]).require_grad(), normal([m, n]));
        let bias = Tensor::<1>::random([n], Distribution::Normal(0.0, 1.0), device);
        let plain = matmul::kernel(x.clone(), weight.clone(), Some(bias.clone()), false, kernel).expect("taken");
        let then = Then { norm: None, residual: Some(&residual), activation: None };
        let added = matmul::kernel_then(x.clone(), weight.clone(), Some(bias.clone()), false, kernel, then).expect("taken with a residual");
        let expected = to_f32s(plain.clone() + residual.clone());
        assert!(to_f32s(added.clone()).iter().zip(&expected).all(|(a, b)| a.to_bits() == b.to_bits()), "{what}: the residual added as the tensor addition adds it");
        let grads = (added * upstream.clone()).sum().backward();
        assert_eq!(to_f32s(residual.grad(&grads).expect("tracked")), to_f32s(upstream.clone()), "{what}: the residual's gradient is the output's");
        let plain_grads = (plain.clone() * upstream).sum().backward();
        assert_eq!(to_f32s(x.grad(&grads).expect("tracked")), to_f32s(x.grad(&plain_grads).expect("tracked")), "{what}: the input's gradient as without the residual");
        // Activations: inference only (a tracked input is refused).
        let (x, weight, bias, plain) = (x.inner(), weight.inner(), bias.inner(), plain.inner());
        let tracked = matmul::kernel_then(normal([m, k]).require_grad(), normal([k, n]), None, false, kernel, Then { norm: None, residual: None, activation: Some(Activation::GeluTanh) });
        assert!(tracked.is_none(), "{what}: an activation under autodiff is left to the tensor form");
        for (activation, reference) in [(Activation::GeluTanh, gelu::composed(plain.clone())), (Activation::Gelu, gelu::erf_composed(plain.clone()))] {
            let then = Then { norm: None, residual: None, activation: Some(activation) };
            let got = matmul::kernel_then(x.clone(), weight.clone(), Some(bias.clone()), false, kernel, then).expect("taken with an activation");
            let (got, reference) = (to_f32s(got), to_f32s(reference));
            let worst = got.iter().zip(&reference).map(|(a, b)| (a - b).abs() / b.abs().max(1.0)).fold(0.0, f32::max);
            assert!(worst < 2e-6, "{what} {activation:?}: {worst:e} off the tensor form");
        }
    }
    // The few-row kernel's norm: each row normalised as it is read, as the LayerNorm kernel
    // would first. Its sums are that kernel's, in its order, for rows of 256 values or more
    // (within GELU's rounding); shorter rows are summed by a different number of threads. With
    // a weight stored `[N, K]` too: GPT-2's `ln_f` and tied LM head.
    let plain = device.clone().without_autodiff();
    for ((m, k, n), exact, transposed) in [((5, 300, 40), true, false), ((11, 64, 24), false, false), ((5, 300, 1000), true, true), ((3, 64, 70), false, true)] {
        let normal = |shape: [usize; 2]| Tensor::<2>::random(shape, Distribution::Normal(0.0, 1.0), &plain);
        let (x, bias) = (normal([m, k]) * 3.0 + 0.5, Tensor::<1>::random([n], Distribution::Normal(0.0, 1.0), &plain));
        let weight = normal(if transposed { [n, k] } else { [k, n] });
        let norm = prefix_tune_model::nn::LayerNorm {
            weight: burn::module::Param::from_tensor(Tensor::random([k], Distribution::Normal(1.0, 0.2), &plain)),
            bias: burn::module::Param::from_tensor(Tensor::random([k], Distribution::Normal(0.0, 0.2), &plain)),
            eps: 1e-5,
        };
        let normed = norm.forward(x.clone().unsqueeze::<3>()).squeeze::<2>();
        let then = |residual| Then { norm: Some(&norm), activation: Some(Activation::GeluTanh), residual };
        let expected = to_f32s(gelu::composed(matmul::kernel(normed, weight.clone(), Some(bias.clone()), transposed, Kernel::FewRows).expect("taken")));
        let got = to_f32s(matmul::kernel_then(x.clone(), weight.clone(), Some(bias.clone()), transposed, Kernel::FewRows, then(None)).expect("taken with a norm"));
        let worst = got.iter().zip(&expected).map(|(a, b)| (a - b).abs() / b.abs().max(1.0)).fold(0.0, f32::max);
        assert!(worst < if exact { 2e-6 } else { 1e-5 }, "few rows {m}×{k}×{n} (transposed {transposed}) normalised: {worst:e} off LayerNorm then the product");
        let blocked = matmul::kernel_then(x, weight, Some(bias), transposed, Kernel::Block(Tile::ALL[1]), then(None));
        assert!(blocked.is_none(), "a block leaves the norm to the LayerNorm kernel");
    }
    let relu = Then { norm: None, residual: None, activation: Some(Activation::Relu) };
    assert!(matmul::kernel_then(Tensor::zeros([3, 8], &device.clone().without_autodiff()), Tensor::zeros([8, 4], &device.clone().without_autodiff()), None, false, Kernel::FewRows, relu).is_none(), "ReLU is left to the tensor form");
    println!("matmul epilogues = the tensor form on wgpu (residual bit-exact with its gradient, GELU tanh and exact within 2e-6; few-row kernel, a block, K split; the few-row kernel's norm as LayerNorm then the product)");
}

/// The few-row kernel with a weight in f16 (`--dtype f16` decoding): each input rounded to f16,
/// f32 sums and output, then the bias. Held to the exact sums of the rounded inputs: within the
/// f32 sum's error (2⁻²⁰ of Σ|terms|) and the bias addition's rounding; for a weight stored `[K, N]`, one stored `[N, K]`
/// (the tied head), and one whose `[K, N]` is a transposed view; with the norm read in.
fn few_rows_in_half_precision(device: &Device) {
    use burn::tensor::DType;
    use prefix_tune_model::matmul::{self, Kernel, Then};
    if !device.supports_dtype(DType::F16) {
        println!("skipped: few-row kernel in f16 (no shader f16 on this adapter)");
        return;
    }
    let normal = |shape: [usize; 2]| Tensor::<2>::random(shape, Distribution::Normal(0.0, 1.0), device);
    let rounded = |values: Vec<f32>| values.into_iter().map(|v| half::f16::from_f32(v).to_f32()).collect::<Vec<f32>>();
    let (m, k, n) = (5, 300, 70);
    // The last row's values are ~1e-6, below f16's normal range (2⁻¹⁴): rounded to multiples of 2⁻²⁴.
    let scales = Tensor::<2>::from_data(burn::tensor::TensorData::new(vec![1.0f32, 1.0, 1.0, 1.0, 1e-6], [m, 1]), device);
    let (x, bias) = (normal([m, k]) * scales, Tensor::<1>::random([n], Distribution::Normal(0.0, 1.0), device));
    let stored_kn = normal([k, n]).cast(DType::F16);
    let stored_nk = normal([n, k]).cast(DType::F16);
    let norm = prefix_tune_model::nn::LayerNorm {
        weight: burn::module::Param::from_tensor(Tensor::random([k], Distribution::Normal(1.0, 0.2), device)),
        bias: burn::module::Param::from_tensor(Tensor::random([k], Distribution::Normal(0.0, 0.2), device)),
        eps: 1e-5,
    };
    let cases = [("[K, N]", stored_kn.clone(), false, false), ("[N, K] transposed", stored_nk.clone(), true, false), ("a transposed view", stored_nk.clone().transpose(), false, false), ("[K, N] with the norm", stored_kn, false, true)];
    for (what, weight, transposed, normalized) in cases {
        let then = Then { norm: normalized.then_some(&norm), ..Then::default() };
        let got = to_f32s(matmul::kernel_then(x.clone(), weight.clone(), Some(bias.clone()), transposed, Kernel::FewRows, then).expect("taken in f16"));
        let input = if normalized { norm.forward(x.clone().unsqueeze::<3>()).squeeze::<2>() } else { x.clone() };
        let (xs, b) = (rounded(to_f32s(input)), to_f32s(bias.clone()));
        let w = to_f32s(weight.clone().cast(DType::F32));
        let w_at = |kk: usize, nn: usize| if transposed { w[nn * k + kk] } else { w[kk * n + nn] };
        for r in 0..m {
            for c in 0..n {
                let terms: Vec<f64> = (0..k).map(|i| xs[r * k + i] as f64 * w_at(i, c) as f64).collect();
                let exact = terms.iter().sum::<f64>() + b[c] as f64;
                let bound = 2f64.powi(-20) * terms.iter().map(|t| t.abs()).sum::<f64>() + 2f64.powi(-23) * exact.abs();
                let off = (got[r * n + c] as f64 - exact).abs();
                assert!(off <= bound, "{what}: [{r}, {c}] {} against {exact} (bound {bound:e})", got[r * n + c]);
            }
        }
    }
    println!("few-row kernel in f16 = exact sums of f16-rounded inputs on wgpu (a weight [K, N], [N, K] transposed, a transposed view, with the norm read in)");
}

/// A tuned product as a model layer takes it (`matmul::through`, as `PREFIX_TUNE_MATMUL=tune`
/// and `autotune` builds do): a shape first seen is tuned on the spot; where Burn's matmul won,
/// `None` (the layer takes Burn's own path); else the chosen block, exact, with its input gradient
/// tuned on its own, and the same bits when the product is taken again.
fn tuned_products(device: &Device) {
    use prefix_tune_model::matmul::{self, Kernel};
    let mut chose = Vec::new();
    // The last two are a decoding step's (beam-5 rows, a layer's qkv and the LM head).
    for (m, k, n, biased) in [(33, 45, 70, true), (70, 300, 90, false), (9, 64, 5000, false), (3, 5000, 64, true), (5, 64, 192, true), (5, 64, 1000, false)] {
        for transposed in [false, true] {
            let product = |x: &Tensor<2>, weight: &Tensor<2>, bias: Option<&Tensor<1>>| matmul::through(Kernel::Tuned, x, weight, bias, transposed);
            let taken = check_product(device, (m, k, n), transposed, biased, "tuned, as a layer", product);
            let chosen = matmul::tuned_for(m, k, n, transposed, biased).expect("tuned on first sight");
            assert_eq!(taken, chosen != "burn", "{m}×{k}×{n}: the tuner chose {chosen}; the kernel path was taken: {taken}");
            chose.push(format!("{m}×{k}×{n}{}: {chosen}", if transposed { "ᵀ" } else { "" }));
        }
    }
    println!("tuned products = exact on wgpu, Burn's own path where it won ({})", chose.join(", "));
}

/// One product `[m, k] · W (+ bias)` through `product` (W stored `[n, k]` when `transposed`),
/// where it returns one, held to the exact product, values and input gradient, and taken twice
/// to the same bits. Whether `product` took it.
fn check_product(device: &Device, (m, k, n): (usize, usize, usize), transposed: bool, biased: bool, what: &str, product: impl Fn(&Tensor<2>, &Tensor<2>, Option<&Tensor<1>>) -> Option<Tensor<2>>) -> bool {
    let bias: Option<Tensor<1>> = biased.then(|| Tensor::random([n], Distribution::Normal(0.0, 1.0), device));
    let x: Tensor<2> = Tensor::random([m, k], Distribution::Normal(0.0, 1.0), device).require_grad();
    let weight: Tensor<2> = Tensor::random(if transposed { [n, k] } else { [k, n] }, Distribution::Normal(0.0, 1.0), device);
    let upstream: Tensor<2> = Tensor::random([m, n], Distribution::Normal(0.0, 1.0), device);
    assert!(prefix_tune_model::matmul::available(&x, &weight));
    let Some(out) = product(&x, &weight, bias.as_ref()) else { return false };
    let again = to_f32s(product(&x, &weight, bias.as_ref()).expect("taken again"));
    let grads = (out.clone() * upstream.clone()).sum().backward();
    let (out, grad) = (to_f32s(out), to_f32s(x.grad(&grads).expect("tracked")));
    let what = format!("{m}×{k}×{n} ({what}) transposed {transposed}, bias {biased}");
    assert!(out.iter().zip(&again).all(|(a, b)| a.to_bits() == b.to_bits()), "{what}: a second run differs");
    let (x, w, up, b) = (to_f32s(x), to_f32s(weight), to_f32s(upstream), bias.map(to_f32s));
    // W[k][n] whichever way it is stored.
    let w_at = |kk: usize, nn: usize| if transposed { w[nn * k + kk] } else { w[kk * n + nn] };
    // The bias as one more term, b[c] · 1.
    let inner = k + usize::from(b.is_some());
    let term = |r: usize, c: usize, i: usize| if i < k { (x[r * k + i], w_at(i, c)) } else { (b.as_ref().expect("a bias")[c], 1.0) };
    assert_near_exact(&out, m, n, inner, term, &format!("{what}: values"));
    assert_near_exact(&grad, m, k, n, |r, c, i| (up[r * n + i], w_at(c, i)), &format!("{what}: input gradient"));
    true
}

/// Each `got[r][c]` of a `rows × cols` product within f32 rounding of the exact
/// `Σᵢ a·b` over `inner` terms, `(a, b) = term(r, c, i)`: within √inner · u · Σᵢ |a·b| (u = 2⁻²⁴),
/// the probabilistic bound on a sum's rounding error (Higham and Mary, 2019), which one wrong,
/// doubled or missing term of these unit normals exceeds.
fn assert_near_exact(got: &[f32], rows: usize, cols: usize, inner: usize, term: impl Fn(usize, usize, usize) -> (f32, f32), what: &str) {
    let unit_roundoff = 2f64.powi(-24);
    for r in 0..rows {
        for c in 0..cols {
            let (mut exact, mut magnitude) = (0.0f64, 0.0f64);
            for i in 0..inner {
                let (a, b) = term(r, c, i);
                exact += a as f64 * b as f64;
                magnitude += (a as f64 * b as f64).abs();
            }
            let error = (got[r * cols + c] as f64 - exact).abs();
            let bound = (inner as f64).sqrt() * unit_roundoff * magnitude;
            assert!(error <= bound, "{what}: [{r}][{c}] is {} where the exact product is {exact} (error {error:.3e}, bound {bound:.3e})", got[r * cols + c]);
        }
    }
}

/// Each row's next token chosen on the device (`generate::pick`: processor edits, then the
/// argmax or a draw after temperature, top-k and top-p) against the same rules on the host,
/// with the same uniform numbers, over rows of `vocab` scores with ties (scores rounded to
/// 1/8) and banned and forced rows. The host sums in the kernel's order, so only `exp` and
/// division may round differently (on lavapipe every pick agrees). The argmax must agree; a draw
/// may differ only where that rounding puts the target on the other side of a token boundary:
/// the two picks must then be neighbours among the kept tokens, with the target within 1e-5 of
/// the total weight from the boundary between them (summed in f64), and at most 1% of draws.
fn pick_kernel(device: &Device, vocab: usize, rounds: usize) {
    use prefix_tune_model::generate::pick::{self, Choice, Edits};
    use prefix_tune_model::generate::Sampling;
    let draw = |temperature, top_k, top_p| Sampling { temperature, top_k, top_p, seed: 0 };
    let kinds = [
        None,
        Some(draw(1.0, None, None)),
        Some(draw(0.7, Some(40), None)),
        Some(draw(1.3, None, Some(0.9))),
        Some(draw(0.8, Some(50), Some(0.8))),
        Some(draw(1.0, Some(1), None)),
        Some(draw(2.0, None, Some(0.3))),
        Some(draw(0.5, Some(vocab), Some(1.0))),
    ];
    let rows = kinds.len();
    let mut state = 0x2545_f491_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 // in [0, 1)
    };
    let (mut agree, mut boundary) = (0, 0);
    for round in 0..rounds {
        let scores: Vec<f32> = (0..rows * vocab).map(|_| ((next() * 2.0 - 1.0) * 6.0 * 8.0).round() / 8.0).collect();
        let mut edits = vec![Edits::default(); rows];
        edits[round % rows].ban((round * 7 % vocab) as u32);
        if round % 3 == 0 {
            edits[(round + 1) % rows].force((round * 11 % vocab) as u32);
        }
        let choices: Vec<Choice> = kinds.iter().map(|kind| kind.map_or(Choice::Argmax, |sampling| Choice::Draw { sampling, uniform: next() })).collect();
        let logits = pick::edit(prefix_tune_model::tensors::floats(scores.clone(), [rows, vocab], device), &edits);
        let on_device = pick::choose(logits, &choices);
        for (row, ((row_scores, row_edits), &choice)) in scores.chunks(vocab).zip(&edits).zip(&choices).enumerate() {
            let mut host = row_scores.to_vec();
            row_edits.apply(&mut host);
            let token = pick::choose_row(&host, choice).expect("finite scores have a token");
            let (device_token, context) = (on_device[row].expect("finite scores have a token"), format!("round {round}, row {row} ({choice:?}), vocabulary {vocab}"));
            if device_token == token {
                agree += 1;
                continue;
            }
            let Choice::Draw { sampling, uniform } = choice else { panic!("argmax differs: {device_token} vs {token}, {context}") };
            let weights = pick::kept_weights(&host, sampling);
            let (low, high) = (device_token.min(token) as usize, device_token.max(token) as usize);
            assert!(weights[low] > 0.0 && weights[high] > 0.0 && weights[low + 1..high].iter().all(|&w| w == 0.0), "not neighbours: {device_token} vs {token}, {context}");
            let total: f64 = weights.iter().map(|&w| w as f64).sum();
            let up_to_low: f64 = weights[..=low].iter().map(|&w| w as f64).sum();
            assert!((up_to_low - uniform as f64 * total).abs() <= 1e-5 * total, "target not at the boundary: {device_token} vs {token}, {context}");
            boundary += 1;
        }
    }
    assert!(boundary * 100 <= agree + boundary, "{boundary} boundary draws of {}", agree + boundary);
    // A whole step as the server runs it: edits, choices and OpenAI's logprobs (the chosen
    // token's and the best n), on scores without ties so the best come in one order.
    let scores: Vec<f32> = (0..4 * vocab).map(|i| ((i * 7919) % 100_003) as f32 / 100_003.0 * 12.0 - 6.0).collect();
    let mut steps: Vec<pick::RowStep> = [(None, Some(5)), (Some(draw(0.9, Some(30), Some(0.9))), Some(0)), (None, None), (Some(draw(1.1, None, None)), Some(3))]
        .into_iter()
        .map(|(kind, logprobs)| pick::RowStep { edits: Edits::default(), choice: kind.map_or(Choice::Argmax, |sampling| Choice::Draw { sampling, uniform: next() }), logprobs })
        .collect();
    steps[0].edits.add(3, 2.5);
    steps[3].edits.ban(1);
    let on_device = pick::pick(prefix_tune_model::tensors::floats(scores.clone(), [4, vocab], device), &steps);
    for (row, (step, picked)) in steps.iter().zip(&on_device).enumerate() {
        let host = pick::pick_row(&mut scores[row * vocab..(row + 1) * vocab].to_vec(), step);
        let (picked, host) = (picked.as_ref().unwrap(), host.unwrap());
        assert_eq!(picked.token, host.token, "row {row}");
        let (Some((logprob, top)), Some((host_logprob, host_top))) = (&picked.logprobs, &host.logprobs) else {
            assert!(picked.logprobs.is_none() && host.logprobs.is_none(), "row {row}");
            continue;
        };
        // log-softmax over the vocabulary in another order of summation: a few ulp of ~10.
        assert!((logprob - host_logprob).abs() < 1e-4, "row {row}: {logprob} vs {host_logprob}");
        assert_eq!(top.iter().map(|t| t.0).collect::<Vec<_>>(), host_top.iter().map(|t| t.0).collect::<Vec<_>>(), "row {row}");
        assert!(top.iter().zip(host_top).all(|(a, b)| (a.1 - b.1).abs() < 1e-4), "row {row}");
    }
    // Rows where a draw has nothing to draw from (NaN scores, every token banned) give no token
    // on the device as on the host, beside a row that does; an argmax over NaN gives token 0.
    let plain = Choice::Draw { sampling: draw(1.0, None, None), uniform: 0.3 };
    let edge: Vec<f32> = [f32::NAN, 0.5, f32::NEG_INFINITY, f32::NAN].iter().flat_map(|&x| vec![x; vocab]).collect();
    let choices = [plain, plain, plain, Choice::Argmax];
    let on_device = pick::choose(prefix_tune_model::tensors::floats(edge.clone(), [4, vocab], device), &choices);
    let on_host: Vec<Option<u32>> = edge.chunks(vocab).zip(choices).map(|(row, choice)| pick::choose_row(row, choice)).collect();
    assert_eq!(on_device, on_host);
    assert!(matches!(on_host[..], [None, Some(_), None, Some(0)]), "{on_host:?}");
    println!("next-token kernel = the host's choice on wgpu: {agree} picks equal, {boundary} at a token boundary, over {vocab} tokens (argmax, temperature, top-k, top-p, edits)");
}

/// The LM-head cross-entropy kernel against log-softmax + gather, forward and backward, as the
/// CPU's fused op is held; and more rows than one grid row of cubes holds (65,535).
fn cross_entropy_kernel(device: &Device) {
    // NLLs up to ~40, f32 each way: a few ulp of 40 is ~1e-5.
    super::cross_entropy::matches_log_softmax_and_gather(device, 2e-5);
    let many: Tensor<2> = Tensor::random([66_000, 3], Distribution::Normal(0.0, 4.0), &device.clone().without_autodiff());
    let many_targets: Vec<usize> = (0..66_000).map(|r| r % 3).collect();
    let (kernel, composed) = (cross_entropy::nll(many.clone(), &many_targets), cross_entropy::composed(many, &many_targets));
    assert!(max_abs_diff(&to_f32s(kernel), &to_f32s(composed)) < 1e-5);
    println!("cross-entropy kernel = log-softmax + gather on wgpu (values, gradients, 66,000 rows)");
}

/// LayerNorm with a frozen scale and shift against Burn's `layer_norm`, as the CPU's fused op
/// is held, with rows shorter and longer than a cube's 256 threads.
fn layer_norm_kernels(device: &Device, dim: usize) {
    // Outputs of magnitude ~4, sums over up to 777 terms in another order: a few ulp.
    super::layer_norm::matches_burns_layer_norm(device, dim, 4e-6);
    println!("LayerNorm kernels = Burn's layer_norm on wgpu (values, input gradient, D = {dim})");
}

/// The one-kernel AdamW step against its tensor form: three steps, with and without weight
/// decay, gradients from 1e-9 to 1e3 in magnitude, more values than one grid row of cubes holds.
fn adamw_kernel(device: &Device) {
    let count = 65_535 * 256 + 3;
    let wave = |seed: usize, scale: f32| -> Vec<f32> { (0..count).map(|i| ((i * 7919 + seed * 104_729) % 10_007) as f32 / 10_007.0 * scale - scale / 2.0).collect() };
    let floats = |values: Vec<f32>| prefix_tune_model::tensors::floats(values, [count], device);
    for weight_decay in [0.0, 0.01] {
        let start = floats(wave(0, 2.0));
        let (mut kernel, mut tensors) = ((start.clone(), None, None), (start, None, None));
        for t in 1..=3 {
            let c = Coefficients::at_step(0.9, 0.999, 1e-8, weight_decay, 5e-3, t);
            let grad = floats(wave(t, 1.0).into_iter().enumerate().map(|(i, g)| g * 10f32.powi((i % 13) as i32 - 9)).collect());
            let (value, m, v) = adamw::step(&c, kernel.0, grad.clone(), (kernel.1, kernel.2));
            kernel = (value, Some(m), Some(v));
            let (value, m, v) = adamw::tensors(&c, tensors.0, grad, (tensors.1, tensors.2));
            tensors = (value, Some(m), Some(v));
        }
        // The same f32 operations in the same order; a shader compiler may still contract a
        // multiply and an add into one rounding: at most an ulp or two of each value.
        let relative = |a: Tensor<1>, b: Tensor<1>| {
            to_f32s(a).iter().zip(to_f32s(b)).map(|(x, y)| (x - y).abs() / y.abs().max(1e-30)).fold(0.0, f32::max)
        };
        let values = relative(kernel.0.clone(), tensors.0.clone());
        let (first, second) = (relative(kernel.1.clone().unwrap(), tensors.1.unwrap()), relative(kernel.2.clone().unwrap(), tensors.2.unwrap()));
        assert!(values < 3e-7 && first < 3e-7 && second < 3e-7, "AdamW differs (weight decay {weight_decay}): values {values}, moments {first}, {second}");
        // The step moved the values (by up to 3·lr).
        assert!(max_abs_diff(&to_f32s(kernel.0.clone()), &wave(0, 2.0)) > 1e-2);
        adamw_kernel_called_off(device, (kernel.0, kernel.1.unwrap(), kernel.2.unwrap()), floats(wave(4, 1.0)));
    }
    println!("AdamW kernel = its tensor form on wgpu (3 steps, with and without weight decay, {count} values); a step called off by its flag leaves every bit");
}

/// The guarded step (a run ahead of its checks): a flag of 0 is the plain step bit for bit,
/// a flag of 1 gives back the value and moments as they were, a first step's moments as zeros.
fn adamw_kernel_called_off(device: &Device, (value, m, v): (Tensor<1>, Tensor<1>, Tensor<1>), grad: Tensor<1>) {
    let c = Coefficients::at_step(0.9, 0.999, 1e-8, 0.01, 5e-3, 4);
    let flag = |x: f32| prefix_tune_model::tensors::floats(vec![x], [1], device);
    let bits = |t: &Tensor<1>| to_f32s(t.clone()).iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
    let plain = adamw::step(&c, value.clone(), grad.clone(), (Some(m.clone()), Some(v.clone())));
    let kept = adamw::step_unless(&c, value.clone(), grad.clone(), (Some(m.clone()), Some(v.clone())), Some(flag(0.0)));
    assert!(bits(&kept.0) == bits(&plain.0) && bits(&kept.1) == bits(&plain.1) && bits(&kept.2) == bits(&plain.2), "a flag of 0 changed the step");
    assert!(bits(&kept.0) != bits(&value), "the step moved nothing");
    let off = adamw::step_unless(&c, value.clone(), grad.clone(), (Some(m.clone()), Some(v.clone())), Some(flag(1.0)));
    assert!(bits(&off.0) == bits(&value) && bits(&off.1) == bits(&m) && bits(&off.2) == bits(&v), "a step called off changed the value or its moments");
    let first = adamw::step_unless(&c, value.clone(), grad, (None, None), Some(flag(1.0)));
    assert!(bits(&first.0) == bits(&value), "a first step called off moved the value");
    assert!(to_f32s(first.1).iter().chain(&to_f32s(first.2)).all(|&x| x.to_bits() == 0), "a first step called off left moments");
}

/// `--dtype f16` on a GPU: a `Linear` multiplies the f16-rounded input by the f16-rounded weight
/// with f32 sums and an f32 product (the CPU's contract for bf16); its input gradient is the
/// f16-rounded upstream gradient times the weight's transpose, the same way. An adapter without
/// f16 shaders refuses it in words that say so.
fn half_precision_linear(device: &Device) {
    if let Some(why) = prefix_tune_model::bf16::unavailable(device, Dtype::F16) {
        assert!(why.contains("--dtype f16") && why.contains("SHADER_F16"), "{why}");
        println!("--dtype f16 refused on this adapter: {why}");
        return;
    }
    // An adapter with f16 but no bf16 (lavapipe) points to f16, without naming f16's feature.
    if let Some(why) = prefix_tune_model::bf16::unavailable(device, Dtype::Bf16) {
        assert!(why.contains("no bf16 arithmetic") && why.ends_with("use --dtype f16") && !why.contains("SHADER_F16"), "{why}");
    }
    device.seed(29);
    let normal = Distribution::Normal(0.0, 1.0);
    let x: Tensor<3> = Tensor::random([2, 21, 40], normal, device).require_grad();
    let weight: Tensor<2> = Tensor::random([40, 56], normal, device);
    let bias: Tensor<1> = Tensor::random([56], normal, device);
    let upstream: Tensor<3> = Tensor::random([2, 21, 56], normal, device);
    let mut linear = Linear { weight: Param::from_tensor(weight.clone()), bias: Param::from_tensor(bias.clone()), half: None }.no_grad();
    let in_f32 = to_f32s(linear.forward(x.clone()));
    linear.use_half(Dtype::F16);
    let y = linear.forward(x.clone());
    let grad = to_f32s(x.grad(&(y.clone() * upstream.clone()).sum().backward()).expect("tracked"));
    let y = to_f32s(y);
    // A second step's graph reuses the f16 weight: the same product, and a backward pass.
    let again = linear.forward(x.clone());
    let again_grad = to_f32s(x.grad(&(again.clone() * upstream.clone()).sum().backward()).expect("tracked"));
    assert!(to_f32s(again) == y && again_grad == grad, "a second step differs");

    // The reference on the host, in f64 from f16-rounded values.
    let f16 = |v: f32| half::f16::from_f32(v).to_f32();
    let [x_host, w_host, b_host, up_host] = [to_f32s(x.inner().reshape([42, 40])), to_f32s(weight.inner()), to_f32s(bias.inner()), to_f32s(upstream.inner().reshape([42, 56]))];
    let product = |a: &[f32], b: &[f32], (m, k, n): (usize, usize, usize), b_transposed: bool| -> Vec<f32> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                let sum: f64 = (0..k).map(|l| f16(a[i * k + l]) as f64 * f16(if b_transposed { b[j * k + l] } else { b[l * n + j] }) as f64).sum();
                out[i * n + j] = sum as f32;
            }
        }
        out
    };
    let want: Vec<f32> = product(&x_host, &w_host, (42, 40, 56), false).iter().enumerate().map(|(i, v)| v + b_host[i % 56]).collect();
    let want_grad = product(&up_host, &w_host, (42, 56, 40), true);
    // Sums of 40 and 56 terms in f32, in another order: within 1e-5 of values up to ~20, where a
    // product rounded to f16 would be up to 2⁻¹¹ of the value off.
    let within_f32_rounding = |got: &[f32], want: &[f32]| got.iter().zip(want).all(|(g, w)| (g - w).abs() <= w.abs().max(1.0) * 1e-5);
    assert!(within_f32_rounding(&y, &want), "values differ by {}", max_abs_diff(&y, &want));
    assert!(within_f32_rounding(&grad, &want_grad), "gradients differ by {}", max_abs_diff(&grad, &want_grad));
    assert!(max_abs_diff(&y, &in_f32) > 1e-3, "the f16 layer computed in f32");
    println!("--dtype f16 Linear = products of f16-rounded inputs with f32 sums and output on wgpu (values, input gradient)");
}

/// How the attention kernels' inputs lie in memory.
#[derive(Debug, Clone, Copy)]
enum Layout {
    /// `[B, H, X, Dh]` in order.
    Contiguous,
    /// `[B, X, H, Dh]` seen as `[B, H, X, Dh]`, as a projection split into heads is: the kernels
    /// read such a view in place.
    Swapped,
}

/// How the prefix's keys reach the attention kernels.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Front {
    /// Concatenated with the current keys before the call (a KV cache's gathered keys).
    Joined,
    /// Apart, one prefix per batch row (`[B, H, P, Dh]`).
    PerRow,
    /// Apart, one prefix row the batch shares (`[1, H, P, Dh]`, a training step's): its
    /// gradient is the sum over the rows that read it.
    Shared,
}

/// The attention kernels against the tensor form, which concatenates the prefix's keys (a
/// shared one broadcast first) in front of the current ones: output, and the gradients of the
/// queries, of the prefix's keys and values and of the current ones.
fn attention_kernels(device: &Device, t: usize, prefix: usize, dropout: f64, layout: Layout, front: Front) {
    use prefix_tune_model::attention::{KeyValue, Memory};
    let (batch, heads, head_dim, s) = (2, 3, 7, prefix + t);
    let normal = Distribution::Normal(0.0, 1.0);
    device.seed(31);
    let input = |rows: usize, len: usize| {
        let tensor = match layout {
            Layout::Contiguous => Tensor::<4>::random([rows, heads, len, head_dim], normal, device),
            Layout::Swapped => Tensor::<4>::random([rows, len, heads, head_dim], normal, device).swap_dims(1, 2),
        };
        tensor.require_grad()
    };
    let front_rows = if front == Front::Shared { 1 } else { batch };
    let queries = input(batch, t);
    let tensors = [input(front_rows, prefix), input(front_rows, prefix), input(batch, t), input(batch, t)]; // prefix K, V; current K, V
    let upstream: Tensor<3> = Tensor::random([batch, t, heads * head_dim], normal, device); // the output's gradient
    // Row 1 has two padding keys right after its prefix.
    let key_mask: Vec<Vec<f32>> = (0..batch).map(|b| (0..s).map(|j| if b == 1 && (prefix..prefix + 2).contains(&j) { 0.0 } else { 1.0 }).collect()).collect();
    let bias = attention::attention_bias(&key_mask, t, true, device);
    let scale = 1.0 / (head_dim as f32).sqrt();
    let memory = |[front_keys, front_values, keys, values]: [Tensor<4>; 4]| {
        let (earlier, current) = (KeyValue { keys: front_keys, values: front_values }, KeyValue { keys, values });
        match front {
            Front::Joined => Memory::from(earlier.append(current)),
            Front::PerRow | Front::Shared => Memory::Parts { earlier: Some(earlier), current },
        }
    };
    type Attention = fn(Tensor<4>, Memory, Option<Tensor<4>>, f32, Site<'static>) -> Tensor<3>;
    let tensor_form: Attention = |queries, memory, bias, scale, dropout| {
        let KeyValue { keys, values } = memory.joined();
        attention::composed(queries, keys, values, bias, scale, dropout)
    };
    let run = |f: Attention| {
        device.seed(37); // the same dropout mask on both sides
        let out = f(queries.clone(), memory(tensors.clone()), Some(bias.clone()), scale, Site::rate(dropout));
        // Swapped, the output's gradient reaches the kernels as a strided view too.
        let loss = match layout {
            Layout::Contiguous => out.clone() * upstream.clone(),
            Layout::Swapped => out.clone().swap_dims(1, 2) * upstream.clone().swap_dims(1, 2),
        };
        let grads = loss.sum().backward();
        let grad = |x: &Tensor<4>| to_f32s(x.grad(&grads).expect("tracked"));
        let mut all = vec![to_f32s(out), grad(&queries)];
        all.extend(tensors.iter().map(grad));
        all
    };
    let (kernel, composed) = (run(attention::attend), run(tensor_form));
    // Sums of up to 300 products in another order, values of order 1 (up to 1/(1 − p) more
    // with dropout; a shared prefix's gradients sum over both rows): a few ulp.
    let names = ["values", "query grads", "prefix key grads", "prefix value grads", "key grads", "value grads"];
    for (name, (a, b)) in names.iter().zip(kernel.iter().zip(&composed)) {
        assert!(max_abs_diff(a, b) < 2e-5, "attention {name} differ by {} (T {t}, dropout {dropout}, {layout:?}, {front:?})", max_abs_diff(a, b));
    }
    assert!(kernel[2].iter().any(|&g| g.abs() > 1e-3) && kernel[4].iter().any(|&g| g.abs() > 1e-3), "keys got no gradient");
    // Without autodiff (decoding) and without a bias.
    let plain = |f: Attention| to_f32s(f(queries.clone().inner(), memory(tensors.clone().map(|x| x.inner())), None, scale, Site::rate(0.0)));
    assert!(max_abs_diff(&plain(attention::attend), &plain(tensor_form)) < 2e-5);
    println!("attention kernels = tensor form on wgpu (T {t}, prefix {prefix}, dropout {dropout}, {layout:?}, {front:?}: values, query, key and value gradients)");
}

/// GPT-2's packed projection `[B, T, 3·H, Dh]` through the kernels (`attend_packed`), against
/// [`attention::unpack`] and the tensor form: output, the projection's gradient (which the
/// kernels write packed) and the prefix's (`Front::Joined` here: no prefix).
fn attention_kernels_packed(device: &Device, t: usize, prefix: usize, dropout: f64, front: Front) {
    use prefix_tune_model::attention::KeyValue;
    let (batch, heads, head_dim) = (3, 2, 5);
    let normal = Distribution::Normal(0.0, 1.0);
    device.seed(43);
    let qkv = Tensor::<4>::random([batch, t, 3 * heads, head_dim], normal, device).require_grad();
    let front_rows = if front == Front::Shared { 1 } else { batch };
    let earlier = (front != Front::Joined).then(|| {
        let part = || Tensor::<4>::random([front_rows, prefix, heads, head_dim], normal, device).swap_dims(1, 2).require_grad();
        KeyValue { keys: part(), values: part() }
    });
    let upstream: Tensor<3> = Tensor::random([batch, t, heads * head_dim], normal, device);
    let s = t + earlier.as_ref().map_or(0, KeyValue::seq_len);
    let key_mask: Vec<Vec<f32>> = (0..batch).map(|b| (0..s).map(|j| if b == 2 && j == s - t { 0.0 } else { 1.0 }).collect()).collect();
    let bias = attention::attention_bias(&key_mask, t, true, device);
    let scale = 1.0 / (head_dim as f32).sqrt();
    type Packed = fn(Tensor<4>, Option<KeyValue>, Option<Tensor<4>>, f32, Site<'static>) -> Tensor<3>;
    let tensor_form: Packed = |qkv, earlier, bias, scale, dropout| {
        let (queries, current) = attention::unpack(qkv);
        let KeyValue { keys, values } = attention::Memory::Parts { earlier, current }.joined();
        attention::composed(queries, keys, values, bias, scale, dropout)
    };
    let run = |f: Packed| {
        device.seed(47);
        let out = f(qkv.clone(), earlier.clone(), Some(bias.clone()), scale, Site::rate(dropout));
        let grads = (out.clone() * upstream.clone()).sum().backward();
        let grad = |x: &Tensor<4>| to_f32s(x.grad(&grads).expect("tracked"));
        let mut all = vec![to_f32s(out), grad(&qkv)];
        all.extend(earlier.iter().flat_map(|kv| [grad(&kv.keys), grad(&kv.values)]));
        all
    };
    let (kernel, composed) = (run(attention::attend_packed), run(tensor_form));
    for (name, (a, b)) in ["values", "projection grads", "prefix key grads", "prefix value grads"].iter().zip(kernel.iter().zip(&composed)) {
        assert!(max_abs_diff(a, b) < 2e-5, "packed attention {name} differ by {} (T {t}, prefix {prefix}, dropout {dropout}, {front:?})", max_abs_diff(a, b));
    }
    // Every third of the projection (queries, keys, values) got its gradient.
    let width = 3 * heads * head_dim;
    for third in 0..3 {
        let part = kernel[1].chunks(width).flat_map(|row| row[third * width / 3..(third + 1) * width / 3].to_vec());
        assert!(part.into_iter().any(|g| g.abs() > 1e-3), "third {third} of the projection got no gradient");
    }
    let plain = |f: Packed| to_f32s(f(qkv.clone().inner(), earlier.clone().map(|kv| KeyValue { keys: kv.keys.inner(), values: kv.values.inner() }), Some(bias.clone().inner()), scale, Site::rate(0.0)));
    assert!(max_abs_diff(&plain(attention::attend_packed), &plain(tensor_form)) < 2e-5);
    println!("packed attention kernels = unpacked tensor form on wgpu (T {t}, prefix {prefix}, dropout {dropout}, {front:?}: values, the projection's and the prefix's gradients)");
}

/// The KV cache's write kernel against `select_assign`: a step's keys and values, views of a
/// packed projection, written into the pools at scattered rows; copies of the same values, so
/// equal exactly. A pool another tensor still holds is left as it was.
fn kv_write_kernel(device: &Device) {
    use prefix_tune_model::attention::{unpack, KeyValue};
    use prefix_tune_model::kv_write;
    let (batch, heads, t, head_dim, capacity) = (3, 4, 2, 5, 7);
    let normal = Distribution::Normal(0.0, 1.0);
    device.seed(53);
    let pool = || Tensor::<2>::random([heads * capacity, head_dim], normal, device);
    let (keys, values) = (pool(), pool());
    let (_, current) = unpack(Tensor::<4>::random([batch, t, 3 * heads, head_dim], normal, device)); // [B, H, T, Dh] views
    // Row (b, h, t) goes to slot (b·T + t) of head h, slots in reverse.
    let slots: Vec<i64> = (0..batch).flat_map(|b| (0..heads).flat_map(move |h| (0..t).map(move |s| (h * capacity + capacity - 1 - (b * t + s)) as i64))).collect();
    let slots = prefix_tune_model::tensors::ints(slots, [batch * heads * t], device);
    let tensor_form = |(k, v): (Tensor<2>, Tensor<2>), current: KeyValue| {
        let rows = |x: Tensor<4>| x.reshape([-1, head_dim as i32]);
        (k.select_assign(0, slots.clone(), rows(current.keys), burn::tensor::IndexingUpdateOp::Assign), v.select_assign(0, slots.clone(), rows(current.values), burn::tensor::IndexingUpdateOp::Assign))
    };
    let before = (to_f32s(keys.clone()), to_f32s(values.clone()));
    let kernel = kv_write::write((keys.clone(), values.clone()), &slots, current.clone());
    let reference = tensor_form((keys.clone(), values.clone()), current);
    assert!(to_f32s(kernel.0.clone()) == to_f32s(reference.0) && to_f32s(kernel.1.clone()) == to_f32s(reference.1), "the written pools differ");
    assert!(to_f32s(kernel.0) != before.0, "nothing was written");
    assert!((to_f32s(keys), to_f32s(values)) == before, "a pool another tensor holds changed");
    println!("KV cache write = select_assign on wgpu (strided keys and values, scattered slots, a shared pool left as it was)");
}

/// The input embeddings' kernel (`embed::embed`, a decoding step's on a GPU) against the gathers
/// and the sum as tensor operations, which it computes in the same order: GPT-2's
/// (`wte[ids] + wpe[positions]`) and BART's with a scale and the position offset of 2, over
/// repeated and unordered ids: equal exactly.
fn embed_kernel(device: &Device) {
    use burn::tensor::module::embedding;
    use prefix_tune_model::embed::embed;
    use prefix_tune_model::tensors::ints;
    let normal = Distribution::Normal(0.0, 1.0);
    let (tokens, positions) = (Tensor::<2>::random([97, 40], normal, device), Tensor::<2>::random([23, 40], normal, device));
    let ids = || ints(vec![5, 96, 0, 5, 41, 7], [2, 3], device);
    let position_ids = || ints(vec![0, 1, 2, 17, 18, 20], [2, 3], device);
    for (scale, offset) in [(1.0f32, 0usize), (2.5, 2)] {
        let got = to_f32s(embed(&tokens, ids(), scale, &positions, position_ids(), offset));
        let expected = to_f32s(embedding(tokens.clone(), ids()) * scale + embedding(positions.clone(), position_ids() + offset as i64));
        assert!(got.len() == 2 * 3 * 40 && got.iter().zip(&expected).all(|(a, b)| a.to_bits() == b.to_bits()), "scale {scale}, offset {offset}: the embeddings differ");
    }
    println!("input embeddings = the gathers and their sum on wgpu, bit for bit (GPT-2's; BART's scale and position offset)");
}

/// Beam search's scores in one kernel (`log_softmax::log_softmax`: each row's log-probabilities
/// plus the beam's score) against the exact values (f64 on the host): within 4e-6 of the larger
/// of 1 and the value, on rows of 1,000 and of GPT-2's 50,257, with and without the addition;
/// and no further off than Burn's log-softmax and the addition.
fn log_softmax_kernel(device: &Device) {
    use prefix_tune_model::log_softmax::log_softmax;
    for (rows, vocab) in [(7, 1000), (3, 50_257)] {
        let logits = Tensor::<2>::random([rows, vocab], Distribution::Normal(0.0, 3.0), device);
        let added = Tensor::<1>::random([rows], Distribution::Uniform(-40.0, 0.0), device);
        let (x, a) = (to_f32s(logits.clone()), to_f32s(added.clone()));
        for with in [None, Some(added)] {
            let exact: Vec<f64> = x
                .chunks(vocab)
                .enumerate()
                .flat_map(|(r, row)| {
                    let max = row.iter().fold(f64::MIN, |m, &v| m.max(v as f64));
                    let lse = max + row.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln();
                    let plus = if with.is_some() { a[r] as f64 } else { 0.0 };
                    row.iter().map(move |&v| v as f64 - lse + plus)
                })
                .collect();
            let off = |got: &[f32]| got.iter().zip(&exact).map(|(&g, &e)| (g as f64 - e).abs() / e.abs().max(1.0)).fold(0.0, f64::max);
            let burns = burn::tensor::activation::log_softmax(logits.clone(), 1);
            let burns = off(&to_f32s(match &with {
                Some(added) => burns + added.clone().unsqueeze_dim::<2>(1),
                None => burns,
            }));
            let ours = off(&to_f32s(log_softmax(logits.clone(), with.clone())));
            let what = format!("{rows} × {vocab}, added {}", with.is_some());
            assert!(ours < 4e-6, "{what}: {ours:e} off the exact values (Burn's {burns:e})");
            assert!(ours <= burns.max(1e-6), "{what}: {ours:e} off the exact values, Burn's {burns:e}");
        }
    }
    println!("beam scores kernel = log-softmax plus each beam's score on wgpu, within 4e-6 of the exact values and no further than Burn's (rows of 1,000 and 50,257)");
}

/// `narrow`'s backward kernel (the slice's gradient padded with zeros in one pass) against
/// Burn's own slice backward: slices of every dimension of a contiguous and of a swapped input,
/// and two slices of one tensor whose gradients add up (GPT-2's query/key/value split). Copies
/// of the same values: equal exactly.
fn narrow_kernel(device: &Device) {
    use prefix_tune_model::narrow::narrow;
    let normal = Distribution::Normal(0.0, 1.0);
    device.seed(41);
    let x = Tensor::<3>::random([4, 6, 10], normal, device).require_grad();
    type Slicer = fn(Tensor<3>, usize, usize, usize) -> Tensor<3>;
    let burns: Slicer = |x, dim, start, len| x.narrow(dim, start, len);
    for swapped in [false, true] {
        let input = || if swapped { x.clone().swap_dims(0, 2) } else { x.clone() }; // [10, 6, 4] or [4, 6, 10]
        let dims = input().dims();
        for (dim, start, len) in [(0, 1, 2), (1, 0, 6), (2, 3, 1), (1, 4, 2)] {
            let mut shape = dims;
            shape[dim] = len;
            let weights = Tensor::<3>::random(shape, normal, device);
            let run = |slice: Slicer| {
                let y = slice(input(), dim, start, len);
                let grads = (y.clone() * weights.clone()).sum().backward();
                (to_f32s(y), to_f32s(x.grad(&grads).expect("tracked")))
            };
            let (ours, burn) = (run(narrow), run(burns));
            assert!(ours == burn, "narrow({dim}, {start}, {len}) of a {} input: values or gradients differ", if swapped { "swapped" } else { "contiguous" });
            let zeros = ours.1.iter().filter(|&&g| g == 0.0).count();
            assert_eq!(zeros, x.shape().num_elements() / dims[dim] * (dims[dim] - len), "zero outside the slice only");
        }
    }
    let split = |slice: Slicer| {
        let (first, second) = (slice(x.clone(), 2, 0, 4), slice(x.clone(), 2, 4, 6));
        let grads = ((first * 2.0).sum() + second.exp().sum()).backward();
        to_f32s(x.grad(&grads).expect("tracked"))
    };
    assert!(split(narrow) == split(burns), "two slices' gradients add up as Burn's do");
    println!("narrow = Burn's slice on wgpu (values and gradients, contiguous and swapped inputs, two slices of one tensor)");
}
