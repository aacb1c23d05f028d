//! The learner against PyTorch (loss, gradients, one AdamW step recorded by
//! scripts/make_fixtures.py), and the guarantees users rely on: the LM is never touched, a
//! prefix learns, a resumed run ends bit-identical, divergence stops cleanly.

use prefix_tune_model::burn::module::{Module, ModuleVisitor, Param};
use prefix_tune_model::burn::nn::Linear;
use prefix_tune_model::burn::tensor::{Device, Tensor};
use prefix_tune_model::tensors::{floats, to_f32s};
use prefix_tune_model::testing::{peft_params, peft_reference, read_f32, fixtures, scratch};
use prefix_tune_model::weights::{to_i64, WeightFiles};
use prefix_tune_model::{load_gpt2, Gpt2};
use prefix_tune_prefix::{Init, Layout, Prefix, PrefixConfig, PrefixMlp, Reparam};
use prefix_tune_train::optim::{self, Accumulated, OptimizerConfig, OptimizerState};
use prefix_tune_train::{head_loss, loss, Batch, Example, Objective, Schedule, TrainConfig, Trainer};

#[path = "train/bart.rs"]
mod bart;

/// Burn's random numbers (dropout masks, random init) come from one process-wide generator:
/// tests that draw from it run one at a time so each sees the stream it seeded.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The CPU backend with autodiff.
fn device() -> Device {
    prefix_tune_model::testing::device().autodiff()
}

/// PEFT's names for our parameters, in our visiting order, and whether PyTorch stores it
/// transposed (Linear weights are [out, in] there, [in, out] here).
fn peft_names(variant: &str) -> Vec<(&'static str, bool)> {
    let mut names = vec![("prompt_encoder.default.embedding.weight", false)];
    if variant == "mlp" {
        names.extend([
            ("prompt_encoder.default.transform.0.weight", true),
            ("prompt_encoder.default.transform.0.bias", false),
            ("prompt_encoder.default.transform.2.weight", true),
            ("prompt_encoder.default.transform.2.bias", false),
        ]);
    }
    names
}

fn peft_prefix(variant: &str, device: &Device) -> Prefix {
    let files = peft_params(variant);
    let matrix = |name: &str, transpose: bool| {
        let (shape, values) = read_f32(&files, name);
        let t = floats(values, [shape[0], shape[1]], device);
        Param::from_tensor(if transpose { t.transpose() } else { t }.require_grad())
    };
    let vector = |name: &str| {
        let (shape, values) = read_f32(&files, name);
        Param::from_tensor(floats(values, [shape[0]], device).require_grad())
    };
    let mlp = (variant == "mlp").then(|| PrefixMlp {
        hidden: Linear { weight: matrix("prompt_encoder.default.transform.0.weight", true), bias: Some(vector("prompt_encoder.default.transform.0.bias")) },
        output: Linear { weight: matrix("prompt_encoder.default.transform.2.weight", true), bias: Some(vector("prompt_encoder.default.transform.2.bias")) },
    });
    Prefix { embedding: matrix("prompt_encoder.default.embedding.weight", false), mlp, layout: Layout::new(3, 4, 6), dropout: 0.0, placement: Default::default() }
}

/// Our parameters' values in visiting order, in PyTorch's layout.
fn values_in_torch_layout(prefix: &Prefix, variant: &str) -> Vec<Vec<f32>> {
    struct Values(Vec<(Vec<usize>, Vec<f32>)>);
    impl ModuleVisitor for Values {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0.push((param.val().dims().to_vec(), to_f32s(param.val().detach())));
        }
    }
    let mut values = Values(Vec::new());
    prefix.visit(&mut values);
    values.0.into_iter().zip(peft_names(variant)).map(|((shape, v), (_, transposed))| if transposed { transpose(&v, shape[0], shape[1]) } else { v }).collect()
}

fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..cols).flat_map(|c| (0..rows).map(move |r| values[r * cols + c])).collect()
}

fn fixture_batch(files: &WeightFiles) -> Batch {
    let ints = |name: &str| files.view(name, |_, v| (v.shape().to_vec(), to_i64(v).unwrap())).unwrap();
    let (shape, ids) = ints("batch.input_ids");
    let (_, mask) = ints("batch.attention_mask");
    let (_, labels) = ints("batch.labels");
    let rows = |v: &[i64]| v.chunks(shape[1]).map(<[i64]>::to_vec).collect::<Vec<_>>();
    Batch {
        ids: rows(&ids).into_iter().map(|r| r.into_iter().map(|i| i as u32).collect()).collect(),
        mask: rows(&mask).into_iter().map(|r| r.into_iter().map(|m| m as f32).collect()).collect(),
        labels: rows(&labels),
        decoder_ids: Vec::new(),
    }
}

fn model(device: &Device) -> Gpt2 {
    load_gpt2(&fixtures().join("gpt2-a"), device).unwrap().freeze()
}

fn batch_loss(model: &Gpt2, prefix: &Prefix, batch: &Batch, objective: Objective) -> Tensor<1> {
    let (hidden, _) = model
        .forward_tokens(&batch.ids, &batch.mask, Some(prefix.past(batch.ids.len(), false)), prefix_tune_model::gpt2::Dropout::default())
        .unwrap();
    // The trainer's path (LM head at target positions only), held to PyTorch's full-logits loss.
    head_loss(model, hidden, &batch.labels, objective).0
}

