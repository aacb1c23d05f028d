//! `prefix-tune bench serve`: a `serve` process on loopback, clients over HTTP. Throughput,
//! latency and time to first token for: one request at a time, N clients on one prefix, and N
//! clients each on a random one of many prefixes (the mixed-prefix batch); then every prefix
//! used once, and the server's resident memory beside the model's and the prefixes' own bytes.
//! GPT-2 or BART (BART's prefixes: three sets of P each).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use crate::error::{CliError, Result};
use clap::Args;
use clap::ValueEnum;
use prefix_tune_model::bf16::Dtype;
use prefix_tune_model::backend::{self, Backend};
use prefix_tune_model::{load_bart, load_gpt2, model_kind, ModelKind};
use prefix_tune_prefix::{save_bart_export, BartLayout, BartPrefixSets, save_export, Init, Layout, PrefixConfig, Reparam};
use rand::{rngs::StdRng, Rng, SeedableRng};

#[derive(Args, Debug, Clone)]
pub struct ServeBenchArgs {
    /// A GPT-2 or BART model directory or hub name.
    #[arg(long)]
    model: String,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Requests per scenario.
    #[arg(long, default_value_t = 64)]
    requests: usize,
    /// Random prefixes for the mixed scenario (P from 5 to 15).
    #[arg(long, default_value_t = 100)]
    prefixes: usize,
    #[arg(long, default_value_t = 32)]
    max_tokens: usize,
    #[arg(long, default_value_t = 16)]
    prompt_tokens: usize,
}

/// The server child, killed when dropped.
struct Server(Child, String);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What the benchmark's model holds: its parameters' bytes, and its prefixes' (all of them).
struct Footprint {
    model_bytes: u64,
    prefix_bytes: u64,
}

/// Writes `count` random flat prefixes (P = 5..15; BART: three sets of that P) for `model`
/// under `dir`.
fn random_prefixes(model: &str, dir: &Path, count: usize, backend: Option<Backend>) -> Result<Footprint> {
    let device = backend::device_for(backend)?;
    let model_dir = prefix_tune_model::hub::resolve_model(model)?;
    let config = |length| PrefixConfig { length, reparam: Reparam::Flat, dropout: 0.0, init: Init::Random, placement: Default::default() };
    let size = |weights: &[prefix_tune_model::burn::tensor::Tensor<2>]| weights.iter().map(|w| w.shape().num_elements() as u64 * 4).sum::<u64>();
    let mut prefix_bytes = 0;
    let model_bytes = match model_kind(&model_dir)? {
        ModelKind::Gpt2 => {
            let gpt2 = load_gpt2(&model_dir, &device)?;
            let layout = Layout::gpt2(&gpt2.config);
            for i in 0..count {
                let prefix = config(5 + i % 11).init(layout, &device)?;
                prefix_bytes += size(&[prefix.activations()]);
                save_export(&prefix, Some(model), "gpt2", &dir.join(format!("p{i:03}")))?;
            }
            prefix_tune_model::burn::module::Module::num_params(&gpt2) as u64 * 4
        }
        ModelKind::Bart => {
            let bart = load_bart(&model_dir, &device)?;
            let layout = BartLayout::of(&bart.config);
            for i in 0..count {
                let set = config(5 + i % 11);
                let sets = BartPrefixSets::init([Some(&set), Some(&set), Some(&set)], layout, &device)?;
                let activations: Vec<_> = [&sets.encoder, &sets.decoder, &sets.cross].iter().filter_map(|p| p.as_ref().map(|p| p.activations())).collect();
                prefix_bytes += size(&activations);
                save_bart_export(&sets, Some(model), &dir.join(format!("p{i:03}")))?;
            }
            prefix_tune_model::burn::module::Module::num_params(&bart) as u64 * 4
        }
    };
    Ok(Footprint { model_bytes, prefix_bytes })
}

/// The server's resident and peak resident memory, MiB (Linux; `None` elsewhere).
fn resident_mib(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok()).map(|kb| kb / 1024.0);
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

