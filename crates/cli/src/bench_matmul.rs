//! `prefix-tune bench matmul`: the matrix products of one training step of the model shape,
//! timed one by one, as JSON. On a GPU the matmuls are most of a training step (38.8 of 44.2 ms
//! on an H200 in f32); this says which products are slow, in which form, and in which dtype.
//!
//! Each product is timed in the forms a step could run it: the rows of the whole batch folded
//! into one `[B·T, K] · [K, N]` ("folded"), one matmul per sequence against the shared weight,
//! `[B, T, K] · [1, K, N]` ("per_sequence", what `nn::Linear` runs on a GPU by default), and,
//! on a GPU in f32, the tiled kernel of `shaders/` in each of its block shapes ("shaders_64x64",
//! …, what `PREFIX_TUNE_MATMUL=shaders[:BLOCK]` runs; with "…_whole_k" beside it where it splits
//! K across cubes, the same without the split), and the tuner's choice among Burn's matmul,
//! those blocks and the few-row kernel ("tuned", what `PREFIX_TUNE_MATMUL=tune` and a build with
//! `autotune` run). Backward products multiply by the transposed weight, as autodiff does for a frozen
//! weight.
//!
//! Each kernel's result is also held to Burn's folded product ("…_error": the largest difference
//! over the largest value, ~1e-6 for f32 sums in another order), so a kernel that a GPU runs
//! wrongly (a race lavapipe's CPU threads do not show) is seen before its time is read; past
//! 1e-3 a line on stderr names it.

use std::time::Instant;

use prefix_tune_model::bf16::Dtype;
use prefix_tune_model::burn::tensor::{DType, Device, Distribution, Tensor};
use prefix_tune_model::matmul::{self, Kernel, Tile};
use prefix_tune_model::tensors::to_f32s;
use prefix_tune_model::Gpt2Config;

use crate::error::Result;

#[derive(clap::Args, Debug)]
pub struct MatmulBench {
    #[arg(long, default_value_t = 5)]
    batch_size: usize,
    #[arg(long, default_value_t = 64)]
    seq_len: usize,
    /// Timed repetitions of each product (after three untimed ones).
    #[arg(long, default_value_t = 20)]
    repeats: usize,
}

/// One product of a step: `[rows, k] · [k, n]`, or `· [n, k]ᵀ` when `transposed`.
struct Product {
    name: &'static str,
    k: usize,
    n: usize,
    transposed: bool,
    /// How many times a training step runs it (every layer, or once).
    per_step: usize,
}

/// GPT-2's products of a training step whose weights are frozen: every layer's four linear
/// layers forward and, backward, their input gradients (the transposed weight); the tied LM head
/// both ways.
fn products(config: &Gpt2Config) -> Vec<Product> {
    let (d, layers, vocab) = (config.n_embd, config.n_layer, config.vocab_size);
    let layer = |name, k, n, transposed| Product { name, k, n, transposed, per_step: layers };
    vec![
        layer("attention qkv", d, 3 * d, false),
        layer("attention out", d, d, false),
        layer("mlp up", d, 4 * d, false),
        layer("mlp down", 4 * d, d, false),
        layer("attention qkv, input gradient", 3 * d, d, true),
        layer("attention out, input gradient", d, d, true),
        layer("mlp up, input gradient", 4 * d, d, true),
        layer("mlp down, input gradient", d, 4 * d, true),
        Product { name: "lm head", k: d, n: vocab, transposed: true, per_step: 1 },
        Product { name: "lm head, input gradient", k: vocab, n: d, transposed: false, per_step: 1 },
    ]
}

/// Milliseconds per call of `product`, after three untimed calls; each call's result is read
/// back at the end, so on a GPU the time runs to the last kernel's end.
fn time(product: impl Fn() -> Tensor<2>, repeats: usize) -> f64 {
    for _ in 0..3 {
        to_f32s(product().narrow(0, 0, 1).narrow(1, 0, 1));
    }
    let start = Instant::now();
    let mut last = None;
    for _ in 0..repeats {
        last = Some(product());
    }
    if let Some(out) = last {
        to_f32s(out.narrow(0, 0, 1).narrow(1, 0, 1));
    }
    start.elapsed().as_secs_f64() * 1e3 / repeats as f64
}