/// The LM head at target positions only gives the loss of the full logits.
#[test]
fn the_loss_at_target_positions_only_equals_the_full_logits_loss() {
    let device = prefix_tune_model::testing::device();
    let model = load_gpt2(&fixtures().join("gpt2-a"), &device).unwrap();
    let examples = synthetic_task(5);
    let batch = Batch::new(&examples.iter().collect::<Vec<_>>(), 514);
    let (hidden, _) = model.forward_tokens(&batch.ids, &batch.mask, None, prefix_tune_model::gpt2::Dropout::default()).unwrap();
    for objective in [Objective::Paper, Objective::Mean] {
        let (full, full_count) = loss(model.logits(hidden.clone()), &batch.labels, objective);
        let (head, head_count) = head_loss(&model, hidden.clone(), &batch.labels, objective);
        let (full, head) = (to_f32s(full)[0], to_f32s(head)[0]);
        assert_eq!(full_count, head_count);
        assert!((full - head).abs() <= 1e-5 * full.abs().max(1.0), "{objective:?}: {full} vs {head}");
    }
    let unlabelled = vec![vec![-100i64; batch.ids[0].len()]; batch.ids.len()];
    assert_eq!(to_f32s(head_loss(&model, hidden, &unlabelled, Objective::Mean).0)[0], 0.0);
}

fn relative_error(ours: &[f32], theirs: &[f32]) -> f32 {
    let scale = theirs.iter().map(|x| x.abs()).fold(0.0, f32::max).max(1e-12);
    ours.iter().zip(theirs).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max) / scale
}

/// Our gradients of every prefix parameter, in visiting order, from one backward pass.
fn prefix_gradients(model: &Gpt2, prefix: &Prefix, batch: &Batch, objective: Objective) -> (f32, Accumulated) {
    let value = batch_loss(model, prefix, batch, objective);
    let loss = to_f32s(value.clone().detach())[0];
    let mut accumulated = Accumulated::default();
    accumulated.add(prefix, &value.backward());
    (loss, accumulated)
}

/// Loss and gradients of both prefix variants under both objectives, against PyTorch's, on
/// `device` (an autodiff device of any backend).
fn assert_loss_and_gradients_match_pytorch(device: &Device) {
    let model = model(device);
    for variant in ["flat", "mlp"] {
        let files = peft_params(variant);
        let reference = peft_reference(variant);
        let batch = fixture_batch(&files);
        // A batch padded to a multiple of 16 (PREFIX_TUNE_LENGTH_BUCKET: fewer shapes) gives the
        // same loss and gradients, with more (masked) padding.
        let bucketed = batch.clone().bucketed(16, 514, 64, 64);
        assert!(bucketed.ids[0].len() % 16 == 0 && bucketed.ids[0].len() > batch.ids[0].len() && bucketed.tokens() == batch.tokens());
        let objectives = [(Objective::Paper, "loss_paper", "grad."), (Objective::Mean, "loss_mean", "grad_mean.")];
        for (batch, (objective, key, grad_prefix)) in [&batch, &bucketed].into_iter().flat_map(|b| objectives.map(|o| (b, o))) {
            let (ours, accumulated) = prefix_gradients(&model, &peft_prefix(variant, device), batch, objective);
            let theirs = reference["losses"][key].as_f64().unwrap() as f32;
            assert!((ours - theirs).abs() < 1e-5 * theirs.abs().max(1.0), "{variant} {key}: {ours} vs {theirs}");
            for ((name, transposed), grad) in peft_names(variant).into_iter().zip(&accumulated.grads) {
                let (shape, expected) = read_f32(&files, &format!("{grad_prefix}{name}"));
                let grad = to_f32s(grad.clone().expect("every prefix parameter has a gradient"));
                let grad = if transposed { transpose(&grad, shape[1], shape[0]) } else { grad };
                let error = relative_error(&grad, &expected);
                assert!(error < 1e-4, "{variant} {grad_prefix}{name}: relative error {error}");
            }
        }
    }
}

#[test]
fn loss_gradients_and_one_adamw_step_match_pytorch() {
    let device = device();
    assert_loss_and_gradients_match_pytorch(&device);
    let model = model(&device);
    for variant in ["flat", "mlp"] {
        let files = peft_params(variant);
        let reference = peft_reference(variant);
        let batch = fixture_batch(&files);
        let adamw = &reference["adamw"];
        let config = OptimizerConfig::adamw(adamw["weight_decay"].as_f64().unwrap());
        let lr = adamw["lr"].as_f64().unwrap();
        let expected: Vec<Vec<f32>> = peft_names(variant).into_iter().map(|(name, _)| read_f32(&files, &format!("after_step.{name}")).1).collect();
        let torch_grads: Vec<(Vec<usize>, Vec<f32>)> = peft_names(variant).into_iter().map(|(name, _)| read_f32(&files, &format!("grad.{name}"))).collect();

        // (1) The optimizer itself: our AdamW fed PyTorch's gradients lands on PyTorch's
        // parameters.
        let mut from_torch = Accumulated::default();
        for ((_, transposed), (shape, grad)) in peft_names(variant).into_iter().zip(&torch_grads) {
            // PyTorch's Linear weights are [out, in]; ours [in, out].
            let grad = if transposed { transpose(grad, shape[0], shape[1]) } else { grad.clone() };
            let len = grad.len();
            from_torch.grads.push(Some(floats(grad, [len], &inner_device(&device))));
        }
        let mut state = OptimizerState::default();
        let stepped = optim::step(peft_prefix(variant, &device), config, lr, &mut from_torch, &mut state);
        for (((name, _), ours), theirs) in peft_names(variant).into_iter().zip(values_in_torch_layout(&stepped, variant)).zip(&expected) {
            let worst = ours.iter().zip(theirs).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            assert!(worst < 1e-6, "{variant} AdamW on PyTorch's gradients, {name}: {worst}");
        }

        // (2) End to end, on our own gradients. Adam's first step moves each weight by
        // ≈ lr·g/(|g| + eps): where |g| is near eps a 1e-4 relative gradient difference
        // changes the step itself, so those entries are held to the gradient test only.
        let prefix = peft_prefix(variant, &device);
        let (_, mut accumulated) = prefix_gradients(&model, &prefix, &batch, Objective::Paper);
        let mut state = OptimizerState::default();
        let stepped = optim::step(prefix, config, lr, &mut accumulated, &mut state);
        let mut checked = 0;
        for (((name, _), ours), (theirs, grads)) in peft_names(variant).into_iter().zip(values_in_torch_layout(&stepped, variant)).zip(expected.iter().zip(torch_grads.iter().map(|(_, g)| g))) {
            for ((a, b), g) in ours.iter().zip(theirs).zip(grads) {
                if g.abs() > 1e-5 {
                    assert!((a - b).abs() < 1e-6, "{variant} after_step.{name}: {a} vs {b} (grad {g})");
                    checked += 1;
                }
            }
        }
        assert!(checked > 100, "{variant}: only {checked} entries had well-conditioned steps");
    }
}

