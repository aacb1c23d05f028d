//! `prefix-tune export`: convert a prefix between our format and PEFT's.

use std::path::PathBuf;

use clap::Args;
use prefix_tune_model::backend;
use prefix_tune_prefix::{load_prefix, save_export, save_peft};

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// An exported prefix, PEFT adapter, training state or run directory.
    #[arg(long)]
    prefix: PathBuf,
    #[arg(long)]
    out: PathBuf,
    /// native (prefix_config.json + prefix.safetensors) or peft (adapter_config.json + adapter_model.safetensors).
    #[arg(long, default_value = "native")]
    format: String,
    /// The base model to record in the written files (default: what the input records).
    #[arg(long)]
    base_model: Option<String>,
    #[arg(long)]
    backend: Option<String>,
}

pub fn run(args: ExportArgs) -> Result<(), String> {
    let device = backend::device(args.backend.as_deref()).map_err(|e| e.to_string())?;
    let loaded = load_prefix(&args.prefix, None, &device).map_err(|e| e.to_string())?;
    let base_model = args.base_model.or(loaded.base_model);
    // Both formats keep the activations only: the MLP (if any) is dropped here.
    let prefix = loaded.prefix.materialize();
    match args.format.as_str() {
        "native" => save_export(&prefix, base_model.as_deref(), "gpt2", &args.out),
        "peft" => save_peft(&prefix, base_model.as_deref(), &args.out),
        other => return Err(format!("--format: `{other}` is not native or peft")),
    }
    .map_err(|e| e.to_string())?;
    let size: u64 = std::fs::read_dir(&args.out).map_err(|e| e.to_string())?.flatten().filter_map(|f| f.metadata().ok()).map(|m| m.len()).sum();
    eprintln!("wrote {} ({} virtual tokens, {size} bytes)", args.out.display(), prefix.length());
    Ok(())
}
