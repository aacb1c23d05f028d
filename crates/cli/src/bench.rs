//! `prefix-tune bench generate|train|matmul|serve`: speed on a GPT-2-small-shaped random model, as JSON.
//! Benchmarks, not tests: numbers depend on the machine.

use std::time::Instant;

use crate::error::{CliError, Result};
use clap::{Args, Subcommand};
use prefix_tune_model::generate::{GenerateConfig, Sampling};
use prefix_tune_model::gpt2::generate_gpt2;
use prefix_tune_model::bf16::Dtype;
use prefix_tune_model::backend::{self, Backend, Resolved};
use prefix_tune_model::{random_gpt2, Gpt2, Gpt2Config};
use prefix_tune_prefix::{Init, Layout, PrefixConfig, Reparam};
use prefix_tune_model::tensors::to_f32s;
use prefix_tune_train::optim::Accumulated;
use prefix_tune_train::{peak_rss_mib, Example, Objective, PrefixModel, Schedule, TrainConfig, Trainer};
use rand::{rngs::StdRng, Rng, SeedableRng};

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: BenchWhat,
    #[arg(long, global = true, value_enum)]
    backend: Option<Backend>,
    /// Model shape: gpt2 (small, 124M) or tiny (for a quick check).
    #[arg(long, global = true, default_value = "gpt2")]
    shape: String,
    /// bf16 or f16: the model's matrix products in half precision with f32 sums (CPU backend:
    /// bf16 on AMX, AVX512-BF16, AVX2 or aarch64; a GPU: f16, or bf16 where the adapter has it).
    #[arg(long, global = true, value_enum, default_value_t = Dtype::F32)]
    dtype: Dtype,
    /// CPU threads (the CPU backend's pool and our kernels); default: one per core.
    #[arg(long, global = true, value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,
}

#[derive(Subcommand, Debug)]
enum BenchWhat {
    /// `serve` under load: one at a time, N clients on one prefix, N clients on many prefixes.
    Serve(crate::bench_serve::ServeBenchArgs),
    /// Greedy, beam-5 and sampled decoding: 16-token prompt, 32 new tokens.
    Generate {
        #[arg(long, default_value_t = 16)]
        prompt_len: usize,
        #[arg(long, default_value_t = 32)]
        new_tokens: usize,
        /// Also count the GPU kernels each decoding launches per new token
        /// (`dispatches_per_token`; the prompt's pass included). Logging each launch slows it:
        /// time without it.
        #[arg(long)]
        dispatches: bool,
    },
    /// Prefix training steps: batch 5 × 64 tokens, P = 10, MLP 512.
    Train(TrainBench),
    /// The matrix products of a training step, one by one, in each form a step could run them.
    Matmul(crate::bench_matmul::MatmulBench),
}

#[derive(clap::Args, Debug)]
struct TrainBench {
    #[arg(long, default_value_t = 5)]
    batch_size: usize,
    #[arg(long, default_value_t = 64)]
    seq_len: usize,
    #[arg(long, default_value_t = 3)]
    steps: usize,
    /// The share of each sequence that carries the loss (its end): E2E's targets are about
    /// half of the paper-format text; 1.0 trains on every token.
    #[arg(long, default_value_t = 1.0)]
    target_fraction: f64,
    /// Also time the forward pass (to the loss on the host) and the backward pass (to the
    /// prefix gradients on the host) of `steps` extra batches, as median milliseconds.
    #[arg(long)]
    breakdown: bool,
    /// Also count the GPU kernels a training step launches (`dispatches_per_step`). Logging
    /// each launch slows the steps: time without it.
    #[arg(long)]
    dispatches: bool,
}

fn shape(name: &str) -> Result<Gpt2Config> {
    let mut config: Gpt2Config = serde_json::from_str("{}").expect("defaults");
    match name {
        "gpt2" => {}
        "tiny" => {
            config.n_layer = 2;
            config.n_head = 2;
            config.n_embd = 64;
        }
        other => return Err(CliError::usage(format!("--shape: `{other}` is not gpt2 or tiny"))),
    }
    Ok(config)
}

/// The random model, its products in `dtype`.
fn random_model(config: &Gpt2Config, dtype: Dtype, device: &prefix_tune_model::burn::tensor::Device) -> Result<Gpt2> {
    let mut model = random_gpt2(config, 0, device);
    if dtype != Dtype::F32 {
        model.use_half(dtype)?;
    }
    Ok(model)
}