/// `--dtype bf16` (frozen products on AMX tiles): loss and prefix gradients against PyTorch
/// models whose frozen products take bf16 inputs, (1) with exact sums, as ours, and (2) under
/// PyTorch's bf16 autocast. The flat fixture is well-conditioned (1e-6 relative noise on every
/// product's input leaves the emulated loss unchanged), so it is held to f32 summation order:
/// the f32 path misses that by 16×. The MLP fixture has activations on a bf16 rounding edge
/// (3e-7 relative noise moves its emulated loss by 9e-5 relative), so the last ulp of any f32
/// op before a rounding picks another bf16 path: it is held to bf16's own noise.
#[test]
fn bf16_loss_and_gradients_match_pytorch_bf16() {
    let device = device();
    if let Some(why) = prefix_tune_model::bf16::unavailable(&device, prefix_tune_model::bf16::Dtype::Bf16) {
        eprintln!("skipped: {why}");
        return;
    }
    let mut model = model(&device);
    model.use_half(prefix_tune_model::bf16::Dtype::Bf16).unwrap();
    // (variant, mode, loss tolerance, gradient tolerance), relative
    let cases = [
        ("flat", "emulated", 5e-6, 1e-3),
        ("flat", "autocast", 5e-4, 3e-2),
        ("mlp", "emulated", 5e-4, 3e-2),
        ("mlp", "autocast", 5e-4, 3e-2),
    ];
    assert_half_precision_matches(&model, &device, "bf16", &cases, 1e-5);
}

/// Holds the loss and prefix gradients of `model` (its products in half precision) on the PEFT
/// fixtures' batch to `{stem}.json` / `{stem}.safetensors`, case by case (variant, mode, loss
/// and gradient tolerances, relative), and the loss away from the f32 loss by `moved`.
fn assert_half_precision_matches(model: &Gpt2, device: &Device, stem: &str, cases: &[(&str, &str, f32, f32)], moved: f32) {
    for &(variant, mode, loss_tolerance, grad_tolerance) in cases {
        let files = peft_params(variant);
        let dir = fixtures().join("peft").join(variant);
        let reference: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{stem}.json"))).unwrap()).unwrap();
        let half_files = WeightFiles::open(vec![dir.join(format!("{stem}.safetensors"))]).unwrap();
        let (ours, accumulated) = prefix_gradients(model, &peft_prefix(variant, device), &fixture_batch(&files), Objective::Paper);
        let theirs = reference["loss_paper"][mode].as_f64().unwrap() as f32;
        assert!((ours - theirs).abs() < loss_tolerance * theirs.abs(), "{stem} {variant} {mode}: loss {ours} vs {theirs}");
        for ((name, transposed), grad) in peft_names(variant).into_iter().zip(&accumulated.grads) {
            let (shape, expected) = read_f32(&half_files, &format!("{mode}.grad.{name}"));
            let grad = to_f32s(grad.clone().expect("every prefix parameter has a gradient"));
            let grad = if transposed { transpose(&grad, shape[1], shape[0]) } else { grad };
            let error = relative_error(&grad, &expected);
            assert!(error < grad_tolerance, "{stem} {variant} {mode}.grad.{name}: relative error {error}");
        }
        let f32_loss = peft_reference(variant)["losses"]["loss_paper"].as_f64().unwrap() as f32;
        assert!((ours - f32_loss).abs() > moved * f32_loss.abs(), "{variant}: the {stem} loss {ours} is the f32 loss");
        println!("{stem} {variant}: loss {ours} against PyTorch {mode} {theirs}");
    }
}

/// `--dtype f16` on the wgpu backend (lavapipe in CI): loss and prefix gradients against
/// PyTorch's f16 autocast on the CPU (f16 inputs and products, f32 sums). Run in a child process,
/// as the wgpu training test is.
#[test]
fn wgpu_f16_loss_and_gradients_match_pytorch_f16_autocast() {
    if let Some(printed) = prefix_tune_model::testing::run_on_vulkan("wgpu_f16_child") {
        print!("{printed}");
    }
}