fn start(model: &str, prefixes: &Path, backend: Option<Backend>, dtype: Dtype, max_batch: usize) -> Result<Server> {
    let exe = std::env::current_exe().map_err(|e| CliError::usage(e.to_string()))?;
    let mut command = Command::new(exe);
    command.args(["serve", "--model", model, "--prefixes", &prefixes.display().to_string(), "--bind", "127.0.0.1:0", "--max-batch", &max_batch.to_string(), "--max-queue", "4096"]);
    if let Some(backend) = backend {
        command.args(["--backend", backend.name()]);
    }
    if let Some(value) = dtype.to_possible_value() {
        command.args(["--dtype", value.get_name()]);
    }
    let mut child = command.stderr(Stdio::piped()).spawn().map_err(|e| CliError::usage(format!("cannot start serve: {e}")))?;
    let mut lines = BufReader::new(child.stderr.take().expect("piped")).lines();
    let url = loop {
        match lines.next() {
            Some(Ok(line)) if line.starts_with("listening on ") => break line["listening on ".len()..].split_whitespace().next().unwrap_or("").to_string(),
            Some(_) => continue,
            None => return Err(CliError::usage("serve exited before listening")),
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    Ok(Server(child, url))
}

/// One streamed request: (seconds to the first token, seconds in all, tokens).
fn one_request(url: &str, model: &str, prompt: &[u32], max_tokens: usize) -> Result<(f64, f64, usize)> {
    let body = serde_json::json!({ "model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": true }).to_string();
    let start = Instant::now();
    let response = ureq::post(&format!("{url}/v1/completions")).set("Content-Type", "application/json").send_string(&body).map_err(|e| CliError::usage(format!("request failed: {e}")))?;
    let (mut first, mut tokens) = (None, 0);
    for line in BufReader::new(response.into_reader()).lines() {
        let line = line.map_err(|e| CliError::usage(e.to_string()))?;
        if line.starts_with("data: {") && line.contains("\"token_ids\"") {
            first.get_or_insert_with(|| start.elapsed().as_secs_f64());
            tokens += 1;
        }
    }
    Ok((first.unwrap_or(0.0), start.elapsed().as_secs_f64(), tokens))
}

/// `requests` requests from `clients` threads; `model_of(i)` picks request i's prefix.
fn scenario(url: &str, clients: usize, requests: usize, args: &ServeBenchArgs, model_of: &(dyn Fn(usize) -> String + Sync)) -> Result<serde_json::Value> {
    let mut rng = StdRng::seed_from_u64(1);
    let prompts: Vec<Vec<u32>> = (0..requests).map(|_| (0..args.prompt_tokens).map(|_| rng.random_range(0..1000)).collect()).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let start = Instant::now();
    let results: Vec<(f64, f64, usize)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= requests {
                            return Ok::<_, CliError>(mine);
                        }
                        mine.push(one_request(url, &model_of(i), &prompts[i], args.max_tokens)?);
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("client thread")).collect::<Result<Vec<_>>>().map(|v| v.into_iter().flatten().collect())
    })?;
    let seconds = start.elapsed().as_secs_f64();
    let tokens: usize = results.iter().map(|r| r.2).sum();
    let percentile = |mut values: Vec<f64>, q: f64| {
        values.sort_by(f64::total_cmp);
        values[((values.len() - 1) as f64 * q).round() as usize]
    };
    let latencies: Vec<f64> = results.iter().map(|r| r.1).collect();
    let ttft: Vec<f64> = results.iter().map(|r| r.0).collect();
    Ok(serde_json::json!({
        "clients": clients, "requests": requests, "tokens": tokens, "seconds": seconds,
        "tokens_per_second": tokens as f64 / seconds,
        "latency_p50_s": percentile(latencies.clone(), 0.5), "latency_p99_s": percentile(latencies, 0.99),
        "ttft_p50_s": percentile(ttft.clone(), 0.5), "ttft_p99_s": percentile(ttft, 0.99),
    }))
}

pub fn run(args: ServeBenchArgs, backend: Option<Backend>, dtype: Dtype) -> Result<()> {
    let dir: PathBuf = std::env::temp_dir().join(format!("prefix-tune-bench-serve-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| CliError::io(&dir, e))?;
    let count = args.prefixes.max(1);
    let footprint = random_prefixes(&args.model, &dir, count, backend)?;
    let server = start(&args.model, &dir, backend, dtype, args.clients.max(1))?;
    let started = resident_mib(server.0.id());
    // The one prefix has the mean P (10, p005) of the mixed ones (5–15), so both do the same work.
    let typical = if count > 5 { 5 } else { 0 };
    let one = move |_: usize| format!("p{typical:03}");
    let mixed = |i: usize| format!("p{:03}", (i * 7919 + 13) % count);
    let serial = scenario(&server.1, 1, (args.requests / 4).max(4), &args, &one)?;
    let single = scenario(&server.1, args.clients, args.requests, &args, &one)?;
    let mixed = scenario(&server.1, args.clients, args.requests, &args, &mixed)?;
    // Every prefix used once (one token each): all of them resident.
    let every = |i: usize| format!("p{i:03}");
    let short = ServeBenchArgs { max_tokens: 1, ..args.clone() };
    scenario(&server.1, args.clients, count, &short, &every)?;
    let resident = resident_mib(server.0.id());
    let tps = |v: &serde_json::Value| v["tokens_per_second"].as_f64().unwrap_or(0.0);
    let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
    let report = serde_json::json!({
        "bench": "serve", "model": args.model, "backend": backend.map(Backend::name), "dtype": dtype, "prefixes": count, "max_tokens": args.max_tokens,
        "one_at_a_time": serial, "one_prefix": single, "mixed_prefixes": mixed,
        "mixed_over_single_throughput": tps(&mixed) / tps(&single).max(1e-9),
        "batching_gain_over_one_at_a_time": tps(&single) / tps(&serial).max(1e-9),
        "memory_mib": {
            "model_parameters": mib(footprint.model_bytes), "all_prefixes": mib(footprint.prefix_bytes),
            "server_rss_at_start": started.map(|m| m.0), "server_rss_every_prefix_resident": resident.map(|m| m.0), "server_peak_rss": resident.map(|m| m.1),
        },
    });
    println!("{report}");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