pub fn run(args: BenchArgs) -> Result<()> {
    if let Some(threads) = args.threads {
        prefix_tune_model::backend::set_cpu_threads(threads.into())?;
    }
    let dispatch_log = match &args.what {
        BenchWhat::Train(TrainBench { dispatches: true, .. }) | BenchWhat::Generate { dispatches: true, .. } => {
            let log = std::env::temp_dir().join(format!("prefix-tune-dispatches-{}.log", std::process::id()));
            backend::log_gpu_dispatches(&log)?;
            Some(log)
        }
        _ => None,
    };
    let bench = Bench {
        device: backend::resolve(args.backend)?,
        backend: args.backend,
        dtype: args.dtype,
        config: shape(&args.shape)?,
        shape: &args.shape,
    };
    match args.what {
        BenchWhat::Serve(serve) => crate::bench_serve::run(serve, bench.backend, bench.dtype),
        BenchWhat::Generate { prompt_len, new_tokens, .. } => generate(&bench, prompt_len, new_tokens, dispatch_log.as_deref()),
        BenchWhat::Matmul(matmul) => crate::bench_matmul::run(&bench.device.device, bench.device.to_string(), &bench.config, bench.dtype, &matmul),
        BenchWhat::Train(train_args) => crate::out_of_memory::guard(Some(train_args.batch_size), "lower --batch-size", || train(&bench, &train_args, dispatch_log.as_deref())),
    }
}

/// What every benchmark runs on: the backend, the dtype and the model shape.
struct Bench<'a> {
    /// Where it runs (`--backend`, resolved once), as reported.
    device: Resolved,
    /// `--backend` as given, for the server `bench serve` starts.
    backend: Option<Backend>,
    dtype: Dtype,
    config: Gpt2Config,
    shape: &'a str,
}

/// Greedy, beam-5 and sampled (temperature 0.8, top-k 50, top-p 0.9) decoding of one random
/// prompt, each timed after an untimed run.
fn generate(bench: &Bench, prompt_len: usize, new_tokens: usize, dispatch_log: Option<&std::path::Path>) -> Result<()> {
    let mut rng = StdRng::seed_from_u64(0);
    let device = bench.device.device.clone();
    let model = random_model(&bench.config, bench.dtype, &device)?;
    let prompt: Vec<u32> = (0..prompt_len).map(|_| rng.random_range(0..bench.config.vocab_size as u32)).collect();
    let mut results = serde_json::Map::new();
    // "sample": temperature 0.8, top-k 50, top-p 0.9 (`scripts/bench_peft.py` draws the same).
    let sampling = Sampling { temperature: 0.8, top_k: Some(50), top_p: Some(0.9), seed: 0 };
    for (name, beams, draw) in [("greedy", 1, None), ("beam5", 5, None), ("sample", 1, Some(sampling))] {
        let mut gen = GenerateConfig::new(model.config.eos());
        gen.max_new_tokens = new_tokens;
        gen.min_new_tokens = new_tokens;
        gen.num_beams = beams;
        gen.sampling = draw;
        // One untimed run compiles kernels and fills caches.
        generate_gpt2(&model, std::slice::from_ref(&prompt), None, &gen)?;
        let dispatches_before = dispatch_log.map(logged_dispatches);
        let start = Instant::now();
        let out = generate_gpt2(&model, std::slice::from_ref(&prompt), None, &gen)?;
        let seconds = start.elapsed().as_secs_f64();
        let tokens = out[0].ids.len();
        let mut result = serde_json::json!({ "seconds": seconds, "new_tokens": tokens, "tokens_per_second": tokens as f64 / seconds });
        if let Some((after, before)) = dispatch_log.map(logged_dispatches).zip(dispatches_before) {
            result["dispatches_per_token"] = ((after - before) as f64 / tokens as f64).into();
        }
        results.insert(name.into(), result);
    }
    let report = serde_json::json!({
        "bench": "generate", "backend": bench.device.to_string(), "dtype": bench.dtype, "threads": prefix_tune_model::backend::cpu_threads(), "bf16_path": bf16_path(bench), "model": format!("{}-shaped random", bench.shape),
        "prompt_tokens": prompt_len, "results": results, "peak_rss_mib": peak_rss_mib(), "gpu_memory": gpu_memory(&device), "matmul": matmul_report(),
    });
    if let Some(log) = dispatch_log {
        let _ = std::fs::remove_file(log);
    }
    println!("{report}");
    Ok(())
}