#[test]
#[ignore = "run by wgpu_f16_loss_and_gradients_match_pytorch_f16_autocast in a child process"]
fn wgpu_f16_child() {
    let device = prefix_tune_model::backend::device(Some("wgpu")).unwrap().autodiff();
    if let Some(why) = prefix_tune_model::bf16::unavailable(&device, prefix_tune_model::bf16::Dtype::F16) {
        println!("skipped: {why}");
        return;
    }
    let mut model = model(&device);
    model.use_half(prefix_tune_model::bf16::Dtype::F16).unwrap();
    // Autocast also takes the attention products and the prefix MLP to f16 and rounds every
    // product to f16, and we keep those in f32: the losses differ by 4e-5 relative (flat) and
    // 6e-5 (MLP).
    let cases = [("flat", "autocast", 1e-4, 1e-2), ("mlp", "autocast", 1e-4, 1e-2)];
    assert_half_precision_matches(&model, &device, "f16", &cases, 1e-6);
}

/// The bf16 fixtures above hold on every bf16 path this CPU runs (AMX tiles, AVX2, the portable
/// loops), each forced through `PREFIX_TUNE_BF16_PATH` in a child process (the path is chosen
/// once per process).
#[test]
fn bf16_fixtures_hold_on_every_path_this_cpu_runs() {
    use prefix_tune_kernels::bf16::{Path as Bf16Path, FORCE_VAR};
    let paths = Bf16Path::runnable();
    assert!(paths.contains(&Bf16Path::Portable), "the portable loops run anywhere");
    for path in paths {
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "bf16_loss_and_gradients_match_pytorch_bf16", "--nocapture", "--test-threads", "1"])
            .env(FORCE_VAR, path.name())
            .output()
            .unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(output.status.success() && stdout.contains("1 passed"), "{} path: {stdout}\n{stderr}", path.name());
        assert!(!stderr.contains("skipped") && !stdout.contains("skipped"), "{} path skipped: {stderr}", path.name());
        println!("bf16 fixtures hold on the {} path", path.name());
    }
}

/// Prefix training on the wgpu backend (Vulkan; Mesa's lavapipe in CI) is held to the same
/// references as on the CPU: the tests below run as written there, in a child process (so that
/// a driver crash fails this test only): GPT-2's loss, prefix gradients and one AdamW step
/// against PyTorch + PEFT, BART's loss and each prefix set's gradients against the reference,
/// the loss at target positions only, and a frozen model that gets no gradient.
#[test]
fn parity_with_pytorch_holds_on_wgpu() {
    prefix_tune_model::testing::run_on_wgpu(&[
        "loss_gradients_and_one_adamw_step_match_pytorch",
        "the_loss_at_target_positions_only_equals_the_full_logits_loss",
        "the_frozen_lm_gets_no_gradient_and_stays_bit_identical",
        "bart::bart_loss_and_each_prefix_sets_gradient_match_the_reference",
    ]);
}

/// On a GPU a run goes ahead of its checks (each step's loss and gradient test read once the
/// next step is queued, its update called off on the device should the test fail): it must end
/// bit-identical to a run that reads each step before its update, write the same losses, clip
/// to the same norm, and stop on a NaN with its last checkpoint intact. On wgpu (lavapipe in
/// CI), in a child process.
#[test]
fn a_gpu_run_ahead_of_its_checks_equals_one_that_waits() {
    if prefix_tune_model::testing::run_on_vulkan("wgpu_overlap_child").is_some() {
        println!("wgpu: a run ahead of its checks equals one that waits, and stops on a NaN");
    }
}

#[test]
#[ignore = "run by a_gpu_run_ahead_of_its_checks_equals_one_that_waits in a child process"]
fn wgpu_overlap_child() {
    let device = prefix_tune_model::backend::device(Some("wgpu")).unwrap().autodiff();
    // A seeded start: how far the clipped runs' rounding carries depends on it. Over six
    // unseeded starts their worst prefix entry differed by 3e-6 to 1.4e-5 (relative), against
    // the 1e-5 allowed, so the test failed at random; from this one, 4.9e-6 every time.
    device.seed(7);
    let start = resume_config().prefix.init(Layout::new(3, 4, 6), &device).unwrap();
    let run = |overlap: bool, clip: Option<f64>, name: &str| {
        let mut config = resume_config();
        (config.checkpoint_every, config.max_grad_norm, config.epochs) = (None, clip, 2);
        let out = scratch(name);
        let prefix = start.clone().set_require_grad(true);
        let mut trainer = Trainer::new(model(&device), prefix, config, &out).unwrap();
        (trainer.quiet, trainer.overlap) = (true, overlap);
        let summary = trainer.train(&synthetic_task(8), &[], None).unwrap();
        let records: Vec<serde_json::Value> = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        (prefix_bits(&trainer.prefix), records, summary.steps)
    };
    let field = |records: &[serde_json::Value], name: &str| -> Vec<f64> { records.iter().map(|r| r[name].as_f64().unwrap_or(f64::NAN)).collect() };
    let (ahead, waits) = (run(true, None, "overlap-ahead"), run(false, None, "overlap-waits"));
    assert_eq!(ahead.2, waits.2);
    assert_eq!(field(&ahead.1, "loss"), field(&waits.1, "loss"), "the same losses, step for step");
    assert_eq!(field(&ahead.1, "step"), field(&waits.1, "step"));
    assert!(ahead.0 == waits.0, "the prefixes differ");
    // Clipping on the device takes the coefficient in f32, the host in f64: the norms agree to
    // f32 rounding and the prefixes to a few ulp of the step.
    let (ahead, waits) = (run(true, Some(0.05), "overlap-clip-ahead"), run(false, Some(0.05), "overlap-clip-waits"));
    for (a, b) in field(&ahead.1, "grad_norm").iter().zip(field(&waits.1, "grad_norm")) {
        assert!((a - b).abs() <= 1e-5 * b, "grad norm {a} against {b}");
    }
    assert!(field(&waits.1, "grad_norm").iter().all(|&n| n > 0.05), "every step clipped");
    let bits_to_f32 = |bits: &[Vec<u32>]| -> Vec<f32> { bits.iter().flatten().map(|&b| f32::from_bits(b)).collect() };
    let (a, b) = (bits_to_f32(&ahead.0), bits_to_f32(&waits.0));
    assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() <= 1e-5 * y.abs().max(1e-3)), "clipped prefixes differ beyond rounding");

    // A NaN gradient (one infinite prefix entry: the loss stays finite) stops the run with the
    // checkpoint as it was and the prefix untouched, though the run was a step ahead: the
    // failing update was called off on the device.
    let out = scratch("overlap-nan");
    let mut config = resume_config();
    (config.prefix.dropout, config.lm_dropout, config.grad_accum) = (0.0, Some(0.0), 1);
    let mut trainer = Trainer::new(model(&device), start.clone().set_require_grad(true), config, &out).unwrap();
    trainer.quiet = true;
    assert!(trainer.overlap, "a GPU run goes ahead of its checks");
    trainer.train(&synthetic_task(6), &[], Some(1)).unwrap();
    let good = std::fs::read(out.join("checkpoint/prefix.safetensors")).unwrap();
    let mut values = to_f32s(trainer.prefix.embedding.val().detach());
    values[0] = f32::INFINITY;
    let [rows, cols] = trainer.prefix.embedding.val().dims();
    trainer.prefix.embedding = Param::from_tensor(floats(values, [rows, cols], &device).require_grad());
    let before = prefix_bits(&trainer.prefix);
    let error = trainer.train(&synthetic_task(6), &[], None).err().unwrap().to_string();
    assert!(error.contains("gradient") && error.contains("not finite") && error.contains("checkpoint") && error.lines().count() == 1, "{error}");
    assert_eq!(std::fs::read(out.join("checkpoint/prefix.safetensors")).unwrap(), good);
    assert!(prefix_bits(&trainer.prefix) == before, "the failing step changed the prefix");
}