/// Our kernel in each block shape, where it runs (a GPU, f32); also without splitting K
/// ("…_whole_k", timed where the kernel splits, else the same as split), to show what the split
/// gains; and the tuned choice among Burn's matmul, those blocks and the few-row kernel
/// ("tuned", with the kernel it chose), what `PREFIX_TUNE_MATMUL=tune` runs.
fn time_kernels(input: &Tensor<2>, stored: &Tensor<2>, p: &Product, rows: usize, repeats: usize, result: &mut serde_json::Value, step_ms: &mut StepMs) {
    let tflops = |ms| tflops(rows, p, ms);
    let run = |kernel| matmul::kernel(input.clone(), stored.clone(), None, p.transposed, kernel);
    if !matmul::available(input, stored) {
        return; // not a GPU in f32: no kernel of ours runs
    }
    let reference = &input.clone().matmul(if p.transposed { stored.clone().transpose() } else { stored.clone() });
    let mut record = |name: String, ms: f64, splits: Option<usize>, out: Tensor<2>| {
        let error = relative_error(out, reference);
        if error > 1e-3 {
            eprintln!("bench matmul: {name} is off Burn's product by {error:.1e} (of its largest value) on {}", p.name);
        }
        result[format!("{name}_error")] = error.into();
        result[format!("{name}_ms")] = ms.into();
        result[format!("{name}_tflops")] = tflops(ms).into();
        if let Some(splits) = splits {
            result[format!("{name}_splits")] = splits.into();
        }
        *step_ms.entry(name).or_default() += ms * p.per_step as f64;
    };
    for tile in Tile::ALL {
        let splits = matmul::splits(rows, p.k, p.n, tile);
        let whole_k = Tile { split_k: false, ..tile };
        let product = |tile| run(Kernel::Block(tile)).expect("available");
        let (ms, out) = (time(|| product(tile), repeats), product(tile));
        // Without a split of K the two are one kernel: timed and checked once.
        let (whole_k_ms, whole_k_out) = if splits > 1 { (time(|| product(whole_k), repeats), product(whole_k)) } else { (ms, out.clone()) };
        record(format!("shaders_{}", tile.name()), ms, Some(splits), out);
        record(format!("shaders_{}_whole_k", tile.name()), whole_k_ms, None, whole_k_out);
    }
    let tuned = || run(Kernel::Tuned).expect("available");
    record("tuned".into(), time(tuned, repeats), None, tuned());
    if let Some(chosen) = matmul::tuned_for(rows, p.k, p.n, p.transposed, false) {
        result["tuned_choice"] = chosen.into();
    }
}

type StepMs = std::collections::BTreeMap<String, f64>;

/// `max |out − reference| / max |reference|`, reduced on the device.
fn relative_error(out: Tensor<2>, reference: &Tensor<2>) -> f64 {
    let largest = to_f32s(reference.clone().abs().max())[0] as f64;
    let difference = to_f32s((out - reference.clone()).abs().max())[0] as f64;
    difference / largest.max(f64::MIN_POSITIVE)
}

/// The arithmetic rate of `rows` rows of product `p` done in `ms` milliseconds.
fn tflops(rows: usize, p: &Product, ms: f64) -> f64 {
    2.0 * (rows * p.k * p.n) as f64 / (ms * 1e-3) / 1e12
}

pub fn run(device: &Device, backend: String, config: &Gpt2Config, dtype: Dtype, args: &MatmulBench) -> Result<()> {
    let MatmulBench { batch_size, seq_len, repeats } = *args;
    let rows = batch_size * seq_len;
    let float = match dtype {
        Dtype::F32 => DType::F32,
        Dtype::F16 => DType::F16,
        Dtype::Bf16 => DType::BF16,
    };
    // The same operands every run, so that each kernel's error beside Burn's product repeats.
    device.seed(0);
    let random = |shape: [usize; 2]| Tensor::<2>::random(shape, Distribution::Normal(0.0, 0.02), device).cast(float);
    let (mut results, mut step_ms) = (Vec::new(), StepMs::new());
    for p in products(config) {
        let input = random([rows, p.k]);
        let stored = if p.transposed { random([p.n, p.k]) } else { random([p.k, p.n]) };
        let weight = || if p.transposed { stored.clone().transpose() } else { stored.clone() };
        let folded = time(|| input.clone().matmul(weight()), repeats);
        let per_sequence = time(|| input.clone().reshape([batch_size, seq_len, p.k]).matmul(weight().unsqueeze::<3>()).reshape([rows, p.n]), repeats);
        let tflops = |ms| tflops(rows, &p, ms);
        let mut result = serde_json::json!({
            "product": p.name, "m": rows, "k": p.k, "n": p.n, "transposed_weight": p.transposed, "per_step": p.per_step,
            "folded_ms": folded, "folded_tflops": tflops(folded), "per_sequence_ms": per_sequence, "per_sequence_tflops": tflops(per_sequence),
        });
        *step_ms.entry("folded".into()).or_default() += folded * p.per_step as f64;
        *step_ms.entry("per_sequence".into()).or_default() += per_sequence * p.per_step as f64;
        time_kernels(&input, &stored, &p, rows, repeats, &mut result, &mut step_ms);
        results.push(result);
    }
    let report = serde_json::json!({
        "bench": "matmul", "backend": backend, "dtype": dtype, "rows": rows, "batch": batch_size, "seq_len": seq_len, "repeats": repeats,
        "results": results, "step_ms": step_ms,
    });
    println!("{report}");
    Ok(())
}