/// What the GPU's allocator holds once the timed work is done (`null` on the CPU backend), in
/// MiB: `reserved`, what the process took from the device (comparable to PyTorch's
/// `max_memory_reserved`, since the pools only grow while a benchmark runs); `in_use`, what live
/// tensors occupy at the end (the weights, the prefix and its optimizer state).
fn gpu_memory(device: &prefix_tune_model::burn::tensor::Device) -> serde_json::Value {
    let _ = device.sync();
    let Some(usage) = device.memory_pool_usage() else { return serde_json::Value::Null };
    let mib = |bytes: u64| bytes as f64 / (1u64 << 20) as f64;
    serde_json::json!({ "reserved_mib": mib(usage.bytes_reserved), "in_use_mib": mib(usage.bytes_in_use) })
}

/// The kernel a GPU's f32 frozen products took (`PREFIX_TUNE_MATMUL`; `burn` is Burn's matmul) and,
/// where it was tuned, the kernel chosen for each shape.
fn matmul_report() -> serde_json::Value {
    let kernel = prefix_tune_model::matmul::asked().map_or("burn".to_string(), |kernel| kernel.name());
    let tuned: serde_json::Map<String, serde_json::Value> = prefix_tune_model::matmul::tuned().into_iter().map(|(shape, chosen)| (shape, chosen.into())).collect();
    serde_json::json!({ "kernel": kernel, "tuned": tuned })
}

/// Prefix training steps on random tokens, the first untimed; steady-state tokens/s.
fn train(bench: &Bench, args: &TrainBench, dispatch_log: Option<&std::path::Path>) -> Result<()> {
    let TrainBench { batch_size, seq_len, steps, target_fraction, breakdown, .. } = *args;
    let device = bench.device.device.clone().autodiff();
    let model = random_model(&bench.config, bench.dtype, &device)?;
    let prefix_config = PrefixConfig { length: 10, reparam: Reparam::Mlp { hidden: 512 }, dropout: 0.0, init: Init::Random, placement: Default::default() };
    let prefix = prefix_config.init(Layout::gpt2(&bench.config), &device)?;
    let examples = random_examples(bench.config.vocab_size, batch_size * (steps + 1), seq_len, target_fraction);
    let mut config = TrainConfig::new(prefix_config);
    config.batch_size = batch_size;
    config.schedule = Schedule::Constant;
    config.objective = Objective::Paper;
    config.lm_dropout = Some(0.0);
    let out = std::env::temp_dir().join(format!("prefix-tune-bench-{}", std::process::id()));
    // Step 1 warms up (kernel compilation, allocation); steps 2.. are timed.
    config.max_steps = Some(1);
    let mut trainer = Trainer::new(model, prefix, config.clone(), &out)?;
    trainer.quiet = true;
    trainer.train(&examples[..batch_size], &[], None)?;
    let dispatches_before = dispatch_log.map(logged_dispatches);
    let mut timed = Trainer::new(trainer.model, trainer.prefix, TrainConfig { max_steps: Some(steps), ..config }, &out)?;
    timed.quiet = true;
    let start = Instant::now();
    let summary = timed.train(&examples[batch_size..], &[], None)?;
    let seconds_with_save = start.elapsed().as_secs_f64();
    let dispatches = dispatch_log.map(logged_dispatches).zip(dispatches_before).map(|(after, before)| (after - before) as f64 / summary.steps as f64);
    let tokens = batch_size * seq_len * summary.steps;
    // Steady state: the steps themselves, as the last step's record counts them, not
    // the end of the run (the prefix, its optimizer state and the chart written once).
    let steps_tokens_per_second = last_record_tokens_per_second(&out).unwrap_or(tokens as f64 / seconds_with_save);
    let seconds = tokens as f64 / steps_tokens_per_second;
    let phases = if breakdown { Some(phase_times(&timed, &examples[batch_size..], steps)?) } else { None };
    let _ = std::fs::remove_dir_all(&out);
    let mut report = serde_json::json!({
        "bench": "train", "backend": bench.device.to_string(), "dtype": bench.dtype, "threads": prefix_tune_model::backend::cpu_threads(), "bf16_path": bf16_path(bench), "model": format!("{}-shaped random", bench.shape),
        "batch": batch_size, "seq_len": seq_len, "target_fraction": target_fraction, "prefix_length": 10, "mlp_hidden": 512, "steps": summary.steps,
        "seconds": seconds, "tokens_per_second": steps_tokens_per_second, "seconds_with_final_save": seconds_with_save,
        "seconds_per_step": seconds / summary.steps as f64,
        "trainable_params": summary.trainable_params, "peak_rss_mib": peak_rss_mib(), "gpu_memory": gpu_memory(&bench.device.device), "matmul": matmul_report(),
    });
    if let (Some(per_step), Some(log)) = (dispatches, dispatch_log) {
        report["dispatches_per_step"] = per_step.into();
        let _ = std::fs::remove_file(log);
    }
    if let Some((forward_ms, backward_ms)) = phases {
        report["forward_ms"] = forward_ms.into();
        report["backward_ms"] = backward_ms.into();
    }
    println!("{report}");
    Ok(())
}