/// Where optimizer state lives: the device without autodiff.
fn inner_device(device: &Device) -> Device {
    Tensor::<1>::zeros([1], device).inner().device()
}

/// Every GPT-2 weight, flattened, for bit-exact comparison.
fn all_weights<M: Module>(model: &M) -> Vec<Vec<f32>> {
    struct All(Vec<Vec<f32>>);
    impl ModuleVisitor for All {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0.push(to_f32s(param.val().detach()));
        }
    }
    let mut all = All(Vec::new());
    model.visit(&mut all);
    all.0
}

#[test]
fn the_frozen_lm_gets_no_gradient_and_stays_bit_identical() {
    let _serial = serial();
    let device = device();
    let model = model(&device);
    let before = all_weights(&model);
    let batch = fixture_batch(&peft_params("mlp"));
    let gradients = batch_loss(&model, &peft_prefix("mlp", &device), &batch, Objective::Paper).backward();
    let mut frozen = Accumulated::default();
    frozen.add(&model, &gradients);
    assert_eq!(frozen.grads.len(), before.len());
    assert_eq!(frozen.count(), 0, "no gradient tensor exists for any frozen weight");

    let out = scratch("frozen");
    let mut config = TrainConfig::new(PrefixConfig { length: 7, reparam: Reparam::Mlp { hidden: 20 }, dropout: 0.1, init: Init::Random, placement: Default::default() });
    config.lr = 1e-2;
    config.batch_size = 2;
    config.max_steps = Some(4);
    config.pad_token_id = 514;
    let examples = synthetic_task(6);
    let mut trainer = Trainer::new(model, peft_prefix("mlp", &device), config, &out).unwrap();
    trainer.quiet = true;
    let summary = trainer.train(&examples, &[], None).unwrap();
    assert_eq!(summary.steps, 4);
    assert_eq!(summary.trainable_params, 7 * 24 + 24 * 20 + 20 + 20 * 144 + 144);
    assert_eq!(all_weights(&trainer.model), before, "the LM is bit-identical after training");
}

/// A small task: after ` {source} <eos>`, always answer with the same four tokens.
fn synthetic_task(n: usize) -> Vec<Example> {
    (0..n)
        .map(|i| {
            let source = [10 + i as u32 * 7 % 90, 200 + i as u32 * 13 % 300, 5 + i as u32];
            let answer = [42u32, 43, 44, 45, 514];
            let input_ids: Vec<u32> = source.iter().copied().chain([514]).chain(answer).collect();
            let labels = input_ids.iter().enumerate().map(|(t, &id)| if t < 4 { -100 } else { id as i64 }).collect();
            Example { input_ids, labels }
        })
        .collect()
}

#[test]
fn a_prefix_learns_a_small_task() {
    let _serial = serial();
    let device = device();
    let model = model(&device);
    // gpt2-a's tied embeddings are small next to its 1000-token vocabulary: its logits span
    // only a few nats, which caps how low any loss can go (≈2.7 here). Scaled up, the task is
    // learnable to near zero, and what is tested is whether the prefix learns it.
    let mut model = model;
    model.wte = model.wte.map(|w| (w * 4.0).detach());
    let mut config = TrainConfig::new(PrefixConfig { length: 8, reparam: Reparam::Mlp { hidden: 64 }, dropout: 0.0, init: Init::Random, placement: Default::default() });
    config.lr = 1e-2;
    config.batch_size = 4;
    config.max_steps = Some(150);
    config.schedule = Schedule::Constant;
    config.objective = Objective::Mean;
    config.pad_token_id = 514;
    let layout = Layout::gpt2(&model.config);
    let prefix = config.prefix.init(layout, &device).unwrap();
    let out = scratch("learn");
    let mut trainer = Trainer::new(model, prefix, config, &out).unwrap();
    trainer.quiet = true;
    let examples = synthetic_task(8);
    let start = trainer.evaluate(&examples).unwrap();
    let summary = trainer.train(&examples, &[], None).unwrap();
    let end = trainer.evaluate(&examples).unwrap();
    println!("loss {start:.3} → {end:.3} in {} steps ({:.0} tok/s)", summary.steps, summary.tokens_per_second);
    assert!(end < 0.2 * start, "loss fell only from {start} to {end}");
    assert!(out.join("best/prefix.safetensors").is_file());
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 150, "one record per step");
    assert!(std::fs::read(out.join("loss.png")).unwrap().starts_with(b"\x89PNG"));
    let saved: TrainConfig = serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(saved.max_steps, Some(150));
}

fn resume_config() -> TrainConfig {
    let mut config = TrainConfig::new(PrefixConfig { length: 3, reparam: Reparam::Mlp { hidden: 16 }, dropout: 0.2, init: Init::Random, placement: Default::default() });
    config.lr = 1e-2;
    config.batch_size = 3;
    config.grad_accum = 2;
    config.epochs = 3;
    config.warmup_steps = 2;
    config.max_grad_norm = Some(1.0);
    config.lm_dropout = Some(0.1);
    config.checkpoint_every = Some(1);
    config.pad_token_id = 514;
    config
}

fn prefix_bits(prefix: &Prefix) -> Vec<Vec<u32>> {
    struct Bits(Vec<Vec<u32>>);
    impl ModuleVisitor for Bits {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0.push(to_f32s(param.val().detach()).iter().map(|x| x.to_bits()).collect());
        }
    }
    let mut bits = Bits(Vec::new());
    prefix.visit(&mut bits);
    bits.0
}

#[test]
fn a_resumed_run_ends_bit_identical_to_an_uninterrupted_one() {
    let _serial = serial();
    let device = device();
    let examples = synthetic_task(8);
    let dev = synthetic_task(3);
    let start = resume_config().prefix.init(Layout::new(3, 4, 6), &device).unwrap();
    let start_dir = scratch("resume-start");
    prefix_tune_prefix::save_state(&start, &resume_config().prefix, None, "gpt2", &start_dir).unwrap();
    let fresh = || prefix_tune_prefix::load_prefix(&start_dir, Some(start.layout), &device).unwrap().prefix.set_require_grad(true);

    let whole = scratch("resume-whole");
    let mut trainer = Trainer::new(model(&device), fresh(), resume_config(), &whole).unwrap();
    trainer.quiet = true;
    let full = trainer.train(&examples, &dev, None).unwrap();
    let uninterrupted = prefix_bits(&trainer.prefix);

    let split = scratch("resume-split");
    let mut first = Trainer::new(model(&device), fresh(), resume_config(), &split).unwrap();
    first.quiet = true;
    first.train(&examples, &dev, Some(3)).unwrap();
    drop(first);
    let mut second = Trainer::resume(model(&device), &split).unwrap();
    second.quiet = true;
    let resumed = second.train(&examples, &dev, None).unwrap();
    assert_eq!(resumed.steps, full.steps);
    assert!(prefix_bits(&second.prefix) == uninterrupted, "not bit-identical after resume");
}

/// A run that --max-steps ends inside an epoch, or past its last --eval-every, still weighs the
/// prefix it ends with on dev: its last step is evaluated, and best/ is chosen among them.
#[test]
fn the_last_step_is_evaluated_on_dev() {
    let _serial = serial();
    let device = device();
    // 12 examples in micro-batches of 3, two to a step: an epoch is 2 steps; the run stops at 3.
    for (eval_every, evaluated) in [(None, vec![2, 3]), (Some(2), vec![2, 3]), (Some(1), vec![1, 2, 3])] {
        let mut config = resume_config();
        (config.max_steps, config.eval_every, config.checkpoint_every) = (Some(3), eval_every, None);
        let out = scratch("last-step-dev");
        let mut trainer = Trainer::new(model(&device), peft_prefix("flat", &device), config, &out).unwrap();
        trainer.quiet = true;
        let summary = trainer.train(&synthetic_task(12), &synthetic_task(4), None).unwrap();
        let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
        let steps: Vec<u64> = metrics.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()).filter(|r| r.get("dev_loss").is_some()).map(|r| r["step"].as_u64().unwrap()).collect();
        assert_eq!(steps, evaluated, "eval_every {eval_every:?}");
        assert!(summary.best_dev_loss.is_some());
    }
}

/// Options a run would fail on later, or train nonsense with, are refused when the trainer is
/// made, naming the option, and nothing is written.
#[test]
fn bad_options_are_refused_before_a_run_starts() {
    let device = device();
    let cases: [(&str, fn(&mut TrainConfig)); 6] = [
        ("batch_size", |c| c.batch_size = 0),
        ("grad_accum", |c| c.grad_accum = 0),
        ("lr", |c| c.lr = 0.0),
        ("lr", |c| c.lr = f64::NAN),
        ("weight_decay", |c| c.optimizer = OptimizerConfig::adamw(-0.01)),
        ("epochs", |c| (c.epochs, c.max_steps) = (0, None)),
    ];
    for (field, spoil) in cases {
        let mut config = resume_config();
        spoil(&mut config);
        let out = scratch(&format!("refused-{field}"));
        let error = Trainer::new(model(&device), peft_prefix("flat", &device), config, &out).err().unwrap().to_string();
        assert!(error.starts_with(&format!("{field}: ")) && error.lines().count() == 1, "{error}");
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0, "{field}: wrote into the run directory");
    }
    // A weight decay of 0 and SGD's are options like any other.
    let mut config = resume_config();
    config.optimizer = OptimizerConfig::Sgd { weight_decay: 0.0 };
    assert!(Trainer::new(model(&device), peft_prefix("flat", &device), config, &scratch("sgd-no-decay")).is_ok());
}