/// The launches logged so far, once the logger (a thread of CubeCL's) has caught up.
fn logged_dispatches(log: &std::path::Path) -> usize {
    std::thread::sleep(std::time::Duration::from_millis(500));
    backend::gpu_dispatches_logged(log)
}

/// `count` sequences of random tokens, the loss on the last `target_fraction` of each (at
/// least one token).
fn random_examples(vocab_size: usize, count: usize, seq_len: usize, target_fraction: f64) -> Vec<Example> {
    let mut rng = StdRng::seed_from_u64(0);
    let source_len = seq_len - ((seq_len as f64 * target_fraction.clamp(0.0, 1.0)).round() as usize).clamp(1, seq_len);
    (0..count)
        .map(|_| {
            let input_ids: Vec<u32> = (0..seq_len).map(|_| rng.random_range(0..vocab_size as u32)).collect();
            let labels = input_ids.iter().enumerate().map(|(t, &i)| if t < source_len { -100 } else { i as i64 }).collect();
            Example { input_ids, labels }
        })
        .collect()
}

/// Tokens/s over a run's steps as its last `metrics.jsonl` record gives them.
fn last_record_tokens_per_second(run: &std::path::Path) -> Option<f64> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).ok()?;
    let last: serde_json::Value = serde_json::from_str(text.lines().last()?).ok()?;
    last["tokens_per_second"].as_f64()
}

/// Median milliseconds of the forward pass (batch built, loss read back) and of the backward
/// pass (prefix gradients read back) over `steps` batches. Reading back waits for the device,
/// so on a GPU each phase is timed to its end, not to its last launch.
fn phase_times(trainer: &Trainer, examples: &[Example], steps: usize) -> Result<(f64, f64)> {
    let (mut forward, mut backward) = (Vec::new(), Vec::new());
    for chunk in examples.chunks(trainer.config.batch_size).take(steps) {
        let refs: Vec<&Example> = chunk.iter().collect();
        let start = Instant::now();
        let batch = trainer.model.batch(&refs, &trainer.config);
        let (loss, _) = trainer.batch_loss(&batch, true)?;
        to_f32s(loss.clone().detach());
        forward.push(start.elapsed().as_secs_f64() * 1e3);
        let start = Instant::now();
        let gradients = loss.backward();
        let mut accumulated = Accumulated::default();
        accumulated.add(&trainer.prefix, &gradients);
        for grad in accumulated.grads.into_iter().flatten() {
            to_f32s(grad);
        }
        backward.push(start.elapsed().as_secs_f64() * 1e3);
    }
    Ok((median(&mut forward), median(&mut backward)))
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The bf16 path the products took (`amx`, `avx512bf16`, `avx2`, …), for bf16 runs.
fn bf16_path(bench: &Bench<'_>) -> Option<&'static str> {
    let on_cpu = prefix_tune_model::backend::is_cpu(&bench.device.device);
    (bench.dtype == Dtype::Bf16 && on_cpu).then(prefix_tune_model::bf16::path_name).flatten()
}