#[test]
fn a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint() {
    let _serial = serial();
    let device = device();
    let out = scratch("nan");
    let mut trainer = Trainer::new(model(&device), peft_prefix("flat", &device), resume_config(), &out).unwrap();
    trainer.quiet = true;
    trainer.train(&synthetic_task(6), &[], Some(1)).unwrap();
    let good = std::fs::read(out.join("checkpoint/prefix.safetensors")).unwrap();
    let poisoned = Tensor::<2>::full([5, 144], f32::NAN, &device).require_grad();
    trainer.prefix.embedding = Param::from_tensor(poisoned);
    let error = trainer.train(&synthetic_task(6), &[], None).err().unwrap().to_string();
    assert!(error.contains("NaN") && error.contains("checkpoint"), "{error}");
    assert_eq!(std::fs::read(out.join("checkpoint/prefix.safetensors")).unwrap(), good);
    let _ = Prefix::from_activations(Tensor::<2>::zeros([1, 144], &device), Layout::new(3, 4, 6));
}

#[test]
fn the_finetuning_baseline_trains_and_saves_the_whole_model() {
    let _serial = serial();
    let device = device();
    let model = load_gpt2(&fixtures().join("gpt2-a"), &device).unwrap();
    let before = all_weights(&model);
    let mut config = TrainConfig::new(PrefixConfig { length: 1, reparam: Reparam::Flat, dropout: 0.0, init: Init::Zero, placement: Default::default() });
    config.method = prefix_tune_train::Method::Finetune;
    config.lr = 1e-3;
    config.batch_size = 3;
    config.max_steps = Some(2);
    config.pad_token_id = 514;
    let prefix = config.prefix.init(Layout::gpt2(&model.config), &device).unwrap();
    let out = scratch("finetune");
    let mut trainer = Trainer::new(model, prefix, config, &out).unwrap();
    trainer.quiet = true;
    let summary = trainer.train(&synthetic_task(6), &[], None).unwrap();
    assert_eq!(summary.trainable_params, summary.total_params, "nothing is frozen");
    let after = all_weights(&trainer.model);
    let changed = before.iter().zip(&after).filter(|(a, b)| a != b).count();
    assert_eq!(changed, before.len(), "every weight moved");
    // best/ is a model directory that loads and holds the trained weights.
    let saved = load_gpt2(&out.join("best"), &device).unwrap();
    assert!(all_weights(&saved) == after);
}

/// A gradient can be NaN while the loss is finite: an infinite embedding entry saturates the
/// MLP's tanh (loss fine) and its backward multiplies ∞ by 0. The run must stop on it before
/// the optimizer step, leave the checkpoint as it was, and resume from it.
#[test]
fn a_nan_gradient_with_a_finite_loss_stops_the_run_and_the_checkpoint_resumes() {
    let _serial = serial();
    let device = device();
    let out = scratch("nan-grad");
    let mut config = resume_config();
    config.prefix.dropout = 0.0;
    config.lm_dropout = Some(0.0);
    config.grad_accum = 1;
    let prefix = config.prefix.init(Layout::new(3, 4, 6), &device).unwrap();
    let mut trainer = Trainer::new(model(&device), prefix, config, &out).unwrap();
    trainer.quiet = true;
    trainer.train(&synthetic_task(6), &[], Some(1)).unwrap();
    let good = std::fs::read(out.join("checkpoint/prefix.safetensors")).unwrap();
    let state = std::fs::read(out.join("checkpoint/trainer_state.json")).unwrap();

    let mut values = to_f32s(trainer.prefix.embedding.val().detach());
    values[0] = f32::INFINITY;
    let [rows, cols] = trainer.prefix.embedding.val().dims();
    trainer.prefix.embedding = Param::from_tensor(floats(values, [rows, cols], &device).require_grad());
    let batch = Batch::new(&synthetic_task(3).iter().collect::<Vec<_>>(), 514);
    let loss = to_f32s(trainer.batch_loss(&batch, true).unwrap().0.detach())[0];
    assert!(loss.is_finite(), "the poisoned prefix should still give a finite loss, got {loss}");

    let error = trainer.train(&synthetic_task(6), &[], None).err().unwrap().to_string();
    assert!(error.contains("gradient") && error.contains("not finite") && error.contains("checkpoint"), "{error}");
    assert_eq!(error.lines().count(), 1);
    assert_eq!(std::fs::read(out.join("checkpoint/prefix.safetensors")).unwrap(), good);
    assert_eq!(std::fs::read(out.join("checkpoint/trainer_state.json")).unwrap(), state);
    drop(trainer);
    let mut resumed = Trainer::resume(model(&device), &out).unwrap();
    resumed.quiet = true;
    let summary = resumed.train(&synthetic_task(6), &[], None).unwrap();
    assert!(summary.last_loss.unwrap().is_finite());
}

/// A checkpoint is replaced as a whole: whatever a kill leaves behind, recovery finds one
/// complete checkpoint, the newest that was finished.
#[test]
fn a_checkpoint_directory_is_swapped_whole_and_recovered_after_a_kill() {
    use prefix_tune_train::checkpoint::{publish_dir, recover_dir};
    let root = scratch("publish");
    let dir = root.join("checkpoint");
    let write = |text: &'static str| move |d: &std::path::Path| -> Result<(), prefix_tune_train::TrainError> {
        std::fs::write(d.join("a"), text).unwrap();
        std::fs::write(d.join("b"), text).unwrap();
        Ok(())
    };
    publish_dir(&dir, write("one")).unwrap();
    publish_dir(&dir, write("two")).unwrap();
    assert_eq!(std::fs::read_to_string(dir.join("b")).unwrap(), "two");
    assert!(!root.join("checkpoint.old").exists() && !root.join("checkpoint.partial").exists());

    // Killed while writing the staging copy: the published one is untouched.
    std::fs::create_dir_all(root.join("checkpoint.partial")).unwrap();
    std::fs::write(root.join("checkpoint.partial/a"), "thr").unwrap();
    recover_dir(&dir).unwrap();
    assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "two");
    assert!(!root.join("checkpoint.partial").exists());

    // Killed between moving the old one aside and moving the new one in.
    std::fs::rename(&dir, root.join("checkpoint.old")).unwrap();
    recover_dir(&dir).unwrap();
    assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "two");

    // A failed write leaves the published checkpoint as it was.
    let failed = publish_dir(&dir, |_| Err(prefix_tune_train::TrainError::Config("disk full".into())));
    assert!(failed.is_err());
    assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "two");
}

#[test]
fn examples_are_checked_up_front_and_sources_cut_to_fit() {
    use prefix_tune_train::{check_examples, Limits};
    let example = |source: usize, target: usize| Example {
        input_ids: (0..source + target).map(|i| i as u32).collect(),
        labels: (0..source + target).map(|i| if i < source { -100 } else { i as i64 }).collect(),
    };
    let origins: Vec<String> = (1..=3).map(|line| format!("data.jsonl line {line}")).collect();
    let limits = |truncate| Limits { vocab_size: 1000, max_length: 10, why: "n_positions 20 − prefix length 10".into(), truncate };

    let mut examples = vec![example(4, 3), example(9, 4), example(12, 2)];
    let error = check_examples(&mut examples.clone(), &origins, &limits(false)).unwrap_err().to_string();
    assert!(error.contains("data.jsonl line 2") && error.contains("13 tokens") && error.contains("(and 1 more examples)") && error.contains("--max-length"), "{error}");

    let cut = check_examples(&mut examples, &origins, &limits(true)).unwrap();
    assert_eq!(cut, 2);
    // The target and the separator (the source's last token) survive; the source's start too.
    assert_eq!(examples[1].input_ids, vec![0, 1, 2, 3, 4, 8, 9, 10, 11, 12]);
    assert_eq!(examples[1].labels[5..], [-100, 9, 10, 11, 12]);
    assert_eq!(examples[2].input_ids.len(), 10);
    assert_eq!(examples[0], example(4, 3));

    let mut target_too_long = vec![example(3, 12)];
    let error = check_examples(&mut target_too_long, &origins, &limits(true)).unwrap_err().to_string();
    assert!(error.contains("line 1") && error.contains("target alone needs 13"), "{error}");

    let mut out_of_vocabulary = vec![example(2, 2), Example { input_ids: vec![1, 99_999_999], labels: vec![-100, 5] }];
    let error = check_examples(&mut out_of_vocabulary, &origins, &limits(false)).unwrap_err().to_string();
    assert!(error.contains("data.jsonl line 2") && error.contains("99999999") && error.contains("vocabulary of 1000"), "{error}");
}

/// The gradient checks read all parameters back at once; the answers stay per parameter: the
/// first non-finite one by its index in visiting order (a frozen parameter's `None` keeps its
/// slot), and the global L2 norm as `torch.nn.utils.clip_grad_norm_` computes it.
#[test]
fn gradient_checks_name_the_parameter_and_give_the_global_norm() {
    let device = Device::flex();
    let grads = |values: Vec<Option<Vec<f32>>>| Accumulated {
        grads: values.into_iter().map(|v| v.map(|v| floats(v.clone(), [v.len()], &device))).collect(),
    };
    let finite = grads(vec![Some(vec![3.0, -4.0]), None, Some(vec![12.0])]);
    assert_eq!(finite.first_non_finite(), None);
    assert!((finite.norm() - 13.0).abs() < 1e-9, "{}", finite.norm());
    assert_eq!(grads(vec![Some(vec![1.0]), None, Some(vec![2.0, f32::NAN]), Some(vec![f32::INFINITY])]).first_non_finite(), Some(2));
    assert_eq!(grads(vec![None, Some(vec![f32::NEG_INFINITY])]).first_non_finite(), Some(1));
    assert_eq!(grads(vec![None]).first_non_finite(), None);
}

/// The GPU's sum of a whole gradient (rows of 4,096 first, zero-padded) is the sum: lengths
/// below one row, of whole rows, and of rows plus a remainder, in values f32 adds exactly.
#[test]
fn a_gradient_summed_in_rows_is_its_sum() {
    let device = device();
    for n in [1000, 2 * 4096, 3 * 4096 + 123] {
        let values: Vec<f32> = (0..n).map(|i| (i % 7) as f32 * 0.5).collect();
        let exact: f64 = values.iter().map(|&v| v as f64).sum();
        let x = prefix_tune_model::tensors::floats(values, [n], &device);
        let summed = prefix_tune_model::tensors::to_f32s(prefix_tune_train::optim::row_sums_then_total(x));
        assert_eq!(summed, vec![exact as f32], "n = {n}");
    }
}
